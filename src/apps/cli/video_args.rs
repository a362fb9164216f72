//! The flags of video-classification runs ([`VideoArgs`]) and their spec
//! ([`RunArgs::to_video`]). A video run also takes `--image-size` and `--split-seed` (shared with
//! image classification) and `--validation-share` and `--test-share` (shared with vqa).

use clap::Args;

use super::flags_given::{named, refuse_for_task};
use super::spec_args::{RunArgs, SpecFromArgs, count};
use crate::adapters::TargetModules;
use crate::error::{Error, Result};
use crate::models::video_vit::VideoVit;
use crate::tasks::video_classification::VideoClassificationSpec;
use crate::tasks::{TaskKind, VideoClassification};

/// Flags of video-classification runs (`--task video`).
#[derive(Args, Debug, Clone, Default)]
pub struct VideoArgs {
    /// Frames sampled per clip (uniformly: segment centres in evaluation, a seeded random
    /// offset in training); every clip needs at least this many [default: 4]
    #[arg(long, value_parser = count, help_heading = "Video classification")]
    pub frames: Option<usize>,
    /// Put the method's adapters on the temporal attention too (its query and value; the
    /// temporal output for --method adapter, the temporal key for prefix)
    #[arg(long, help_heading = "Video classification")]
    pub temporal_adapters: bool,
    /// The control: each clip's frames in a random order, in training and evaluation, so a
    /// model cannot use their order
    #[arg(long, help_heading = "Video classification")]
    pub shuffle_frames: bool,
}

impl VideoArgs {
    pub(super) fn given(&self) -> Vec<&'static str> {
        named([
            (self.frames.is_some(), "--frames"),
            (self.temporal_adapters, "--temporal-adapters"),
            (self.shuffle_frames, "--shuffle-frames"),
        ])
    }
}

impl RunArgs {
    pub fn to_video(&self) -> Result<VideoClassificationSpec> {
        let shared = ["--image-size", "--split-seed", "--validation-share", "--test-share"];
        let mut foreign: Vec<&str> = [self.classification.given(), self.choice.given(), self.image.given(), self.vqa.given()]
            .concat()
            .into_iter()
            .filter(|f| !shared.contains(f))
            .collect();
        if self.max_len.is_some() {
            foreign.push("--max-len");
        }
        refuse_for_task(&foreign, TaskKind::Video)?;
        let d = VideoClassificationSpec::default();
        RunArgs::check_model_family(self.model.as_deref().unwrap_or(&d.model), TaskKind::Video)?;
        let v = &self.video;
        let train = self.train.to_train(d.train.clone());
        let mut tuning = self.method.to_tuning::<VideoVit>(train.seed)?;
        if v.temporal_adapters {
            let Some(config) = tuning.adapter_mut() else {
                return Err(Error::Config(format!("--temporal-adapters needs an adapter method; --method {} has none", tuning.name())));
            };
            let temporal = VideoVit::temporal_targets(config.method.method().sites());
            match &mut config.target_modules {
                TargetModules::Names(names) => names.extend(temporal.iter().map(|t| t.to_string())),
                TargetModules::Regex(_) => {
                    return Err(Error::Config(
                        "--temporal-adapters adds names to --targets; with --targets-regex, match the temporal linears (temporal_query, temporal_value, ...) in the regex"
                            .into(),
                    ));
                }
            }
        }
        Ok(VideoClassificationSpec {
            model: self.model.clone().unwrap_or(d.model),
            data: self.data.clone().unwrap_or(d.data),
            image_size: self.image.image_size.unwrap_or(d.image_size),
            frames: v.frames.unwrap_or(d.frames),
            validation_share: self.vqa.validation_share.unwrap_or(d.validation_share),
            test_share: self.vqa.test_share.unwrap_or(d.test_share),
            split_seed: self.image.split_seed.or(d.split_seed),
            train_fraction: self.train_fraction.unwrap_or(d.train_fraction),
            shuffle_frames: v.shuffle_frames || d.shuffle_frames,
            quantize: self.quantize.unwrap_or(d.quantize),
            tuning,
            train,
        })
    }
}

impl SpecFromArgs for VideoClassification {
    fn spec_from(args: &RunArgs) -> Result<VideoClassificationSpec> {
        args.to_video()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn train_args(args: &[&str]) -> RunArgs {
        let args = crate::apps::cli::expand_aliases(args.iter().map(|s| s.to_string()).collect());
        let crate::apps::cli::Command::Train { run, .. } = crate::apps::cli::Cli::try_parse_from(args).unwrap().command else {
            panic!("not train")
        };
        run
    }

    fn names(spec: &VideoClassificationSpec) -> TargetModules {
        spec.tuning.adapter().unwrap().target_modules.clone()
    }

    #[test]
    fn video_flags_make_a_video_spec_and_other_tasks_refuse_them() {
        let args = train_args(&["replora", "train", "--frames", "6", "--temporal-adapters", "--image-size", "28"]);
        assert_eq!(args.task(), TaskKind::Video, "a video flag names the task");
        let spec = args.to_video().unwrap();
        assert_eq!((spec.frames, spec.image_size, spec.shuffle_frames), (6, 28, false));
        let expected = ["query", "value", "temporal_query", "temporal_value"].map(String::from).to_vec();
        assert_eq!(names(&spec), TargetModules::Names(expected));
        let plain = train_args(&["replora", "train", "--task", "video"]).to_video().unwrap();
        assert_eq!(names(&plain), TargetModules::Names(vec!["query".into(), "value".into()]), "temporal adapters only when asked");
        let adapter =
            train_args(&["replora", "train", "--task", "video", "--method", "adapter", "--temporal-adapters"]).to_video().unwrap();
        assert!(matches!(names(&adapter), TargetModules::Names(n) if n.contains(&"temporal_output".to_string())));

        let e = train_args(&["replora", "train", "--task", "video", "--method", "probe", "--temporal-adapters"]).to_video().unwrap_err();
        assert!(e.to_string().contains("--temporal-adapters needs an adapter method"), "{e}");
        let e = train_args(&["replora", "train", "--task", "image-classification", "--frames", "4"]).to_image().unwrap_err();
        assert!(e.to_string().contains("--frames is not for an image-classification run"), "{e}");
        let e = train_args(&["replora", "train", "--task", "video", "--max-len", "8"]).to_video().unwrap_err();
        assert!(e.to_string().contains("--max-len is not for a video run"), "{e}");
    }
}
