//! The library's modules form layers, each using only lower ones: no module cycles (issue 28).
//! A new top-level module must be placed here; a `crate::` path into the same or a higher
//! layer fails this test with the file and the path. docs/architecture.md shows the layers.

use std::collections::BTreeMap;
use std::path::Path;

mod support;

/// Bottom to top.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["choice", "progress", "quantization", "precision"],
    &["files", "memory", "device", "validate", "kernels", "assets"],
    &["layout", "weights", "data"],
    &["adapters"],
    &["models", "formats"],
    &["generate", "training"],
    &["tasks"],
    &["run"],
    &["interop"],
    &["apps"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a file under `src/` belongs to (`None` for lib.rs and main.rs).
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The top-level modules named by `crate::x` / `$crate::x` / `crate::{x, y::z}` in code:
/// comments and the `#[cfg(test)] mod tests` block (which may use anything) are left out.
fn uses(source: &str) -> Vec<String> {
    let code = source.split("#[cfg(test)]\nmod tests").next().unwrap_or(source);
    let code: String = code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let single = regex::Regex::new(r"\bcrate::(\w+)").unwrap();
    let grouped = regex::Regex::new(r"\bcrate::\{([^}]*)\}").unwrap();
    let mut found: Vec<String> = single.captures_iter(&code).map(|c| c[1].to_string()).collect();
    for group in grouped.captures_iter(&code) {
        found.extend(group[1].split(',').filter_map(|item| item.trim().split("::").next()).filter(|s| !s.is_empty()).map(String::from));
    }
    found
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = support::files_with_extension(&src, "rs");
    let mut modules = BTreeMap::new();
    let mut violations = vec![];
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let Some(module) = module_of(relative) else { continue };
        let Some(own) = layer_of(&module) else {
            violations.push(format!("{}: module `{module}` is in no layer of tests/layering.rs", relative.display()));
            continue;
        };
        *modules.entry(module.clone()).or_insert(0) += 1;
        for used in uses(&std::fs::read_to_string(file).unwrap()) {
            let Some(theirs) = layer_of(&used) else { continue }; // crate::Result, crate::Error, macros
            if used != module && theirs >= own {
                violations.push(format!("{}: `{module}` (layer {own}) uses crate::{used} (layer {theirs})", relative.display()));
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(violations.is_empty(), "module layering broken:\n{}", violations.join("\n"));
    // The scan saw the modules it checks: an empty or misplaced source tree would pass vacuously.
    for module in ["adapters", "models", "tasks", "run", "training", "weights"] {
        assert!(modules.get(module).is_some_and(|&n| n > 0), "no files found for `{module}`");
    }
}

#[test]
fn uses_sees_every_form_of_crate_path() {
    let found = uses(
        "use crate::models::Llama;\nuse crate::{tasks::Task, run};\nlet x = $crate::weights::Reader;\n// crate::apps in a comment\n#[cfg(test)]\nmod tests { use crate::apps; }",
    );
    assert_eq!(found, ["models", "weights", "tasks", "run"]);
}
