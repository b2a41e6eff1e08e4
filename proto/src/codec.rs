//! Binary encoding of a [`Snapshot`].
//!
//! ```text
//! snapshot := "ZHSN" version:u16 reserved:u16 body
//! body     := postcard (serde) encoding of `Snapshot`, nothing after it
//! ```
//!
//! The body is written and read by the serde derives on the snapshot types, so a type's
//! encoding lives with its definition and a new field is one line (and a version bump).
//! postcard is compact (varint integers, length-prefixed strings and sequences) and decodes
//! a 10,000-cluster snapshot faster than the hand-written codec it replaced (bench/RESULTS.md,
//! "Snapshot codec").
//!
//! The decoder treats its input as untrusted (a torn or corrupted shared-memory slot must be
//! refused, never trusted): postcard bounds every length by the bytes that remain, serde
//! caps what it reserves ahead for a sequence, trailing bytes are an error, and the decoded
//! snapshot must pass [`Snapshot::validate`] (cluster ids in range, weights above zero,
//! terminal filters last, ...).

use std::fmt;

use crate::snapshot::*;

const MAGIC: &[u8; 4] = b"ZHSN";
/// Bumped on any change to the snapshot types (their serde encoding is the layout).
pub const FORMAT_VERSION: u16 = 25;

/// Why a byte string is not a valid snapshot. Always the writer's (or the memory's) fault;
/// the reader keeps its previous configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub what: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid snapshot: {}", self.what)
    }
}

impl std::error::Error for DecodeError {}

fn err(what: impl Into<String>) -> DecodeError {
    DecodeError { what: what.into() }
}

pub fn encode(s: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    postcard::to_extend(s, out).expect("a snapshot always serializes")
}

pub fn decode(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
    let Some((header, body)) = bytes.split_first_chunk::<8>() else {
        return Err(err("truncated header"));
    };
    if &header[..4] != MAGIC {
        return Err(err("bad magic"));
    }
    if u16::from_le_bytes([header[4], header[5]]) != FORMAT_VERSION {
        return Err(err("unsupported format version"));
    }
    let (snapshot, rest): (Snapshot, _) =
        postcard::take_from_bytes(body).map_err(|e| err(e.to_string()))?;
    if !rest.is_empty() {
        return Err(err("trailing bytes"));
    }
    snapshot.validate().map_err(|e| err(e.to_string()))?;
    Ok(snapshot)
}

#[cfg(test)]
mod tests;
