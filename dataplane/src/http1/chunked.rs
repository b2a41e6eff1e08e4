//! A strict chunked-body decoder (RFC 9112 section 7.1), sans-I/O. It validates the framing
//! (so a smuggled second message cannot hide in a lax parse) and reports where the payload
//! bytes are; a proxy forwards the validated wire bytes as they are.
//!
//! Refused: an empty or non-hex chunk size (httparse's chunk-size parser reads an empty line
//! as 0), more than 16 hex digits, bare LF or CR in a size or trailer line, data not followed
//! by CRLF, control characters in a chunk extension, oversized lines.

use std::ops::Range;

const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 60 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    Size(&'static str),
    Line(&'static str),
    TooLarge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// One step of decoding: how much input was consumed and which part of it, if any, is payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub consumed: usize,
    pub payload: Option<Range<usize>>,
}

#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size,
            trailer_bytes: 0,
        }
    }
}

/// A complete CRLF-terminated line at the start of `input`: `Ok(None)` if it has not all
/// arrived.
fn line(input: &[u8]) -> Result<Option<&[u8]>, ChunkError> {
    for (i, &b) in input.iter().enumerate() {
        if i >= MAX_LINE {
            return Err(ChunkError::TooLarge);
        }
        match b {
            b'\n' => return Err(ChunkError::Line("bare LF")),
            b'\r' => {
                return match input.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some(&input[..i])),
                    Some(_) => Err(ChunkError::Line("bare CR")),
                };
            }
            _ => {}
        }
    }
    Ok(None)
}

fn chunk_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ChunkError::Size("empty or non-hex chunk size"));
    }
    if digits > 16 {
        return Err(ChunkError::Size("chunk size over 16 hex digits"));
    }
    let rest = &line[digits..];
    let ext = rest.trim_ascii_start();
    if !ext.is_empty()
        && (ext[0] != b';' || ext.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f))
    {
        return Err(ChunkError::Size("invalid text after the chunk size"));
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| ChunkError::Size("chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| ChunkError::Size("chunk size"))
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the start of `input`. Call again with the unconsumed rest (and more input
    /// when `consumed` is 0 and there is no payload) until `is_done`.
    pub fn decode(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        let none = |consumed| {
            Ok(Step {
                consumed,
                payload: None,
            })
        };
        match self.state {
            State::Done => none(0),
            State::Size => {
                let Some(l) = line(input)? else {
                    return none(0);
                };
                let size = chunk_size(l)?;
                self.state = if size == 0 {
                    State::Trailers
                } else {
                    State::Data(size)
                };
                none(l.len() + 2)
            }
            State::Data(left) => {
                let n = (input.len() as u64).min(left) as usize;
                if n == 0 {
                    return none(0);
                }
                self.state = if n as u64 == left {
                    State::DataEnd
                } else {
                    State::Data(left - n as u64)
                };
                Ok(Step {
                    consumed: n,
                    payload: Some(0..n),
                })
            }
            State::DataEnd => match input {
                [b'\r', b'\n', ..] => {
                    self.state = State::Size;
                    none(2)
                }
                [] | [b'\r'] => none(0),
                _ => Err(ChunkError::Line("chunk data not followed by CRLF")),
            },
            State::Trailers => {
                let Some(l) = line(input)? else {
                    return none(0);
                };
                self.trailer_bytes += l.len() + 2;
                if self.trailer_bytes > MAX_TRAILERS {
                    return Err(ChunkError::TooLarge);
                }
                if l.is_empty() {
                    self.state = State::Done;
                } else if matches!(l[0], b' ' | b'\t') {
                    return Err(ChunkError::Line("obs-fold in a trailer"));
                } else if !l.contains(&b':') {
                    return Err(ChunkError::Line("trailer without a colon"));
                }
                none(l.len() + 2)
            }
        }
    }

    /// Decodes a whole body held in memory: the payload, and the bytes the body took.
    pub fn decode_all(input: &[u8]) -> Result<Option<(Vec<u8>, usize)>, ChunkError> {
        let mut d = ChunkedDecoder::default();
        let (mut at, mut payload) = (0, Vec::new());
        while !d.is_done() {
            let step = d.decode(&input[at..])?;
            if let Some(r) = step.payload.clone() {
                payload.extend_from_slice(&input[at + r.start..at + r.end]);
            }
            if step.consumed == 0 && step.payload.is_none() {
                return Ok(None);
            }
            at += step.consumed;
        }
        Ok(Some((payload, at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(s: &[u8]) -> Result<Option<(Vec<u8>, usize)>, ChunkError> {
        ChunkedDecoder::decode_all(s)
    }

    #[test]
    fn decodes_and_stops_at_the_end_of_the_body() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1";
        let (payload, used) = all(body).unwrap().unwrap();
        assert_eq!(payload, b"hello world");
        assert_eq!(&body[used..], b"GET / HTTP/1.1");
        assert_eq!(all(b"5\r\nhel"), Ok(None));
        assert_eq!(
            all(b"A\r\n0123456789\r\n0\r\n\r\n")
                .unwrap()
                .unwrap()
                .0
                .len(),
            10
        );
    }

    #[test]
    fn one_byte_at_a_time_gives_the_same_payload() {
        let body = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::default();
        let (mut have, mut at, mut payload) = (0, 0, Vec::new());
        while !d.is_done() {
            let step = d.decode(&body[at..have]).unwrap();
            if let Some(r) = step.payload {
                payload.extend_from_slice(&body[at + r.start..at + r.end]);
            } else if step.consumed == 0 {
                have += 1;
            }
            at += step.consumed;
        }
        assert_eq!(payload, b"abc0123456789abcdef");
        assert_eq!(at, body.len());
    }

    #[test]
    fn malformed_chunking_is_refused() {
        assert_eq!(
            all(b"\r\nabc\r\n0\r\n\r\n"),
            Err(ChunkError::Size("empty or non-hex chunk size"))
        );
        assert_eq!(
            all(b"x\r\n"),
            Err(ChunkError::Size("empty or non-hex chunk size"))
        );
        assert_eq!(
            all(b"-1\r\n"),
            Err(ChunkError::Size("empty or non-hex chunk size"))
        );
        assert_eq!(
            all(b"11111111111111111\r\n"),
            Err(ChunkError::Size("chunk size over 16 hex digits"))
        );
        assert_eq!(all(b"3\nabc\r\n"), Err(ChunkError::Line("bare LF")));
        assert_eq!(
            all(b"3\r\nabcX\r\n"),
            Err(ChunkError::Line("chunk data not followed by CRLF"))
        );
        assert_eq!(
            all(b"3 x\r\n"),
            Err(ChunkError::Size("invalid text after the chunk size"))
        );
        assert_eq!(
            all(b"0\r\nX: 1\nY: 2\r\n\r\n"),
            Err(ChunkError::Line("bare LF"))
        );
        assert_eq!(
            all(b"0\r\n folded\r\n\r\n"),
            Err(ChunkError::Line("obs-fold in a trailer"))
        );
        let long = format!("1;{}\r\n", "e".repeat(5000));
        assert_eq!(all(long.as_bytes()), Err(ChunkError::TooLarge));
    }
}
