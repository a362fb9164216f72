//! CSV/TSV datasets: a header row naming the columns, then one example per record. The text
//! and label columns are required; the pair column is used where the header has it. Column
//! names are configurable ([`Columns`]). Quoted fields may span lines; a record's line number
//! is the line it starts on.

use std::path::Path;

use super::{Columns, Example};
use crate::{Error, Result};

/// Reads the examples of a CSV (`delimiter` `b','`) or TSV (`b'\t'`) file and the line number
/// (1-based) of each.
pub fn read(path: &Path, columns: &Columns, delimiter: u8) -> Result<(Vec<Example>, Vec<usize>)> {
    let table = read_table(path, delimiter)?;
    let text_col = table.column(path, &columns.text)?;
    let label_col = table.column(path, &columns.label)?;
    let pair_col = columns.text_pair.as_deref().and_then(|name| table.find(name));
    let mut examples = Vec::new();
    let mut line_numbers = Vec::new();
    for (line, record) in &table.records {
        let label = record[label_col].trim().to_string();
        if label.is_empty() {
            return Err(Error::data(path, Some(*line), format!("empty label in column {:?}", columns.label)));
        }
        let text_pair = pair_col.map(|c| record[c].to_string()).filter(|s| !s.is_empty());
        examples.push(Example { text: record[text_col].to_string(), text_pair, label });
        line_numbers.push(*line);
    }
    Ok((examples, line_numbers))
}

/// A CSV/TSV file's header and its non-blank records, each with the line it starts on.
pub struct Table {
    pub headers: Vec<String>,
    pub records: Vec<(usize, ::csv::StringRecord)>,
}

impl Table {
    /// The index of the column named `name` (surrounding spaces ignored).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h.trim() == name)
    }

    /// The index of the column named `name`, or an error that lists the header.
    pub fn column(&self, path: &Path, name: &str) -> Result<usize> {
        self.find(name)
            .ok_or_else(|| Error::data(path, Some(1), format!("the header has no column {name:?} (columns: {})", self.headers.join(", "))))
    }

    /// Each record as a JSON object keyed by the header's names (for inputs to predict).
    pub fn objects(&self) -> Vec<serde_json::Value> {
        let names: Vec<&str> = self.headers.iter().map(|h| h.trim()).collect();
        self.records
            .iter()
            .map(|(_, r)| names.iter().zip(r.iter()).map(|(n, v)| (n.to_string(), serde_json::Value::from(v))).collect())
            .collect()
    }
}

/// Reads a CSV (`delimiter` `b','`) or TSV (`b'\t'`) file: a header row, then records of as many
/// fields. A quoted field that swallows what look like whole rows (a stray `"`) is refused.
pub fn read_table(path: &Path, delimiter: u8) -> Result<Table> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let lines = LineIndex::new(&bytes);
    let mut reader = ::csv::ReaderBuilder::new().has_headers(true).delimiter(delimiter).flexible(false).from_reader(bytes.as_slice());
    let headers = reader.headers().map_err(|e| csv_error(path, &lines, e))?.clone();
    if headers.is_empty() || headers.iter().all(|h| h.trim().is_empty()) {
        return Err(Error::data(path, Some(1), "missing header row"));
    }
    let mut records = Vec::new();
    let mut record = ::csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(path, &lines, e)),
        }
        let line = record.position().map(|p| lines.line(p.byte())).unwrap_or(0);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        check_swallowed_rows(path, line, &record, delimiter, headers.len())?;
        records.push((line, record.clone()));
    }
    Ok(Table { headers: headers.iter().map(String::from).collect(), records })
}

/// A field holding a line break followed by a line with as many delimiters as a row has: a
/// stray `"` opened a quoted field that ran on to the next `"`, swallowing rows. Refused in a
/// TSV; a CSV gets a warning, since a quoted multi-line text may hold commas.
fn check_swallowed_rows(path: &Path, line: usize, record: &::csv::StringRecord, delimiter: u8, columns: usize) -> Result<()> {
    if columns < 2 {
        return Ok(());
    }
    let row_like = |l: &str| l.bytes().filter(|&b| b == delimiter).count() + 1 >= columns;
    for field in record.iter() {
        let inner: Vec<&str> = field.split('\n').skip(1).collect();
        let Some(first) = inner.iter().position(|l| row_like(l)) else { continue };
        let rows = inner.iter().filter(|l| row_like(l)).count();
        let message = format!(
            "a quoted field runs over {} lines and holds {rows} that look like rows of their own (the first on line {}); \
             check the quoting: a stray \" opens a field that runs to the next \"",
            inner.len() + 1,
            line + 1 + first
        );
        if delimiter == b'\t' {
            return Err(Error::data(path, Some(line), message));
        }
        eprintln!("warning: {}:{line}: {message}", path.display());
    }
    Ok(())
}

/// Line numbers of byte offsets. (The csv crate's own line count places a record that follows
/// blank lines on the first blank line.)
struct LineIndex<'a> {
    bytes: &'a [u8],
    newlines: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        LineIndex { bytes, newlines: bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i).collect() }
    }

    /// The 1-based line of the first character at or after `offset` that is not a line break.
    fn line(&self, offset: u64) -> usize {
        let mut offset = offset as usize;
        while offset < self.bytes.len() && matches!(self.bytes[offset], b'\n' | b'\r') {
            offset += 1;
        }
        self.newlines.partition_point(|&p| p < offset) + 1
    }

    /// The text of 1-based line `line` (lossy UTF-8).
    fn text(&self, line: usize) -> String {
        let start = if line <= 1 { 0 } else { self.newlines.get(line - 2).map_or(self.bytes.len(), |&p| p + 1) };
        let end = self.newlines.get(line - 1).copied().unwrap_or(self.bytes.len()).max(start);
        String::from_utf8_lossy(&self.bytes[start..end]).into_owned()
    }
}

fn csv_error(path: &Path, lines: &LineIndex, e: ::csv::Error) -> Error {
    let line = e.position().map(|p| lines.line(p.byte()));
    let message = match e.kind() {
        ::csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            let quoted = line.is_some_and(|l| lines.text(l).contains('"'));
            let hint = if quoted { "; check the quoting: a stray \" on this line opens a field that runs to the next \"" } else { "" };
            format!("bad row: {len} fields where the header has {expected_len}{hint}")
        }
        ::csv::ErrorKind::Utf8 { err, .. } => format!("bad row: invalid UTF-8 in field {}", err.field() + 1),
        ::csv::ErrorKind::Io(err) => format!("read error: {err}"),
        _ => format!("bad row: {e}"),
    };
    Error::data(path, line, message)
}

#[cfg(test)]
mod tests {
    use super::super::{Format, LoadOptions, load, test_util::write};
    use super::*;

    #[test]
    fn loads_csv_with_quotes_and_pairs() {
        let content = "\u{feff}id,text,text_pair,label\n\
                       1,\"Hello, world\",,greet\n\
                       \n\
                       2,\"multi\nline\",second,other\n\
                       3,plain,\"\",greet\n";
        let (_dir, path) = write("d.csv", content);
        let ds = load(&path, &LoadOptions::default()).unwrap();
        assert_eq!(
            ds.examples,
            vec![Example::new("Hello, world", "greet"), Example::pair("multi\nline", "second", "other"), Example::new("plain", "greet")]
        );
        let (_, lines) = read(&path, &Columns::default(), b',').unwrap();
        assert_eq!(lines, vec![2, 4, 6]);
    }

    #[test]
    fn tsv_and_custom_columns() {
        let (_dir, path) = write("d.tsv", "sentence\tclass\nthe cat\tanimal\n");
        let columns = Columns { text: "sentence".into(), text_pair: None, label: "class".into() };
        let ds = load(&path, &LoadOptions { columns, ..Default::default() }).unwrap();
        assert_eq!(ds.examples, vec![Example::new("the cat", "animal")]);
        assert_eq!(Format::from_path(&path).unwrap(), Format::Tsv);
    }

    #[test]
    fn bad_row_names_its_line() {
        let (_dir, path) = write("d.csv", "text,label\na,x\nb,y\nc,z,extra\n");
        let err = load(&path, &LoadOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Data { line: Some(4), .. }), "{err:?}");
        assert!(err.to_string().contains("d.csv:4: bad row: 3 fields where the header has 2"), "{err}");
    }

    /// Issue 26: a stray quote in a TSV swallowed 20 of 40 rows, and training went on.
    #[test]
    fn a_stray_quote_that_swallows_rows_is_refused_naming_the_line() {
        let (_dir, path) = write("d.tsv", "text\tlabel\na\tx\n\"b\ty\nc\tz\nd\tx\ne\"\ty\nf\tz\n");
        let err = load(&path, &LoadOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Data { line: Some(3), .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("d.tsv:3:") && msg.contains("check the quoting") && msg.contains("line 4"), "{msg}");
        // A real multi-line text is not a swallowed row.
        let (_dir, path) = write("ok.tsv", "text\tlabel\n\"two\nlines\"\tx\nb\ty\n");
        assert_eq!(load(&path, &LoadOptions::default()).unwrap().examples.len(), 2);
    }

    /// Issue 26 (misleading error 10): `bad row: 1 fields` said nothing about the quote.
    #[test]
    fn a_bad_row_with_a_quote_hints_at_quoting() {
        let (_dir, path) = write("d.tsv", "text\tlabel\na\tx\n\"b\ty\n");
        let msg = load(&path, &LoadOptions::default()).unwrap_err().to_string();
        assert!(msg.contains("d.tsv:3: bad row: 1 fields where the header has 2; check the quoting"), "{msg}");
    }

    #[test]
    fn missing_column_and_empty_label() {
        let (_dir, path) = write("d.csv", "sentence,label\na,x\n");
        let err = load(&path, &LoadOptions::default()).unwrap_err().to_string();
        assert!(err.contains(":1: the header has no column \"text\" (columns: sentence, label)"), "{err}");
        let (_dir, path) = write("e.csv", "text,label\na,x\nb,\n");
        let err = load(&path, &LoadOptions::default()).unwrap_err().to_string();
        assert!(err.contains(":3: empty label"), "{err}");
    }

    #[test]
    fn header_only_is_empty() {
        let (_dir, path) = write("d.csv", "text,label\n");
        let err = load(&path, &LoadOptions::default()).unwrap_err().to_string();
        assert!(err.contains("empty dataset"), "{err}");
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, b"text,label\nok,a\nbad \xff,b\n").unwrap();
        let err = load(&path, &LoadOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Data { line: Some(3), .. }), "{err:?}");
    }
}
