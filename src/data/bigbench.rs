//! BIG-bench multiple-choice tasks (`task.json`) as classification datasets.
//!
//! Each example is `{"input": ..., "target_scores": {choice: score}}`; its label is the one
//! choice with the highest score (1 in practice). The task's `task_prefix` and
//! `example_input_prefix` are left out of the text unless asked for. Some tasks store
//! `target_scores` as a Python dict literal in a string (`"{'cat': 1, 'dog': 0}"`); that form
//! is parsed too. Generative examples (`target` without `target_scores`) and examples without
//! one best choice are errors naming the example (1-based).
//!
//! Tasks split into subtasks keep no examples in their top-level `task.json`; loading one is an
//! error that says so.
//!
//! Tasks whose choices differ per example (e.g. answer texts) load, but every distinct answer
//! becomes a label: they are not classification tasks.

use std::path::Path;

use serde_json::Value;

use super::Example;
use crate::{Error, Result};

/// BIG-bench's default `example_input_prefix`, used when a task does not set one.
const DEFAULT_INPUT_PREFIX: &str = "\nQ: ";

/// Reads a task's examples and the 1-based number of each. With `prefixes`, each text starts
/// with the task's `task_prefix` and `example_input_prefix`.
pub fn read(path: &Path, prefixes: bool) -> Result<(Vec<Example>, Vec<usize>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let task: Value = serde_json::from_slice(&bytes).map_err(|e| Error::data(path, Some(e.line()), format!("invalid JSON ({e})")))?;
    parse(path, &task, prefixes)
}

/// Converts a parsed task; `path` only names the source in errors.
pub fn parse(path: &Path, task: &Value, prefixes: bool) -> Result<(Vec<Example>, Vec<usize>)> {
    let err = |message: String| Error::data(path, None, message);
    let examples = task.get("examples").and_then(Value::as_array).ok_or_else(|| {
        err(if task.get("name").is_some() {
            "this task has no \"examples\" of its own: its examples are in subtasks (<task>/<subtask>/task.json in the BIG-bench \
                 sources), which `replora fetch bigbench` does not extract"
                .into()
        } else {
            "not a BIG-bench task: no \"examples\" array".into()
        })
    })?;
    let prefix = if prefixes {
        let task_prefix = task.get("task_prefix").and_then(Value::as_str).unwrap_or("");
        let input_prefix = task.get("example_input_prefix").and_then(Value::as_str).unwrap_or(DEFAULT_INPUT_PREFIX);
        format!("{task_prefix}{input_prefix}")
    } else {
        String::new()
    };
    let mut out = Vec::with_capacity(examples.len());
    let mut numbers = Vec::with_capacity(examples.len());
    for (i, example) in examples.iter().enumerate() {
        let n = i + 1;
        let err = |message: String| Error::data(path, None, format!("example {n}: {message}"));
        let input = match example.get("input") {
            Some(Value::String(s)) => s,
            Some(_) => return Err(err("\"input\" is not a string".into())),
            None => return Err(err("missing \"input\"".into())),
        };
        let scores = target_scores(example).map_err(err)?;
        let label = best_choice(&scores).map_err(err)?;
        out.push(Example { text: format!("{prefix}{input}"), text_pair: None, label });
        numbers.push(n);
    }
    Ok((out, numbers))
}

/// An example's `target_scores` as (choice, score) pairs.
fn target_scores(example: &Value) -> std::result::Result<Vec<(String, f64)>, String> {
    match example.get("target_scores") {
        Some(Value::Object(map)) => {
            map.iter().map(|(k, v)| v.as_f64().map(|s| (k.clone(), s)).ok_or_else(|| format!("score of {k:?} is not a number"))).collect()
        }
        Some(Value::String(s)) => parse_python_dict(s).map_err(|m| format!("cannot read target_scores string: {m}")),
        Some(_) => Err("\"target_scores\" is neither an object nor a dict string".into()),
        None if example.get("target").is_some() => Err("no \"target_scores\" (a generative task); only multiple-choice tasks load".into()),
        None => Err("missing \"target_scores\"".into()),
    }
}

/// A multiple-choice question with its own answer options (for causal language models).
#[derive(Clone, Debug, PartialEq)]
pub struct ChoiceExample {
    /// The task it comes from (the `task.json`'s folder name).
    pub task: String,
    pub question: String,
    /// The options, in the order `target_scores` lists them once parsed (sorted by text).
    pub options: Vec<String>,
    /// Index of the correct option.
    pub answer: usize,
}

/// What `--tasks` and `--eval-tasks` take.
pub const CHOICE_TASKS: &str =
    "`bigbench:<task>` or a BIG-bench task.json file ({\"examples\": [{\"input\": .., \"target_scores\": {..}}, ..]})";

/// Reads a task as multiple-choice questions; `task` names them.
pub fn read_choices(path: &Path, task: &str) -> Result<Vec<ChoiceExample>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let not_a_task = |what: String| format!("{what}: a multiple-choice task (--tasks, --eval-tasks) is {CHOICE_TASKS}");
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::data(path, Some(e.line()), not_a_task(format!("invalid JSON ({e})"))))?;
    let examples = value
        .get("examples")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::data(path, None, not_a_task("no \"examples\" array".into())))?;
    let mut out = Vec::with_capacity(examples.len());
    for (i, example) in examples.iter().enumerate() {
        let err = |message: String| Error::data(path, None, format!("example {}: {message}", i + 1));
        let question = example.get("input").and_then(Value::as_str).ok_or_else(|| err("missing or non-string \"input\"".into()))?;
        let scores = target_scores(example).map_err(err)?;
        let best = best_choice(&scores).map_err(err)?;
        let options: Vec<String> = scores.into_iter().map(|(k, _)| k).collect();
        if options.len() < 2 {
            return Err(err("fewer than two options".into()));
        }
        let answer = options.iter().position(|o| *o == best).expect("the best choice is an option");
        out.push(ChoiceExample { task: task.to_string(), question: question.trim().to_string(), options, answer });
    }
    Ok(out)
}

/// The one choice with the highest (positive) score.
fn best_choice(scores: &[(String, f64)]) -> std::result::Result<String, String> {
    let max = scores.iter().map(|(_, s)| *s).fold(f64::NEG_INFINITY, f64::max);
    if scores.is_empty() || max <= 0.0 {
        return Err("target_scores has no choice with a positive score".into());
    }
    let best: Vec<&String> = scores.iter().filter(|(_, s)| *s == max).map(|(k, _)| k).collect();
    match best.as_slice() {
        [one] => Ok((*one).clone()),
        many => Err(format!(
            "target_scores has {} choices with the top score {max} ({}); a classification example needs exactly one",
            many.len(),
            many.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Parses a Python dict literal of string keys and numeric values, e.g. `{'a': 1, "b": 0.0}`.
pub fn parse_python_dict(s: &str) -> std::result::Result<Vec<(String, f64)>, String> {
    let mut p = Parser { chars: s.chars().collect(), pos: 0 };
    p.skip_ws();
    p.expect('{')?;
    let mut out = Vec::new();
    p.skip_ws();
    if p.peek() == Some('}') {
        p.pos += 1;
    } else {
        loop {
            p.skip_ws();
            let key = p.string()?;
            p.skip_ws();
            p.expect(':')?;
            p.skip_ws();
            let value = p.number()?;
            out.push((key, value));
            p.skip_ws();
            match p.next() {
                Some(',') => {
                    p.skip_ws();
                    if p.peek() == Some('}') {
                        p.pos += 1;
                        break;
                    }
                }
                Some('}') => break,
                other => return Err(format!("expected ',' or '}}' at character {}, found {other:?}", p.pos)),
            }
        }
    }
    p.skip_ws();
    if p.pos != p.chars.len() {
        return Err(format!("trailing text at character {}", p.pos));
    }
    Ok(out)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += 1;
        c
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }
    fn expect(&mut self, c: char) -> std::result::Result<(), String> {
        match self.next() {
            Some(found) if found == c => Ok(()),
            found => Err(format!("expected {c:?} at character {}, found {found:?}", self.pos - 1)),
        }
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let quote = match self.next() {
            Some(q @ ('\'' | '"')) => q,
            other => return Err(format!("expected a quoted key at character {}, found {other:?}", self.pos - 1)),
        };
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err("unterminated string".into()),
                Some(c) if c == quote => return Ok(out),
                Some('\\') => match self.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('0') => out.push('\0'),
                    Some('x') => out.push(self.hex(2)?),
                    Some('u') => out.push(self.hex(4)?),
                    Some('U') => out.push(self.hex(8)?),
                    Some(c @ ('\\' | '\'' | '"')) => out.push(c),
                    Some('\n') => {}
                    Some(c) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => return Err("unterminated string".into()),
                },
                Some(c) => out.push(c),
            }
        }
    }
    fn hex(&mut self, digits: usize) -> std::result::Result<char, String> {
        let text: String = (0..digits).filter_map(|_| self.next()).collect();
        u32::from_str_radix(&text, 16).ok().and_then(char::from_u32).ok_or_else(|| format!("bad escape \\x{text}"))
    }
    fn number(&mut self) -> std::result::Result<f64, String> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+')) {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        match text.as_str() {
            "True" => Ok(1.0),
            "False" => Ok(0.0),
            _ => text.parse().map_err(|_| format!("expected a number at character {start}, found {text:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LoadOptions, load, test_util::write};
    use super::*;

    const TASK: &str = r#"{
        "name": "toy",
        "task_prefix": "Classify the intent.\n\n",
        "example_input_prefix": "Utterance: ",
        "examples": [
            {"input": "play some jazz", "target_scores": {"play_music": 1, "get_weather": 0}},
            {"input": "will it rain", "target_scores": {"play_music": 0, "get_weather": 1}},
            {"input": "a picture", "target_scores": "{'cat': 0, 'dog\\'s': 1.0}"}
        ]
    }"#;

    #[test]
    fn labels_come_from_target_scores() {
        let (_dir, path) = write("task.json", TASK);
        let ds = load(&path, &LoadOptions::default()).unwrap();
        assert_eq!(
            ds.examples,
            vec![
                Example::new("play some jazz", "play_music"),
                Example::new("will it rain", "get_weather"),
                Example::new("a picture", "dog's")
            ]
        );
        assert_eq!(ds.labels, vec!["dog's", "get_weather", "play_music"]);
    }

    #[test]
    fn prefixes_only_when_asked() {
        let (_dir, path) = write("task.json", TASK);
        let ds = load(&path, &LoadOptions { bigbench_prefixes: true, ..Default::default() }).unwrap();
        assert_eq!(ds.examples[0].text, "Classify the intent.\n\nUtterance: play some jazz");
    }

    #[test]
    fn python_dict_strings() {
        assert_eq!(parse_python_dict("{'a': 1, \"b\": 0}").unwrap(), vec![("a".to_string(), 1.0), ("b".to_string(), 0.0)]);
        assert_eq!(parse_python_dict(" { 'x\\n' : 0.5 , } ").unwrap(), vec![("x\n".to_string(), 0.5)]);
        assert_eq!(parse_python_dict("{}").unwrap(), vec![]);
        assert!(parse_python_dict("{'a': 1").is_err());
        assert!(parse_python_dict("{'a': one}").is_err());
        assert!(parse_python_dict("['a']").is_err());
    }

    fn error_of(task: &str) -> String {
        let (_dir, path) = write("task.json", task);
        load(&path, &LoadOptions::default()).unwrap_err().to_string()
    }

    #[test]
    fn bad_examples_are_named() {
        let msg = error_of(r#"{"examples": [{"input": "a", "target_scores": {"x": 1}}, {"input": "b", "target": "y"}]}"#);
        assert!(msg.contains("example 2: no \"target_scores\" (a generative task)"), "{msg}");
        let msg = error_of(r#"{"examples": [{"input": "a", "target_scores": {"x": 1, "y": 1}}]}"#);
        assert!(msg.contains("example 1: target_scores has 2 choices with the top score"), "{msg}");
        let msg = error_of(r#"{"examples": [{"input": "a", "target_scores": {"x": 0}}]}"#);
        assert!(msg.contains("no choice with a positive score"), "{msg}");
        let msg = error_of(r#"{"examples": [{"input": "a", "target_scores": "{'x': 1"}]}"#);
        assert!(msg.contains("example 1: cannot read target_scores string"), "{msg}");
        let msg = error_of(r#"{"examples": [{"target_scores": {"x": 1}}]}"#);
        assert!(msg.contains("missing \"input\""), "{msg}");
        let msg = error_of(r#"{"name": "x"}"#);
        assert!(msg.contains("examples are in subtasks"), "{msg}");
        let msg = error_of(r#"{"data": []}"#);
        assert!(msg.contains("no \"examples\" array"), "{msg}");
        let msg = error_of("{\"examples\": [\n{\"input\": }\n]}");
        assert!(msg.contains("task.json:2: invalid JSON"), "{msg}");
        let msg = error_of(r#"{"examples": []}"#);
        assert!(msg.contains("empty dataset"), "{msg}");
    }

    #[test]
    fn unknown_label_names_the_example() {
        let (_dir, path) = write("task.json", TASK);
        let options = LoadOptions { labels: Some(vec!["play_music".into(), "get_weather".into()]), ..Default::default() };
        let msg = load(&path, &options).unwrap_err().to_string();
        assert!(msg.contains("example 3: unknown label \"dog's\"; known labels: get_weather, play_music"), "{msg}");
    }
}
