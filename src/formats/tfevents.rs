//! TensorBoard's event files (`events.out.tfevents.*`), written with `prost` and no TensorFlow:
//! a sequence of records, each `length (u64 LE) | masked CRC32C of the length (u32 LE) | data |
//! masked CRC32C of the data (u32 LE)`, where the data is one protobuf `Event` (TensorFlow's
//! `tensorflow/core/util/event.proto`). The first event of a file names its format
//! (`file_version: "brain.Event:2"`); each later one holds scalars (`Summary.Value.simple_value`,
//! which TensorBoard shows under its Scalars tab).
//!
//! The messages below declare only the fields replora writes and reads; protobuf decoders skip
//! the others, so TensorBoard reads these files and this module reads TensorBoard's own.

use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};

/// `Event` of event.proto: `file_version` and `summary` are members of a `oneof` there, which is
/// on the wire the same as two optional fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `Summary` of summary.proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `Summary.Value`: a tag and, for a scalar, its `simple_value` (a `oneof` member in the proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// The format an event file's first event names.
pub const FILE_VERSION: &str = "brain.Event:2";

impl Event {
    /// The first event of a file.
    pub fn version_record(wall_time: f64) -> Self {
        Event { wall_time, step: 0, file_version: Some(FILE_VERSION.into()), summary: None }
    }

    /// Scalars logged at `step` (TensorBoard keeps them as 32-bit floats).
    pub fn scalars(wall_time: f64, step: u64, scalars: &[(String, f64)]) -> Self {
        let value = scalars.iter().map(|(tag, v)| SummaryValue { tag: tag.clone(), simple_value: Some(*v as f32) }).collect();
        Event { wall_time, step: step as i64, file_version: None, summary: Some(Summary { value }) }
    }

    /// The event's scalars, `(tag, value)`.
    pub fn scalar_values(&self) -> impl Iterator<Item = (&str, f32)> {
        self.summary.iter().flat_map(|s| &s.value).filter_map(|v| Some((v.tag.as_str(), v.simple_value?)))
    }

    /// The event as one framed record.
    pub fn record(&self) -> Vec<u8> {
        frame(&self.encode_to_vec())
    }
}

/// CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`), one table entry per byte value.
const CRC32C_TABLE: [u32; 256] = crc32c_table();

const fn crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

/// The CRC-32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| CRC32C_TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8))
}

/// The CRC as TFRecord stores it: rotated right by 15 bits plus a constant, so that a CRC of
/// data that holds CRCs stays well distributed.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    crc32c(bytes).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One record around `data`.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut record = Vec::with_capacity(data.len() + 16);
    record.extend_from_slice(&length);
    record.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
    record.extend_from_slice(data);
    record.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    record
}

/// The data of the whole, intact records at the start of `bytes`, and how many bytes they take.
/// Reading stops at a record cut short (a process killed while writing it) or one whose CRCs
/// do not match.
pub fn unframe(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut records = vec![];
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 12) {
        let (length, length_crc) = header.split_at(8);
        if masked_crc32c(length) != u32::from_le_bytes(length_crc.try_into().expect("4 bytes")) {
            break;
        }
        let Ok(n) = usize::try_from(u64::from_le_bytes(length.try_into().expect("8 bytes"))) else { break };
        let Some(end) = (at + 12).checked_add(n).filter(|&end| end.checked_add(4).is_some_and(|e| e <= bytes.len())) else {
            break;
        };
        let data = &bytes[at + 12..end];
        if masked_crc32c(data) != u32::from_le_bytes(bytes[end..end + 4].try_into().expect("4 bytes")) {
            break;
        }
        records.push(data);
        at = end + 4;
    }
    (records, at)
}

/// The events of an event file: those of its intact records (see [`unframe`]). A record whose
/// data is not an `Event` is an error naming the file.
pub fn read(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    unframe(&bytes)
        .0
        .into_iter()
        .map(|data| Event::decode(data).map_err(|e| Error::format(path, format!("not a TensorBoard event: {e}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check value of CRC-32C (`123456789`, as CRC catalogues give it) and the three vectors of
    /// RFC 3720, appendix B.4 (there as little-endian bytes).
    #[test]
    fn crc32c_matches_the_published_check_values() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        assert_eq!(crc32c(b""), 0);
        // TFRecord's mask, rotate right by 15 and add 0xa282ead8, worked out by hand.
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn records_frame_and_unframe_and_a_cut_or_corrupt_tail_is_dropped() {
        let events = [Event::version_record(1.5), Event::scalars(2.0, 7, &[("train/loss".into(), 0.25), ("train/lr".into(), 0.0)])];
        let mut bytes: Vec<u8> = events.iter().flat_map(Event::record).collect();
        let whole = bytes.len();
        // The first record: 8 bytes of length, its CRC, the data, the data's CRC.
        let data = events[0].encode_to_vec();
        assert_eq!(bytes[..8], (data.len() as u64).to_le_bytes());
        assert_eq!(bytes[8..12], masked_crc32c(&bytes[..8]).to_le_bytes());
        assert_eq!(bytes[12 + data.len()..16 + data.len()], masked_crc32c(&data).to_le_bytes());

        let (records, used) = unframe(&bytes);
        assert_eq!(used, whole);
        let decoded: Vec<Event> = records.into_iter().map(|r| Event::decode(r).unwrap()).collect();
        assert_eq!(decoded, events);
        assert_eq!(decoded[1].scalar_values().collect::<Vec<_>>(), [("train/loss", 0.25), ("train/lr", 0.0)]);

        bytes.extend_from_slice(&Event::scalars(3.0, 8, &[("train/loss".into(), 0.5)]).record()[..20]);
        assert_eq!(unframe(&bytes), (unframe(&bytes[..whole]).0, whole), "a record cut short is not read");
        let mut corrupt = bytes[..whole].to_vec();
        corrupt[whole - 6] ^= 1;
        assert_eq!(unframe(&corrupt).0.len(), 1, "a record whose data's CRC differs is not read");
    }
}
