//! Deterministic mutation fuzzing of file parsers: seeded mutations of real files (bit flips,
//! boundary bytes, huge values in length fields, truncations, JSON keys removed, duplicated or
//! retyped), each parsed under `catch_unwind` while a counting allocator watches for absurd
//! allocations. A parse must end in `Ok` or a typed `Err`.
//!
//! `REPLORA_FUZZ_ITERS` (random mutations per file; default [`DEFAULT_ITERS`]) and
//! `REPLORA_FUZZ_SECS` (time budget per file, default none) turn the same tests into a long
//! fuzz run (`scripts/fuzz`); `REPLORA_FUZZ_SEED` changes the seed; `REPLORA_FUZZ_VERBOSE=1`
//! prints each input before it is parsed (to find the input behind an abort).
#![allow(dead_code)]

pub mod gguf;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Display;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const DEFAULT_ITERS: usize = 150;

/// The system allocator, recording the largest single request made on each thread.
pub struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// splitmix64: a tiny seeded generator, so every run mutates the same way.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let extra: u64 = std::env::var("REPLORA_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        Rng(seed ^ extra.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Values a length, count or offset field is overwritten with.
pub fn boundary_u64(original: u64, file_len: usize) -> Vec<u64> {
    let n = file_len as u64;
    vec![
        0,
        1,
        original.wrapping_add(1),
        original.wrapping_sub(1),
        original.wrapping_mul(2),
        n,
        n + 1,
        u32::MAX as u64,
        u32::MAX as u64 + 1,
        1 << 40,
        i64::MAX as u64,
        u64::MAX,
        u64::MAX - 7,
    ]
}

const BOUNDARY_BYTES: [u8; 6] = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF];

/// One random byte-level mutation of `base`; `fields` are offsets of u64 length/count fields.
pub fn mutate_bytes(base: &[u8], fields: &[usize], rng: &mut Rng) -> (Vec<u8>, String) {
    let mut b = base.to_vec();
    if b.is_empty() {
        return (vec![rng.next() as u8], "one random byte".into());
    }
    let len = b.len();
    match rng.below(7) {
        0 => {
            let flips = 1 + rng.below(4);
            let at: Vec<(usize, u8)> = (0..flips).map(|_| (rng.below(len), 1u8 << rng.below(8))).collect();
            for &(i, bit) in &at {
                b[i] ^= bit;
            }
            (b, format!("bit flips {at:?}"))
        }
        1 => {
            let (i, v) = (rng.below(len), *rng.pick(&BOUNDARY_BYTES));
            b[i] = v;
            (b, format!("byte {i} = {v:#04x}"))
        }
        2 | 3 if !fields.is_empty() => {
            let at = *rng.pick(fields);
            let end = (at + 8).min(len);
            let mut raw = [0u8; 8];
            raw[..end - at].copy_from_slice(&b[at..end]);
            let value = *rng.pick(&boundary_u64(u64::from_le_bytes(raw), len));
            b[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
            (b, format!("u64 field at {at} = {value}"))
        }
        4 => {
            let at = rng.below(len);
            b.truncate(at);
            (b, format!("truncated to {at} bytes"))
        }
        5 => {
            let (start, n) = (rng.below(len), 1 + rng.below(64));
            let end = (start + n).min(len);
            b.drain(start..end);
            (b, format!("bytes {start}..{end} removed"))
        }
        _ => {
            let (start, n) = (rng.below(len), 1 + rng.below(64));
            let chunk: Vec<u8> = b[start..(start + n).min(len)].to_vec();
            let at = rng.below(len);
            b.splice(at..at, chunk.iter().copied());
            (b, format!("{} bytes from {start} duplicated at {at}", chunk.len()))
        }
    }
}

/// Values a JSON number or field is replaced with.
fn boundary_json(rng: &mut Rng) -> Value {
    let options = [
        Value::from(0),
        Value::from(-1),
        Value::from(u64::MAX),
        Value::from(i64::MIN),
        Value::from(1u64 << 40),
        serde_json::json!(1e300),
        serde_json::json!(-1e300),
        serde_json::json!(0.5),
        Value::Null,
        Value::from(""),
        Value::from("\u{0}\u{ffff}"),
        serde_json::json!([]),
        serde_json::json!({}),
        Value::Bool(true),
        serde_json::json!([1, -1, 1e300]),
    ];
    rng.pick(&options).clone()
}

/// Paths (object keys / array indices) of every value in `v`.
fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(k.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate().take(8) {
                prefix.push(i.to_string());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at_path<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match v {
        Value::Object(m) => m.get_mut(k).unwrap(),
        Value::Array(items) => &mut items[k.parse::<usize>().unwrap()],
        _ => unreachable!("paths only lead through containers"),
    })
}

/// One structural mutation of a JSON document: a value replaced by a boundary value, a key
/// removed or renamed, an array emptied or its first element repeated.
pub fn mutate_json(base: &Value, rng: &mut Rng) -> (Value, String) {
    let mut v = base.clone();
    let mut all = vec![];
    paths(&v, &mut vec![], &mut all);
    let path = rng.pick(&all).clone();
    let shown = path.join(".");
    let (parent_path, last) = match path.split_last() {
        Some((last, parent)) => (parent.to_vec(), Some(last.clone())),
        None => (vec![], None),
    };
    match rng.below(4) {
        0 | 1 => {
            let new = boundary_json(rng);
            let desc = format!("{shown} = {new}");
            *at_path(&mut v, &path) = new;
            (v, desc)
        }
        2 => {
            if let (Value::Object(m), Some(k)) = (at_path(&mut v, &parent_path), &last) {
                m.remove(k);
                return (v, format!("key {shown} removed"));
            }
            (v, "nothing removed".into())
        }
        _ => match at_path(&mut v, &path) {
            Value::Array(items) if !items.is_empty() => {
                let first = items[0].clone();
                items.extend(std::iter::repeat_n(first, 3));
                (v, format!("{shown}[0] repeated"))
            }
            Value::Array(_) => (v, "empty array kept".into()),
            other => {
                *other = Value::from(other.to_string());
                (v, format!("{shown} turned into a string"))
            }
        },
    }
}

/// A JSON text with one key written twice (serde_json keeps the last), or the text cut short.
pub fn mutate_json_text(base: &str, rng: &mut Rng) -> (String, String) {
    if rng.below(2) == 0 {
        let at = rng.below(base.len());
        let at = (0..=at).rev().find(|&i| base.is_char_boundary(i)).unwrap_or(0);
        return (base[..at].to_string(), format!("text truncated to {at} bytes"));
    }
    match base.find("{\"").or_else(|| base.find("{\n")) {
        Some(open) => {
            let dup = "\"r\": 1e400, \"peft_type\": 7, \"epoch\": -1, ";
            let mut s = base.to_string();
            s.insert_str(open + 1, dup);
            (s, "keys duplicated with bad values".into())
        }
        None => (base.to_string(), "unchanged".into()),
    }
}

/// Runs parses of mutated inputs and records any panic or absurd allocation.
pub struct Campaign {
    pub name: String,
    failures: Vec<String>,
    pub parsed: usize,
    pub rejected: usize,
    pub accepted: usize,
    largest_ok_alloc: usize,
    verbose: bool,
}

impl Campaign {
    pub fn new(name: &str) -> Self {
        let verbose = std::env::var("REPLORA_FUZZ_VERBOSE").is_ok_and(|v| v == "1");
        Campaign { name: name.into(), failures: vec![], parsed: 0, rejected: 0, accepted: 0, largest_ok_alloc: 0, verbose }
    }

    /// Parses one input. `limit` bounds the largest single allocation (bytes).
    pub fn parse<T, E: Display>(&mut self, input: &str, limit: usize, f: impl FnOnce() -> Result<T, E>) {
        if self.verbose {
            eprintln!("[{}] {input}", self.name);
        }
        LARGEST.with(|l| l.set(0));
        let outcome = catch_unwind(AssertUnwindSafe(f));
        let largest = LARGEST.with(|l| l.get());
        self.parsed += 1;
        match outcome {
            Err(panic) => {
                let msg = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                self.failures.push(format!("{input}: PANIC {}", msg.unwrap_or_default()));
            }
            Ok(Ok(_)) => self.accepted += 1,
            Ok(Err(e)) => {
                self.rejected += 1;
                if e.to_string().trim().is_empty() {
                    self.failures.push(format!("{input}: empty error message"));
                }
            }
        }
        if largest > limit {
            self.failures.push(format!("{input}: allocated {largest} bytes at once (limit {limit})"));
        }
        self.largest_ok_alloc = self.largest_ok_alloc.max(largest);
    }

    /// Fails the test with every recorded failure.
    pub fn finish(self) {
        eprintln!(
            "{}: {} inputs, {} accepted, {} rejected with an error, largest allocation {} bytes",
            self.name, self.parsed, self.accepted, self.rejected, self.largest_ok_alloc
        );
        assert!(self.rejected > 0, "{}: no mutated input was rejected; the harness is not mutating", self.name);
        if !self.failures.is_empty() {
            let shown: Vec<&String> = self.failures.iter().take(20).collect();
            panic!(
                "{}: {} failures, e.g.\n{}",
                self.name,
                self.failures.len(),
                shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// How many random mutations to try per file, and until when.
pub struct Budget {
    iters: usize,
    deadline: Option<Instant>,
}

impl Budget {
    pub fn from_env(default_iters: usize) -> Self {
        let iters = std::env::var("REPLORA_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_iters);
        let secs: Option<u64> = std::env::var("REPLORA_FUZZ_SECS").ok().and_then(|s| s.parse().ok());
        Budget { iters, deadline: secs.map(|s| Instant::now() + Duration::from_secs(s)) }
    }
    /// Whether there is time left.
    pub fn open(&self) -> bool {
        self.deadline.is_none_or(|d| Instant::now() < d)
    }
    pub fn iterations(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.iters).take_while(|_| self.open())
    }
    /// A step such that truncating at every `step`-th offset gives about `cuts` inputs (512
    /// in a timed run, which leaves most of its time to random mutations).
    pub fn truncation_step(&self, len: usize, cuts: usize) -> usize {
        let cuts = if self.deadline.is_some() { 512 } else { cuts };
        (len / cuts.max(1)).max(1)
    }
}

/// Copies `dir` (flat) to `to`, replacing `file` by `bytes`.
pub fn copy_with(dir: &Path, to: &Path, file: &str, bytes: &[u8]) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(to.join(file), bytes).unwrap();
}

/// The offset of the u64 header-length field of a safetensors file (the JSON header's own
/// numbers are mutated structurally by [`mutate_safetensors_header`]).
pub const SAFETENSORS_FIELDS: [usize; 1] = [0];

fn header_len(bytes: &[u8]) -> usize {
    bytes.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()) as usize).min(bytes.len().saturating_sub(8))
}

/// The safetensors file with its JSON header mutated structurally (length field kept right).
pub fn mutate_safetensors_header(bytes: &[u8], rng: &mut Rng) -> (Vec<u8>, String) {
    let n = header_len(bytes);
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).expect("a real safetensors header");
    let (header, desc) = mutate_json(&header, rng);
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    (out, format!("header {desc}"))
}
