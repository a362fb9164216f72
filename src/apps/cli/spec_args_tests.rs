//! Tests of the run flags: defaults, config files, task choice, refused flags.

use super::*;
use crate::adapters::MethodConfig;
use crate::apps::cli::expand_config_file;
use clap::Parser;

fn command(args: &[&str]) -> crate::apps::cli::Command {
    crate::apps::cli::Cli::try_parse_from(crate::apps::cli::expand_aliases(args.iter().map(|s| s.to_string()).collect())).unwrap().command
}

fn train_args(args: &[&str]) -> RunArgs {
    let crate::apps::cli::Command::Train { run, .. } = command(args) else { panic!("not train") };
    run
}

#[test]
fn config_file_flags_come_before_and_lose_to_command_line_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.toml");
    std::fs::write(&file, "method = \"lora\"\nrank = 4\ntargets = [\"query\", \"key\"]\nrslora = true\nepochs = 2\n").unwrap();
    let args = ["replora", "train", "--epochs", "3", "--config", file.to_str().unwrap()].map(String::from).to_vec();
    let cli = crate::apps::cli::Cli::parse_from(expand_config_file(args).unwrap());
    let crate::apps::cli::Command::Train { run, .. } = cli.command else { panic!("not train") };
    let spec = run.to_classification().unwrap();
    assert_eq!(
        (spec.tuning.adapter().unwrap().method.method(), spec.tuning.adapter().unwrap().r, spec.tuning.adapter().unwrap().use_rslora),
        (Method::Lora, 4, true)
    );
    assert_eq!(spec.tuning.adapter().unwrap().target_modules, TargetModules::Names(vec!["query".into(), "key".into()]));
    assert_eq!(spec.train.epochs, 3, "the command line wins over the file");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "rank = [").unwrap();
    let err = expand_config_file(["replora", "train", "--config", bad.to_str().unwrap()].map(String::from).to_vec()).unwrap_err();
    assert!(err.to_string().contains("bad.toml"), "{err}");
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "rank = 4\nlearning_rate = 0.1\n").unwrap();
    let err = expand_config_file(["replora", "train", "--config", unknown.to_str().unwrap()].map(String::from).to_vec()).unwrap_err();
    assert!(err.to_string().contains("unknown.toml") && err.to_string().contains("\"learning_rate\""), "{err}");
}

/// `--resume` tells flags given from flags left alone by comparing with the spec defaults:
/// they must be what the command line gives without flags, for each task.
#[test]
fn command_line_defaults_are_the_spec_defaults() {
    assert_eq!(train_args(&["replora", "train"]).to_classification().unwrap(), ClassificationSpec::default());
    let lm = train_args(&["replora", "train-lm"]);
    assert_eq!(lm.task(), TaskKind::MultipleChoice);
    assert_eq!(lm.to_choice().unwrap(), MultipleChoiceSpec::default());
}

/// The task comes from --task, else the model, else the flags; the other task's flags are refused.
#[test]
fn the_task_is_chosen_and_foreign_flags_are_refused() {
    assert_eq!(train_args(&["replora", "train"]).task(), TaskKind::Classification);
    assert_eq!(train_args(&["replora", "train", "--model", "smollm2"]).task(), TaskKind::MultipleChoice);
    assert_eq!(train_args(&["replora", "train", "--tasks", "bigbench:strategyqa"]).task(), TaskKind::MultipleChoice);
    assert_eq!(train_args(&["replora", "train", "--task", "multiple-choice", "--model", "minilm"]).task(), TaskKind::MultipleChoice);
    let e = train_args(&["replora", "train", "--pooling", "mean", "--split", "0.8,0.1,0.1"]).to_choice().unwrap_err().to_string();
    assert!(e.contains("--split, --pooling are not for a multiple-choice run"), "{e}");
    let e = train_args(&["replora", "train", "--keep-layers", "2"]).to_classification().unwrap_err().to_string();
    assert!(e.contains("--keep-layers is not for a classification run"), "{e}");
    assert_eq!(train_args(&["replora", "train-lm", "--model", "x"]).task(), TaskKind::MultipleChoice, "the alias's --task wins");
}

/// The trainer flags are optional (each task has its defaults); their help states both.
#[test]
fn help_shows_the_trainer_defaults_of_both_tasks() {
    use clap::CommandFactory;
    let mut command = crate::apps::cli::Cli::command();
    let help = command.find_subcommand_mut("train").unwrap().render_long_help().to_string();
    let (c, l) = (TrainConfig::default(), MultipleChoiceSpec::default().train);
    for (flag, a, b) in [
        ("--epochs", c.epochs.to_string(), l.epochs.to_string()),
        ("--batch-size", c.batch_size.to_string(), l.batch_size.to_string()),
        ("--lr", c.lr.to_string(), l.lr.to_string()),
        ("--weight-decay", c.weight_decay.to_string(), l.weight_decay.to_string()),
        ("--warmup-ratio", c.warmup_ratio.to_string(), l.warmup_ratio.to_string()),
        ("--log-every", c.log_every.to_string(), l.log_every.to_string()),
    ] {
        let expected = format!("[default: {a}; multiple-choice: {b}]");
        let at = help.find(&format!("{flag} <")).unwrap_or_else(|| panic!("{flag} not in help"));
        assert!(help[at..].lines().take(3).any(|line| line.contains(&expected)), "{flag}: no {expected} in {}", &help[at..at + 200]);
    }
}

#[test]
fn split_takes_both_forms_and_full_tuning_takes_no_targets() {
    for split in [&["--split", "0.8,0.1,0.1"][..], &["--split", "0.8", "0.1", "0.1"]] {
        let args: Vec<&str> = ["replora", "train"].iter().chain(split).copied().collect();
        assert_eq!(train_args(&args).to_classification().unwrap().split, [0.8, 0.1, 0.1], "{split:?}");
    }
    let e = train_args(&["replora", "train", "--method", "full", "--targets", "x"]).to_classification().unwrap_err();
    assert!(e.to_string().contains("--targets"));
}

#[test]
fn method_adapter_defaults_to_each_architectures_bottleneck_sites() {
    let spec = train_args(&["replora", "train", "--method", "adapter", "--bottleneck", "12", "--bottleneck-activation", "gelu"])
        .to_classification()
        .unwrap();
    assert_eq!(
        spec.tuning.adapter().unwrap().method,
        MethodConfig::Houlsby(BottleneckConfig { size: Some(12), activation: Activation::Gelu })
    );
    assert_eq!(
        spec.tuning.adapter().unwrap().target_modules,
        TargetModules::Names(vec!["attention.output.dense".into(), "output.dense".into()])
    );
    let lm = train_args(&["replora", "train-lm", "--method", "adapter"]).to_choice().unwrap();
    assert_eq!(lm.tuning.adapter().unwrap().target_modules, TargetModules::Names(vec!["o_proj".into(), "down_proj".into()]));
    assert_eq!(lm.tuning.adapter().unwrap().method.settings::<Houlsby>().unwrap().size, None, "the width follows the model unless given");
    let prefix = train_args(&["replora", "train-lm", "--method", "prefix", "--prefix-length", "4", "--prefix-direct"]).to_choice().unwrap();
    assert_eq!(prefix.tuning.adapter().unwrap().target_modules, TargetModules::Names(vec!["k_proj".into()]));
    assert_eq!(
        prefix.tuning.adapter().unwrap().method,
        MethodConfig::Prefix(PrefixConfig { length: 4, reparameterize: false, ..PrefixConfig::default() })
    );
    let err = train_args(&["replora", "train", "--method", "prefix", "--targets", "query"]).to_classification().unwrap_err().to_string();
    assert!(err.contains("key projection"), "{err}");
    let lora = train_args(&["replora", "train-lm", "--method", "lora"]).to_choice().unwrap();
    assert_eq!(lora.tuning.adapter().unwrap().target_modules, TargetModules::Names(vec!["q_proj".into(), "v_proj".into()]));
}

fn eval_args(args: &[&str]) -> RunArgs {
    let crate::apps::cli::Command::Eval { args, .. } = command(args) else { panic!("not eval") };
    args
}

/// Every flag acts or is refused by name: a method's settings for other methods, the two
/// target flags together, and what `eval` would not use.
#[test]
fn flags_that_would_not_act_are_refused_by_name() {
    let e = train_args(&["replora", "train", "--method", "lora", "--hidden", "4"]).to_classification().unwrap_err().to_string();
    assert!(e.contains("--hidden (a setting of --method replora) is not for --method lora"), "{e}");
    let e = train_args(&["replora", "train", "--method", "adapter", "--rank", "4", "--prefix-length", "3"])
        .to_classification()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "--rank (a setting of --method replora/lora/dora), --prefix-length (a setting of --method prefix) are not for --method adapter"
        ),
        "{e}"
    );
    assert_eq!(
        train_args(&["replora", "train", "--method", "replora", "--hidden", "4"])
            .to_classification()
            .unwrap()
            .tuning
            .adapter()
            .unwrap()
            .method
            .settings::<RepLora>()
            .unwrap()
            .hidden,
        4
    );
    let e = crate::apps::cli::Cli::try_parse_from(["replora", "train", "--targets", "query", "--targets-regex", ".*value"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--targets-regex") && e.contains("cannot be used with") && e.contains("--targets"), "{e}");
    // A run names its model: --model goes with --peft (logits) or without --run (generate).
    for args in [
        &["replora", "generate", "--run", "r", "--model", "m", "hi"][..],
        &["replora", "logits", "--run", "r", "--model", "m", "--text", "t", "--out", "o"],
    ] {
        let e = crate::apps::cli::Cli::try_parse_from(args).unwrap_err().to_string();
        assert!(e.contains("--model") && e.contains("cannot be used with"), "{e}");
    }

    let e = eval_args(&["replora", "eval", "--run", "r", "--max-len", "4", "--pooling", "mean", "--method", "dora"])
        .refuse_for_eval_of_run(TaskKind::Classification)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--max-len, --pooling, --method are not for `eval --run` of a classification run"), "{e}");
    let e = eval_args(&["replora", "eval", "--run", "r", "--eval-tasks", "bigbench:social_iqa"])
        .refuse_for_eval_of_run(TaskKind::Classification)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--eval-tasks is not for `eval --run` of a classification run") && e.contains("takes only --data"), "{e}");
    let e = eval_args(&["replora", "eval", "--run", "r", "--data", "d.jsonl"])
        .refuse_for_eval_of_run(TaskKind::MultipleChoice)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--data is not for `eval --run` of a multiple-choice run") && e.contains("--eval-tasks"), "{e}");
    assert!(eval_args(&["replora", "eval", "--run", "r", "--data", "d.jsonl"]).refuse_for_eval_of_run(TaskKind::Classification).is_ok());
    let e = eval_args(&["replora", "eval-lm", "--lr", "0.1", "--rank", "4", "--batch-size", "8"])
        .refuse_for_zero_shot_eval()
        .unwrap_err()
        .to_string();
    assert!(e.contains("--rank, --lr are not for `eval` without --run"), "{e}");
    assert!(
        eval_args(&["replora", "eval-lm", "--batch-size", "8", "--seed", "3"]).refuse_for_zero_shot_eval().is_ok(),
        "scoring batches and the draw act"
    );
}

/// In a list of methods (`compare`, `sweep`), a method's settings act on its own runs; one
/// that no listed method takes is still refused.
#[test]
fn a_method_list_gives_each_method_its_own_settings() {
    let args = train_args(&["replora", "train", "--hidden", "4", "--rank", "2", "--bottleneck", "16"]);
    let run_of = |method: &str, list: &[&str]| {
        let mut a = args.clone();
        (a.method.method, a.method.trained_with) = (Some(method.into()), list.iter().map(|m| m.to_string()).collect());
        a.to_classification()
    };
    let alone = |flags: &[&str]| train_args(&[&["replora", "train"], flags].concat()).to_classification().unwrap();
    let list = ["lora", "replora", "adapter"];
    // Each run's spec is the one its own flags give alone: the others' settings leave no trace.
    assert_eq!(run_of("lora", &list).unwrap(), alone(&["--method", "lora", "--rank", "2"]));
    assert_eq!(run_of("replora", &list).unwrap(), alone(&["--method", "replora", "--rank", "2", "--hidden", "4"]));
    assert_eq!(run_of("adapter", &list).unwrap(), alone(&["--method", "adapter", "--bottleneck", "16"]));
    let e = run_of("lora", &["lora", "dora", "adapter"]).unwrap_err().to_string();
    assert!(e.contains("--hidden") && e.contains("replora"), "{e}");
    let e = crate::apps::cli::check_method_list(&["lora".into(), "bogus".into()], false).unwrap_err().to_string();
    assert!(e.contains("\"bogus\"") && method_names().iter().all(|m| e.contains(m)), "{e}");
    let e = train_args(&["replora", "train"]);
    let bogus = RunArgs { method: MethodArgs { method: Some("bogus".into()), ..e.method.clone() }, ..e };
    let e = bogus.to_classification().unwrap_err().to_string();
    assert!(method_names().iter().all(|m| e.contains(m)), "{e}");
}

/// The task inferred from flags is the one whose flags the run keeps: a text flag with an image
/// flag is a text run that refuses the image flag, not the other way round.
#[test]
fn the_task_follows_the_model_family_and_blames_the_foreign_flag() {
    let args = train_args(&["replora", "train", "--data", "d.jsonl", "--max-len", "16", "--image-size", "56"]);
    assert_eq!(args.task(), TaskKind::Classification);
    let e = args.to_classification().unwrap_err().to_string();
    assert!(e.contains("--image-size is not for a classification run"), "{e}");
    assert_eq!(train_args(&["replora", "train", "--image-size", "56"]).task(), TaskKind::ImageClassification);

    let e =
        train_args(&["replora", "train", "--task", "classification", "--model", "smollm2"]).to_classification().unwrap_err().to_string();
    assert!(
        e.contains("--model smollm2 is a decoder (LLaMA)") && e.contains("needs an encoder") && e.contains("--task multiple-choice"),
        "{e}"
    );
    let e = train_args(&["replora", "train", "--task", "multiple-choice", "--model", "minilm"]).to_choice().unwrap_err().to_string();
    assert!(e.contains("--model minilm is an encoder (BERT-style)") && e.contains("needs a decoder"), "{e}");
    let e = train_args(&["replora", "train", "--task", "image-classification", "--model", "minilm"]).to_image().unwrap_err().to_string();
    assert!(e.contains("needs a vision transformer"), "{e}");
}

#[test]
fn a_config_file_error_names_the_file_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let expand = |text: &str, extra: &[&str]| {
        let file = dir.path().join("run.toml");
        std::fs::write(&file, text).unwrap();
        let mut args: Vec<String> = ["replora", "train", "--config", file.to_str().unwrap()].map(String::from).to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        expand_config_file(args)
    };
    let e = expand("config = \"other.toml\"\n", &[]).unwrap_err().to_string();
    assert!(e.contains("run.toml") && e.contains("cannot name another config file"), "{e}");
    let e = expand("epochs = \"two\"\n", &[]).unwrap_err().to_string();
    assert!(e.contains("run.toml") && e.contains("--epochs") && e.contains("two"), "{e}");
    let e = expand("rslora = \"yes\"\n", &[]).unwrap_err().to_string();
    assert!(e.contains("run.toml") && e.contains("switch"), "{e}");
    let e = expand("split = [0.8, 2, 0.1]\n", &[]).unwrap_err().to_string();
    assert!(e.contains("run.toml") && e.contains("--split"), "{e}");
    // The command line's --epochs replaces the file's, which is then not read.
    let args = expand("epochs = \"two\"\nrank = 4\n", &["--epochs", "1"]).unwrap();
    let cli = crate::apps::cli::Cli::try_parse_from(args).unwrap();
    let crate::apps::cli::Command::Train { run, .. } = cli.command else { panic!("not train") };
    assert_eq!((run.train.epochs, run.method.rank), (Some(1), Some(4)));
    use clap::CommandFactory;
    let help = crate::apps::cli::Cli::command().find_subcommand_mut("train").unwrap().render_long_help().to_string();
    assert!(help.contains("replaces the file's value"), "the precedence is in --help");
}

/// `--checkpoint-activations` is a trainer flag: every task's spec gets it, and it is off unless given.
#[test]
fn checkpoint_activations_reaches_every_task() {
    let on = |task: &str| {
        let args = train_args(&["replora", "train", "--task", task, "--checkpoint-activations"]);
        match task {
            "classification" => args.to_classification().unwrap().train.checkpoint_activations,
            "multiple-choice" => args.to_choice().unwrap().train.checkpoint_activations,
            "image-classification" => args.to_image().unwrap().train.checkpoint_activations,
            "vqa" => args.to_vqa().unwrap().train.checkpoint_activations,
            "video" => args.to_video().unwrap().train.checkpoint_activations,
            _ => unreachable!(),
        }
    };
    for task in ["classification", "multiple-choice", "image-classification", "vqa", "video"] {
        assert!(on(task), "{task}");
    }
    assert!(!train_args(&["replora", "train"]).to_classification().unwrap().train.checkpoint_activations);
}

/// `--quantize` holds the base of every task.
#[test]
fn quantize_reaches_every_task() {
    let args = |task: &str| train_args(&["replora", "train", "--task", task, "--quantize", "bf16"]);
    assert_eq!(args("classification").to_classification().unwrap().quantize, Quantize::Bf16);
    assert_eq!(args("multiple-choice").to_choice().unwrap().quantize, Quantize::Bf16);
    assert_eq!(args("image-classification").to_image().unwrap().quantize, Quantize::Bf16);
    assert_eq!(args("vqa").to_vqa().unwrap().quantize, Quantize::Bf16);
    assert_eq!(args("video").to_video().unwrap().quantize, Quantize::Bf16);
    assert_eq!(train_args(&["replora", "train"]).to_classification().unwrap().quantize, Quantize::Stored);
}
