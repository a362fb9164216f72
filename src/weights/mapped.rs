//! A safetensors checkpoint read on demand: the files stay memory-mapped and each tensor is
//! decoded when a model takes it, then its pages are given back. So a model built from it peaks
//! at what it keeps plus one tensor, and a linear converted on the way in (`--quantize q4_0`
//! from an f32 file) never exists as a whole f32 copy.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::HostTensor;
use crate::error::{Error, Result};
use crate::progress::{Bar, Kind};
use crate::quantization::{BLOCK, BlockFormat, QuantizedMatrix};

/// How a checkpoint's matrices are held when a model takes them as matrices to multiply with
/// (its linears, a decoder's embedding): other tensors are always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matrices {
    /// Widened to f32.
    Widened,
    /// F16 and BF16 matrices whose rows are whole blocks of [`BLOCK`] values stay as stored
    /// (2 bytes a weight); others are f32.
    Stored,
    /// Every float matrix whose rows are whole blocks converted to this format as it is read.
    Converted(BlockFormat),
}

/// One tensor of a mapped file: where its bytes are, and what they hold.
#[derive(Clone, Debug)]
struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    len: usize,
}

/// Checkpoints of at least this many bytes show a progress bar while a model takes their
/// tensors (a 7B model's bf16 file takes tens of seconds to convert, more from a cold disk).
const PROGRESS_FROM: u64 = 1 << 30;

/// A bar for loading `total` bytes of tensors from `path`: hidden below [`PROGRESS_FROM`].
pub(crate) fn loading_bar(total: u64, path: &Path) -> Bar {
    match total >= PROGRESS_FROM {
        true => Bar::new(Kind::Bytes, total, format!("loading {}", path.display())),
        false => Bar::hidden(),
    }
}

/// The tensors of one or more mapped safetensors files (a model's shards), taken out one by one.
pub struct MappedCheckpoint {
    files: Vec<(PathBuf, memmap2::Mmap)>,
    entries: BTreeMap<String, Entry>,
    metadata: HashMap<String, String>,
    /// The file errors name: the one file, or a sharded model's index.
    named: PathBuf,
    /// Bytes of all its tensors, and the bar that shows how many have been taken
    /// ([`MappedCheckpoint::progress`]).
    total: u64,
    bar: Bar,
}

impl MappedCheckpoint {
    /// Maps `path` and reads its header (tensor names, dtypes, shapes and offsets, checked).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_shards(&[path.to_path_buf()], path)
    }

    /// Every shard of a sharded model, in one checkpoint whose errors name `index`; the caller
    /// checks the shards against the index.
    pub(crate) fn open_shards(shards: &[PathBuf], index: &Path) -> Result<Self> {
        let mut checkpoint = Self {
            files: vec![],
            entries: BTreeMap::new(),
            metadata: HashMap::new(),
            named: index.to_path_buf(),
            total: 0,
            bar: Bar::hidden(),
        };
        for shard in shards {
            checkpoint.add_file(shard)?;
        }
        checkpoint.total = checkpoint.entries.values().map(|e| e.len as u64).sum();
        checkpoint.bar = loading_bar(checkpoint.total, index);
        Ok(checkpoint)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let bytes = crate::files::map(path)?;
        let file = SafeTensors::deserialize(&bytes).map_err(|e| Error::format(path, format!("not a valid safetensors file ({e})")))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| Error::format(path, e))?;
        let index = self.files.len();
        for (name, view) in file.tensors() {
            let start = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
            let entry = Entry { file: index, dtype: view.dtype(), shape: view.shape().to_vec(), start, len: view.data().len() };
            if self.entries.insert(name.clone(), entry).is_some() {
                return Err(Error::format(path, format!("tensor {name} is also in another shard")));
            }
        }
        self.metadata.extend(meta.metadata().clone().unwrap_or_default());
        self.files.push((path.to_path_buf(), bytes));
        Ok(())
    }

    /// The file errors name.
    pub fn path(&self) -> &Path {
        &self.named
    }

    /// The files' `__metadata__`.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The names of the tensors not taken yet.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    /// The names of the tensors of one file (a shard), as mapped.
    pub(crate) fn names_in(&self, file: &Path) -> Vec<&String> {
        let index = self.files.iter().position(|(p, _)| p == file);
        self.entries.iter().filter(|(_, e)| Some(e.file) == index).map(|(n, _)| n).collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Forgets `name` without reading it; whether it was there.
    pub fn discard(&mut self, name: &str) -> bool {
        let found = self.entries.remove(name).is_some();
        self.bar.set_position(self.progress().0);
        found
    }

    /// Bytes of the tensors taken or discarded so far, and of all of them.
    pub fn progress(&self) -> (u64, u64) {
        let left: u64 = self.entries.values().map(|e| e.len as u64).sum();
        (self.total - left, self.total)
    }

    /// The tensor `name` in f32 (F32, F64, F16 and BF16, and I64/I32 values f32 holds exactly),
    /// if the file has it; its pages are given back once read.
    pub fn take_f32(&mut self, name: &str) -> Result<Option<HostTensor>> {
        let Some(entry) = self.entries.remove(name) else { return Ok(None) };
        let (path, raw) = self.bytes(&entry);
        let data: Vec<f32> = match (entry.dtype, float_width(entry.dtype)) {
            (dtype, Some(width)) => {
                // A piece at a time, each piece's pages given back once read: the file's bytes and
                // the values are not both held whole.
                let mut out = Vec::with_capacity(raw.len() / width);
                for part in raw.chunks(width << 20) {
                    widen_into(dtype, part, &mut out);
                    crate::files::release(&self.files[entry.file].1, part);
                }
                out
            }
            (Dtype::I64, _) => ints(path, name, raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())))?,
            (Dtype::I32, _) => ints(path, name, raw.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()).into()))?,
            (other, _) => return Err(Error::format(path, format!("tensor {name} has unsupported dtype {other:?}"))),
        };
        self.finish_reading(&entry);
        Ok(Some(HostTensor { shape: entry.shape, data }))
    }

    /// The matrix `name` held as `matrices` says, or `None` where it stays f32 (or is absent):
    /// widened, a 16-bit matrix kept as stored, or a float matrix converted to blocks a few rows
    /// at a time. Only a 2-D matrix whose rows are whole blocks is kept or converted.
    pub fn take_matrix(&mut self, name: &str, matrices: Matrices) -> Result<Option<QuantizedMatrix>> {
        let Some(entry) = self.entries.get(name) else { return Ok(None) };
        let sixteen = match entry.dtype {
            Dtype::F16 => Some(BlockFormat::F16),
            Dtype::BF16 => Some(BlockFormat::Bf16),
            _ => None,
        };
        let (rows, cols, width) = match (&entry.shape[..], float_width(entry.dtype)) {
            (&[rows, cols], Some(width)) if cols.is_multiple_of(BLOCK) => (rows, cols, width),
            _ => return Ok(None),
        };
        let target = match (matrices, sixteen) {
            (Matrices::Widened, _) | (Matrices::Stored, None) => return Ok(None),
            (Matrices::Stored, Some(format)) | (Matrices::Converted(format), _) => format,
        };
        let entry = self.entries.remove(name).expect("looked up above");
        let (path, raw) = self.bytes(&entry);
        let what = format!("{}: tensor {name}", path.display());
        let map = &self.files[entry.file].1;
        let matrix = match sixteen == Some(target) {
            true => QuantizedMatrix::from_blocks_with(target, rows, cols, raw, &what, |part| crate::files::release(map, part)),
            false => QuantizedMatrix::quantize_rows(target, rows, cols, &what, |range, out| {
                let part = &raw[range.start * cols * width..range.end * cols * width];
                widen_into(entry.dtype, part, out);
                crate::files::release(map, part);
                Ok(())
            }),
        };
        self.finish_reading(&entry);
        matrix.map(Some)
    }

    fn bytes(&self, entry: &Entry) -> (&Path, &[u8]) {
        let (path, map) = &self.files[entry.file];
        (path, &map[entry.start..entry.start + entry.len])
    }

    /// Gives `entry`'s pages back once its tensor is read, and moves the bar to what is read.
    fn finish_reading(&self, entry: &Entry) {
        let (_, raw) = self.bytes(entry);
        crate::files::release(&self.files[entry.file].1, raw);
        self.bar.set_position(self.progress().0);
    }
}

impl Drop for MappedCheckpoint {
    fn drop(&mut self) {
        self.bar.finish();
    }
}

/// Bytes per value of a float dtype.
fn float_width(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::F64 => Some(8),
        Dtype::F32 => Some(4),
        Dtype::F16 | Dtype::BF16 => Some(2),
        _ => None,
    }
}

/// Appends the values of `raw`, little-endian floats of `dtype`, to `out` as f32.
fn widen_into(dtype: Dtype, raw: &[u8], out: &mut Vec<f32>) {
    match dtype {
        Dtype::F32 => out.extend(raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()))),
        Dtype::F64 => out.extend(raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)),
        Dtype::F16 => out.extend(raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
        Dtype::BF16 => out.extend(raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        other => unreachable!("{other:?} is no float dtype"),
    }
}

/// Integer values as f32, refusing any that f32 cannot hold exactly (beyond 2^24).
fn ints(path: &Path, name: &str, values: impl Iterator<Item = i64>) -> Result<Vec<f32>> {
    values
        .map(|v| {
            if v.unsigned_abs() <= 1 << 24 {
                Ok(v as f32)
            } else {
                Err(Error::format(path, format!("integer tensor {name} holds {v}, which f32 cannot represent exactly")))
            }
        })
        .collect()
}
