//! BIG-bench task lookup: the fetched tasks' names and suggestions for a mistyped one.

use std::fs;
use std::path::Path;

use super::fetch;
use crate::{Error, Result};

/// The names of the BIG-bench tasks, fetching them first if needed.
pub fn bigbench_tasks() -> Result<Vec<String>> {
    list_tasks(&fetch("bigbench")?)
}

pub(super) fn list_tasks(root: &Path) -> Result<Vec<String>> {
    let mut tasks = Vec::new();
    for entry in fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().join("task.json").is_file() {
            tasks.push(name);
        }
    }
    tasks.sort();
    Ok(tasks)
}

pub(super) fn valid_task_name(task: &str) -> bool {
    !task.is_empty() && !task.starts_with('.') && task.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Up to `n` candidates close to `query`: containing it, or within a small edit distance.
pub(super) fn close_matches(query: &str, candidates: &[String], n: usize) -> Vec<String> {
    let q = query.to_lowercase();
    let limit = (q.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &String)> = candidates
        .iter()
        .filter_map(|c| {
            let lc = c.to_lowercase();
            if lc.contains(&q) || (q.len() >= 4 && q.contains(&lc)) {
                Some((0, c))
            } else {
                let d = levenshtein(&q, &lc);
                (d <= limit).then_some((d, c))
            }
        })
        .collect();
    scored.sort();
    scored.into_iter().take(n).map(|(_, c)| c.clone()).collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_matches_rank_substrings_and_typos() {
        let tasks: Vec<String> =
            ["intent_recognition", "strategyqa", "sports_understanding", "social_iqa"].iter().map(|s| s.to_string()).collect();
        assert_eq!(close_matches("intent", &tasks, 5), vec!["intent_recognition"]);
        assert_eq!(close_matches("intent_recogniton", &tasks, 5), vec!["intent_recognition"]);
        assert_eq!(close_matches("strategy_qa", &tasks, 5), vec!["strategyqa"]);
        assert!(close_matches("zzzzzz", &tasks, 5).is_empty());
    }
}
