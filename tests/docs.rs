//! The documentation stays navigable: every relative link in README.md and docs/ names a file
//! that exists and, where it has one, a heading anchor that the file has; the README stays a
//! front page.

use std::path::Path;

mod support;

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    let text = heading.trim_start_matches('#').trim().to_lowercase();
    text.chars().filter(|c| c.is_alphanumeric() || *c == '_' || *c == '-' || *c == ' ').collect::<String>().replace(' ', "-")
}

fn anchors(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut in_code = false;
    let mut out = vec![];
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(anchor(line));
        }
    }
    out
}

/// The broken relative links of one markdown file, as `file: link (why)`.
fn broken_links(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut broken = vec![];
    for m in link.captures_iter(&text) {
        let url = &m[1];
        if url.starts_with("http://") || url.starts_with("https://") || url.starts_with("mailto:") {
            continue;
        }
        let (path, fragment) = url.split_once('#').unwrap_or((url, ""));
        let target = if path.is_empty() { file.to_path_buf() } else { file.parent().unwrap().join(path) };
        if !target.exists() {
            broken.push(format!("{}: {url} (no such file)", file.display()));
        } else if !fragment.is_empty() && target.extension().is_some_and(|e| e == "md") && !anchors(&target).iter().any(|a| a == fragment) {
            broken.push(format!("{}: {url} (no such heading)", file.display()));
        }
    }
    broken
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    files.extend(support::files_with_extension(&root.join("docs"), "md"));
    assert!(files.len() > 10, "the docs were found: {files:?}");
    let broken: Vec<String> = files.iter().flat_map(|f| broken_links(f)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_checker_catches_a_missing_file_and_a_missing_heading() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.md");
    std::fs::write(&page, "# Title\n## The part\n[ok](#the-part) [gone](nowhere.md) [bad](#no-part) [web](https://x.y)\n").unwrap();
    let broken = broken_links(&page);
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(broken[0].contains("nowhere.md (no such file)") && broken[1].contains("#no-part (no such heading)"));
}

#[test]
fn the_readme_is_a_front_page() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(readme.len() < 20_000, "README.md is {} bytes: details belong in docs/", readme.len());
    let first_block = readme.split("```bash").nth(1).expect("a bash block with the two commands");
    assert!(first_block.contains("cargo run --release -- compare") && first_block.contains("scripts/test"));
}

/// docs/cli-reference.md: every subcommand's `--help`, generated from the clap definitions.
fn cli_reference() -> String {
    use clap::CommandFactory;
    let mut cli = replora::apps::cli::Cli::command().term_width(100);
    cli.build();
    let mut out = String::from(
        "# Command-line reference\n\nGenerated from the clap definitions by `tests/docs.rs`; do not edit by hand. \
         After changing a flag, regenerate it with `REPLORA_BLESS=1 cargo test --test docs`.\n\n",
    );
    out += "Verbs: ";
    let subcommands: Vec<_> = cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
    out += &subcommands.iter().map(|s| format!("[`{0}`](#replora-{0})", s.get_name())).collect::<Vec<_>>().join(", ");
    out += "\n";
    for mut sub in subcommands {
        let help = sub.render_long_help().to_string();
        let help: Vec<&str> = help.lines().map(str::trim_end).collect();
        out += &format!("\n## replora {}\n\n```text\n{}\n```\n", sub.get_name(), help.join("\n").trim_end());
    }
    out
}

#[test]
fn the_cli_reference_is_generated_from_the_current_flags() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli-reference.md");
    let fresh = cli_reference();
    assert!(fresh.contains("## replora train") && fresh.contains("--method"), "the reference lists the verbs and their flags");
    if std::env::var_os("REPLORA_BLESS").is_some() {
        // Through a rename: the link test reads this file at the same time.
        let tmp = path.with_extension("md.tmp");
        std::fs::write(&tmp, &fresh).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(written == fresh, "docs/cli-reference.md is stale: regenerate it with `REPLORA_BLESS=1 cargo test --test docs`");
}
