//! JSONL datasets: one JSON object per line, e.g. `{"text": "...", "label": "positive"}`, with
//! an optional `text_pair`. Blank lines are skipped; field names are configurable
//! ([`Columns`]). Labels may be strings, integers or booleans (kept as their JSON text).

use std::path::Path;

use serde_json::Value;

use super::{Columns, Example};
use crate::{Error, Result};

/// Reads the examples of a JSONL file and the line number (1-based) of each.
pub fn read(path: &Path, columns: &Columns) -> Result<(Vec<Example>, Vec<usize>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(path, &bytes, columns)
}

/// Parses JSONL `bytes`; `path` only names the source in errors.
pub fn parse(path: &Path, bytes: &[u8], columns: &Columns) -> Result<(Vec<Example>, Vec<usize>)> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut examples = Vec::new();
    let mut lines = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let err = |message: String| Error::data(path, Some(line_no), message);
        let line = std::str::from_utf8(raw).map_err(|e| err(format!("invalid UTF-8 ({e})")))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| err(format!("invalid JSON ({e})")))?;
        let Value::Object(object) = value else {
            return Err(err(format!("expected a JSON object, found {}", kind(&value))));
        };
        let text = match object.get(&columns.text) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(err(format!("field {:?} must be a string, found {}", columns.text, kind(other)))),
            None => return Err(err(format!("missing field {:?}", columns.text))),
        };
        let text_pair = match columns.text_pair.as_ref().and_then(|name| object.get(name).map(|v| (name, v))) {
            None | Some((_, Value::Null)) => None,
            Some((_, Value::String(s))) if s.is_empty() => None,
            Some((_, Value::String(s))) => Some(s.clone()),
            Some((name, other)) => return Err(err(format!("field {name:?} must be a string, found {}", kind(other)))),
        };
        let label = match object.get(&columns.label) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            Some(other) => {
                return Err(err(format!("field {:?} must be a string, number or boolean, found {}", columns.label, kind(other))));
            }
            None => return Err(err(format!("missing field {:?}", columns.label))),
        };
        if label.is_empty() {
            return Err(err(format!("empty label in field {:?}", columns.label)));
        }
        examples.push(Example { text, text_pair, label });
        lines.push(line_no);
    }
    Ok((examples, lines))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LoadOptions, load, test_util::write};
    use super::*;

    #[test]
    fn loads_texts_pairs_and_labels() {
        let content = "\u{feff}{\"text\": \"good film\", \"label\": \"pos\"}\n\
                       \n\
                       {\"text\": \"A man sleeps\", \"text_pair\": \"A person rests\", \"label\": \"entail\"}\r\n\
                       {\"text\": \"x\", \"text_pair\": null, \"label\": 1}\n";
        let (_dir, path) = write("d.jsonl", content);
        let ds = load(&path, &LoadOptions::default()).unwrap();
        assert_eq!(
            ds.examples,
            vec![Example::new("good film", "pos"), Example::pair("A man sleeps", "A person rests", "entail"), Example::new("x", "1")]
        );
        assert_eq!(ds.labels, vec!["1", "entail", "pos"]);
        let (_, lines) = read(&path, &Columns::default()).unwrap();
        assert_eq!(lines, vec![1, 3, 4]);
    }

    #[test]
    fn configurable_field_names() {
        let (_dir, path) = write("d.jsonl", "{\"sentence\": \"hi\", \"hypothesis\": \"hello\", \"y\": \"a\"}\n");
        let columns = Columns { text: "sentence".into(), text_pair: Some("hypothesis".into()), label: "y".into() };
        let ds = load(&path, &LoadOptions { columns, ..Default::default() }).unwrap();
        assert_eq!(ds.examples, vec![Example::pair("hi", "hello", "a")]);
    }

    fn error_at(content: &str) -> (Option<usize>, String) {
        let (_dir, path) = write("d.jsonl", content);
        match load(&path, &LoadOptions::default()).unwrap_err() {
            e @ Error::Data { line, .. } => (line, e.to_string()),
            other => panic!("expected a data error, got {other:?}"),
        }
    }

    #[test]
    fn invalid_json_names_its_line() {
        let (line, msg) = error_at("{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \n");
        assert_eq!(line, Some(2));
        assert!(msg.contains("d.jsonl:2: invalid JSON"), "{msg}");
    }

    #[test]
    fn missing_fields_name_their_line() {
        let (line, msg) = error_at("{\"text\": \"a\", \"label\": \"x\"}\n\n{\"text\": \"b\"}\n");
        assert_eq!(line, Some(3));
        assert!(msg.contains("missing field \"label\""), "{msg}");
        let (line, msg) = error_at("{\"label\": \"x\"}\n");
        assert_eq!(line, Some(1));
        assert!(msg.contains("missing field \"text\""), "{msg}");
    }

    #[test]
    fn wrong_types_are_errors() {
        let (line, msg) = error_at("{\"text\": \"a\", \"label\": \"x\"}\n[1, 2]\n");
        assert_eq!(line, Some(2));
        assert!(msg.contains("expected a JSON object"), "{msg}");
        let (_, msg) = error_at("{\"text\": 5, \"label\": \"x\"}\n");
        assert!(msg.contains("must be a string"), "{msg}");
        let (_, msg) = error_at("{\"text\": \"a\", \"label\": null}\n");
        assert!(msg.contains("found null"), "{msg}");
        let (_, msg) = error_at("{\"text\": \"a\", \"label\": \"\"}\n");
        assert!(msg.contains("empty label"), "{msg}");
    }
}
