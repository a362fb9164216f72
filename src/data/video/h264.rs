//! H.264 in MP4: reading every frame of a `.mp4` file as RGB, and writing RGB frames as one.
//!
//! The container is parsed by the `mp4` crate and the video decoded (and encoded) by Cisco's
//! OpenH264, which the `openh264` crate compiles from source with the C compiler: a fresh clone
//! needs no system package. MP4 keeps H.264 as length-prefixed NAL units with the parameter sets
//! in the `avcC` box; OpenH264 reads and writes Annex-B start codes, so both directions convert.

use std::io::Cursor;
use std::path::Path;

use image::RgbImage;
use openh264::OpenH264API;
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig};
use openh264::encoder::{Encoder, EncoderConfig, FrameType, QpRange, RateControlMode};
use openh264::formats::{RgbSliceU8, YUVBuffer, YUVSource};

use crate::{Error, Result};

const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// NAL unit types of the sequence and picture parameter sets.
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
/// MP4 time units per second of the written files' track, and per frame (8 frames a second).
const TIMESCALE: u32 = 8000;
const FRAME_TICKS: u32 = 1000;
/// The quantizer of written files: fine enough that decoded frames are within a few levels of
/// the originals (the synthetic clips' motion must survive compression).
const WRITE_QP: u8 = 14;

/// Decodes every frame of an H.264 `.mp4` file, in presentation order. Errors name the file: not
/// an MP4, no H.264 video track, a corrupt or truncated stream, no frames.
pub fn read_mp4(path: &Path) -> Result<Vec<RgbImage>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    // The container parser and the decoder get untrusted bytes: a panic inside either is this
    // file's error, not the run's end.
    match std::panic::catch_unwind(|| decode_mp4(&bytes)) {
        Ok(result) => result.map_err(|m| Error::data(path, None, m)),
        Err(_) => Err(Error::data(path, None, "cannot decode the MP4 file (corrupt or truncated)")),
    }
}

fn decode_mp4(bytes: &[u8]) -> std::result::Result<Vec<RgbImage>, String> {
    let mut reader = mp4::Mp4Reader::read_header(Cursor::new(bytes), bytes.len() as u64)
        .map_err(|e| format!("not a readable MP4 file (corrupt or truncated?): {e}"))?;
    let (track_id, stream, samples) = parameter_sets(&reader)?;
    if samples == 0 {
        return Err("the video track has no frames".into());
    }
    let config = DecoderConfig::new();
    let mut decoder = Decoder::with_api_config(OpenH264API::from_source(), config).map_err(|e| format!("OpenH264: {e}"))?;
    decoder.decode(&stream).map_err(|e| format!("corrupt H.264 parameter sets: {e}"))?;
    let mut frames = Vec::with_capacity(samples as usize);
    for sample_id in 1..=samples {
        let sample = reader
            .read_sample(track_id, sample_id)
            .map_err(|e| format!("frame {sample_id} of {samples} cannot be read (truncated file?): {e}"))?
            .ok_or_else(|| format!("frame {sample_id} of {samples} is missing (truncated file?)"))?;
        let annex_b = length_prefixed_to_annex_b(&sample.bytes).map_err(|m| format!("frame {sample_id}: {m}"))?;
        let decoded = decoder.decode(&annex_b).map_err(|e| format!("frame {sample_id} of {samples} is corrupt: {e}"))?;
        if let Some(picture) = decoded {
            frames.push(to_rgb(&picture)?);
        }
    }
    let rest = decoder.flush_remaining().map_err(|e| format!("the last frames are corrupt: {e}"))?;
    for picture in rest {
        frames.push(to_rgb(&picture)?);
    }
    if frames.is_empty() {
        return Err(format!("no frame decodes out of the track's {samples} samples"));
    }
    Ok(frames)
}

/// The first video track's id, its parameter sets as an Annex-B stream, and its sample count.
fn parameter_sets<R: std::io::Read + std::io::Seek>(reader: &mp4::Mp4Reader<R>) -> std::result::Result<(u32, Vec<u8>, u32), String> {
    let mut video: Vec<(u32, &mp4::Mp4Track)> =
        reader.tracks().iter().filter(|(_, t)| t.track_type().ok() == Some(mp4::TrackType::Video)).map(|(id, t)| (*id, t)).collect();
    video.sort_by_key(|(id, _)| *id);
    let Some(&(track_id, track)) = video.first() else {
        return Err("the MP4 file has no video track".into());
    };
    if track.media_type().ok() != Some(mp4::MediaType::H264) {
        let kind = track.box_type().map(|b| b.to_string()).unwrap_or_else(|_| "unknown".into());
        return Err(format!("the video track is {kind}, not H.264 (avc1): only H.264 MP4 files are read"));
    }
    let mut stream = Vec::new();
    for set in [track.sequence_parameter_set(), track.picture_parameter_set()] {
        let set = set.map_err(|e| format!("the H.264 track lacks its parameter sets: {e}"))?;
        stream.extend_from_slice(&START_CODE);
        stream.extend_from_slice(set);
    }
    Ok((track_id, stream, track.sample_count()))
}

fn to_rgb(picture: &DecodedYUV<'_>) -> std::result::Result<RgbImage, String> {
    let (w, h) = picture.dimensions();
    if w == 0 || h == 0 {
        return Err("a decoded frame is empty".into());
    }
    let mut rgb = vec![0u8; w * h * 3];
    picture.write_rgb8(&mut rgb);
    RgbImage::from_raw(w as u32, h as u32, rgb).ok_or_else(|| "a decoded frame has the wrong size".to_string())
}

/// MP4 sample bytes (NAL units, each after a 4-byte big-endian length) as an Annex-B stream.
fn length_prefixed_to_annex_b(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut at = 0;
    while at < bytes.len() {
        let Some(len) = bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) else {
            return Err("a NAL unit length is cut off".into());
        };
        let unit = bytes.get(at + 4..at + 4 + len).ok_or("a NAL unit is cut off (truncated file?)")?;
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(unit);
        at += 4 + len;
    }
    Ok(out)
}

/// The NAL units of an Annex-B stream (start codes of 3 or 4 bytes removed).
fn annex_b_units(data: &[u8]) -> Vec<&[u8]> {
    let mut units = Vec::new();
    let (mut i, mut start) = (0, None);
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(s) = start {
                let mut end = i;
                while end > s && data[end - 1] == 0 {
                    end -= 1;
                }
                units.push(&data[s..end]);
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start.filter(|&s| s < data.len()) {
        units.push(&data[s..]);
    }
    units
}

/// Encodes `frames` (all the same size, even sides) as an H.264 `.mp4` file at 8 frames a
/// second, every frame kept (no rate-control skips), at a fixed fine quantizer.
pub fn write_mp4(path: &Path, frames: &[RgbImage]) -> Result<()> {
    let bytes = encode_mp4(frames).map_err(|m| Error::data(path, None, m))?;
    crate::files::write_atomic(path, &bytes)
}

fn encode_mp4(frames: &[RgbImage]) -> std::result::Result<Vec<u8>, String> {
    let Some(first) = frames.first() else { return Err("no frames to write".into()) };
    let (w, h) = first.dimensions();
    if w % 2 == 1 || h % 2 == 1 || frames.iter().any(|f| f.dimensions() != (w, h)) {
        return Err(format!("frames must share one size with even sides; the first is {w}x{h}"));
    }
    let config = EncoderConfig::new().skip_frames(false).rate_control_mode(RateControlMode::Off).qp(QpRange::new(WRITE_QP, WRITE_QP));
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config).map_err(|e| format!("OpenH264: {e}"))?;
    let (mut sps, mut pps, mut samples) = (None, None, Vec::new());
    for frame in frames {
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(frame.as_raw(), (w as usize, h as usize)));
        let encoded = encoder.encode(&yuv).map_err(|e| format!("OpenH264 cannot encode a frame: {e}"))?;
        let is_sync = matches!(encoded.frame_type(), FrameType::IDR | FrameType::I);
        let stream = encoded.to_vec();
        let mut sample = Vec::new();
        for unit in annex_b_units(&stream).into_iter().filter(|u| !u.is_empty()) {
            match unit[0] & 0x1f {
                NAL_SPS => sps = Some(unit.to_vec()),
                NAL_PPS => pps = Some(unit.to_vec()),
                _ => {
                    sample.extend_from_slice(&(unit.len() as u32).to_be_bytes());
                    sample.extend_from_slice(unit);
                }
            }
        }
        samples.push((sample, is_sync));
    }
    let (Some(sps), Some(pps)) = (sps, pps) else { return Err("the encoder wrote no parameter sets".into()) };
    let brand = |b: &str| b.parse::<mp4::FourCC>().expect("four ASCII letters");
    let mp4_config = mp4::Mp4Config {
        major_brand: brand("isom"),
        minor_version: 512,
        compatible_brands: vec![brand("isom"), brand("avc1")],
        timescale: 1000,
    };
    let mut out = Cursor::new(Vec::new());
    let mut writer = mp4::Mp4Writer::write_start(&mut out, &mp4_config).map_err(|e| e.to_string())?;
    let avc = mp4::AvcConfig { width: w as u16, height: h as u16, seq_param_set: sps, pic_param_set: pps };
    let track = mp4::TrackConfig {
        track_type: mp4::TrackType::Video,
        timescale: TIMESCALE,
        language: "und".into(),
        media_conf: mp4::MediaConfig::AvcConfig(avc),
    };
    writer.add_track(&track).map_err(|e| e.to_string())?;
    for (i, (bytes, is_sync)) in samples.into_iter().enumerate() {
        let sample = mp4::Mp4Sample {
            start_time: i as u64 * u64::from(FRAME_TICKS),
            duration: FRAME_TICKS,
            rendering_offset: 0,
            is_sync,
            bytes: bytes.into(),
        };
        writer.write_sample(1, &sample).map_err(|e| e.to_string())?;
    }
    writer.write_end().map_err(|e| e.to_string())?;
    drop(writer);
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annex_b_and_length_prefixes_round_trip() {
        let stream = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5, 6];
        let units = annex_b_units(&stream);
        assert_eq!(units, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5, 6]]);
        let mut prefixed = Vec::new();
        for u in &units {
            prefixed.extend((u.len() as u32).to_be_bytes());
            prefixed.extend(*u);
        }
        let back = length_prefixed_to_annex_b(&prefixed).unwrap();
        assert_eq!(annex_b_units(&back), units);
        assert!(length_prefixed_to_annex_b(&prefixed[..prefixed.len() - 1]).unwrap_err().contains("cut off"));
    }
}
