//! The IDX file format of (Fashion-)MNIST: a 4-byte magic (`0x00 0x00`, the element type
//! `0x08` = unsigned byte, the number of dimensions), one big-endian `u32` per dimension, then
//! the elements in row-major order. Labels are `0x00000801` (`[n]`), images `0x00000803`
//! (`[n, rows, cols]`). Files ending in `.gz` are gunzipped first.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// An IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file (gzipped when its name ends in `.gz`) and checks that it has `ndims`
/// dimensions.
pub(super) fn read(path: &Path, ndims: usize) -> Result<Idx> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    let gz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let read = if gz {
        flate2::read::GzDecoder::new(std::io::BufReader::new(file)).read_to_end(&mut bytes)
    } else {
        std::io::BufReader::new(file).read_to_end(&mut bytes)
    };
    read.map_err(|e| Error::data(path, None, format!("cannot read the IDX file (corrupt gzip?): {e}")))?;
    parse(&bytes, ndims).map_err(|m| Error::data(path, None, m))
}

/// Parses IDX bytes with `ndims` dimensions.
pub(super) fn parse(bytes: &[u8], ndims: usize) -> std::result::Result<Idx, String> {
    let [0, 0, kind, n] = *bytes.get(..4).ok_or("not an IDX file: shorter than its 4-byte magic number")? else {
        return Err(format!("not an IDX file: magic number {:02x?} does not start with 00 00", &bytes[..4]));
    };
    if kind != 0x08 {
        return Err(format!("IDX element type 0x{kind:02x} is not supported (only 0x08, unsigned bytes)"));
    }
    if usize::from(n) != ndims {
        return Err(format!("IDX file has {n} dimensions, expected {ndims} (magic 0x0000080{n})"));
    }
    let header = 4 + 4 * ndims;
    let dims_bytes = bytes.get(4..header).ok_or_else(|| format!("IDX header truncated: {} bytes, need {header}", bytes.len()))?;
    let dims: Vec<usize> = dims_bytes.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let len = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or("IDX dimensions overflow")?;
    let data = &bytes[header..];
    if data.len() != len {
        return Err(format!("IDX dimensions {dims:?} need {len} bytes of data, the file has {}", data.len()));
    }
    Ok(Idx { dims, data: data.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn images_file(n: u32, rows: u32, cols: u32, data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, 3];
        for d in [n, rows, cols] {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn parses_labels_and_images() {
        let labels = [0, 0, 8, 1, 0, 0, 0, 3, 9, 0, 4];
        assert_eq!(parse(&labels, 1).unwrap(), Idx { dims: vec![3], data: vec![9, 0, 4] });
        let pixels: Vec<u8> = (0..12).collect();
        let idx = parse(&images_file(2, 3, 2, &pixels), 3).unwrap();
        assert_eq!(idx.dims, vec![2, 3, 2]);
        assert_eq!(idx.data, pixels);
    }

    #[test]
    fn reads_gzipped_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-images-idx3-ubyte.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&images_file(1, 2, 2, &[1, 2, 3, 4])).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        assert_eq!(read(&path, 3).unwrap().data, vec![1, 2, 3, 4]);
        std::fs::write(&path, b"not gzip").unwrap();
        let err = read(&path, 3).unwrap_err().to_string();
        assert!(err.contains("t-images-idx3-ubyte.gz") && err.contains("cannot read the IDX file"), "{err}");
    }

    #[test]
    fn bad_headers_and_lengths_are_errors() {
        assert!(parse(&[0, 0], 1).unwrap_err().contains("shorter"));
        assert!(parse(&[1, 2, 8, 1, 0, 0, 0, 0], 1).unwrap_err().contains("magic"));
        assert!(parse(&[0, 0, 0x0d, 1, 0, 0, 0, 0], 1).unwrap_err().contains("element type 0x0d"));
        assert!(parse(&[0, 0, 8, 1, 0, 0, 0, 0], 3).unwrap_err().contains("1 dimensions, expected 3"));
        assert!(parse(&[0, 0, 8, 3, 0, 0], 3).unwrap_err().contains("header truncated"));
        let err = parse(&images_file(2, 2, 2, &[0; 7]), 3).unwrap_err();
        assert!(err.contains("need 8 bytes") && err.contains("has 7"), "{err}");
    }
}
