//! `envoy.filters.http.compressor`, response direction: which response is compressed with
//! which encoding, decided as Envoy's filter decides it, and the encoders (gzip on zlib-rs,
//! brotli, zstd).
//!
//! The decision needs every compressor filter of the chain at once (Envoy's filters share
//! it through the stream's filter state: the first to decide picks the encoding with the
//! highest `q` among those the client accepts and the chain has), so it is made by
//! [`negotiate`] over the chain rather than by each filter alone. The request side is the
//! one per-filter phase: `remove_accept_encoding_header`.
//!
//! A compressed body is never spliced: it is read decoded from the upstream, compressed and
//! flushed per read (Envoy flushes per data frame), and written in the downstream codec's
//! own framing (HTTP/1.1: chunked).

use std::io::Write;

use zerohop_proto::stats::Counter;
use zerohop_proto::{CompressorConfig, CompressorLibrary};

use super::{Ctx, Decisions, Filter, Status};
use crate::http::message::{Framing, Response};

#[derive(Debug)]
pub struct Compressor;

impl Filter for Compressor {
    type Config = CompressorConfig;

    /// `remove_accept_encoding_header`: the upstream does not see what the client accepts
    /// (so it answers uncompressed, and this filter compresses).
    fn on_request_headers(cfg: &CompressorConfig, _ctx: &Ctx<'_>, d: &mut Decisions) -> Status {
        if cfg.enabled && cfg.remove_accept_encoding_header {
            d.drop_accept_encoding = true;
        }
        Status::Continue
    }
}

/// What becomes of a strong `etag` when the body is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Etag {
    Keep,
    Remove,
    Weaken,
}

/// The response-headers outcome of the compressor filters.
#[derive(Debug)]
pub struct Coding<'c> {
    /// The filter that compresses the body, if one does.
    pub compress: Option<&'c CompressorConfig>,
    /// `vary: accept-encoding` is added (or appended to the upstream's `vary`).
    pub vary: bool,
    pub etag: Etag,
}

/// The upstream's value of header `name` (lower-case).
fn header<'a>(resp: &Response, raw: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    resp.headers
        .iter()
        .find(|h| &raw[h.name.clone()] == name)
        .map(|h| &raw[h.value.clone()])
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The media type of a `content-type` value: before any `;`, trimmed.
fn media_type(value: &[u8]) -> &[u8] {
    value
        .split(|&b| b == b';')
        .next()
        .unwrap_or(b"")
        .trim_ascii()
}

fn type_allowed(cfg: &CompressorConfig, media: Option<&[u8]>) -> bool {
    match media {
        Some(m) => cfg
            .content_types
            .iter()
            .any(|t| t.as_bytes().eq_ignore_ascii_case(m)),
        None => true,
    }
}

/// Envoy's `chooseEncoding`: among the compressors the chain has (in order, the response's
/// media type allowed, the first of each encoding) and the encodings the client accepts,
/// the one with the highest `q` (`choose_first` wins a tie; `*` means the first compressor;
/// `identity` or nothing acceptable: none).
fn choose(
    chain: &[&CompressorConfig],
    accept: &[u8],
    media: Option<&[u8]>,
) -> Option<&'static str> {
    // (encoding, choose_first), in registration order.
    let mut allowed: Vec<(&'static str, bool)> = Vec::new();
    for c in chain {
        let enc = c.library.encoding();
        if media.is_some_and(|m| !m.is_empty()) && !type_allowed(c, media) {
            continue;
        }
        if !allowed.iter().any(|(e, _)| *e == enc) {
            allowed.push((enc, c.choose_first));
        }
    }
    let mut pairs: Vec<(&[u8], f32)> = Vec::new();
    for token in accept.split(|&b| b == b',') {
        let token = token.trim_ascii();
        if token.is_empty() {
            continue;
        }
        let mut parts = token.splitn(2, |&b| b == b';');
        let name = parts.next().unwrap_or(b"").trim_ascii();
        let mut q = 1.0f32;
        if let Some(params) = parts.next() {
            if let Some((k, v)) = std::str::from_utf8(params)
                .ok()
                .and_then(|p| p.split_once('='))
            {
                if k.trim().eq_ignore_ascii_case("q") {
                    match v.trim().parse::<f32>() {
                        Ok(v) => q = v,
                        Err(_) => continue,
                    }
                }
            }
        }
        pairs.push((name, q));
        if q == 0.0 {
            allowed.retain(|(e, _)| !e.as_bytes().eq_ignore_ascii_case(name));
        }
    }
    if pairs.is_empty() || allowed.is_empty() {
        return None;
    }
    let known = |name: &[u8]| allowed.iter().find(|(e, _)| e.as_bytes() == name);
    let mut choice: (&[u8], f32) = (b"identity", 0.0);
    for &(name, q) in &pairs {
        if known(name).is_some() || name == b"identity" || name == b"*" {
            let first = known(name).is_some_and(|(_, f)| *f);
            if q > choice.1 || (q == choice.1 && first) {
                choice = (name, q);
            }
        }
    }
    match choice {
        (_, 0.0) => None,
        (b"identity", _) => None,
        (b"*", _) => allowed.first().map(|(e, _)| *e),
        (name, _) => known(name).map(|(e, _)| *e),
    }
}

/// What the compressor filters of a chain (`chain`, in order, each with its configuration
/// for this route) make of a response, as Envoy's filters run over its headers: each saw the
/// request's `accept-encoding` unless a filter before it removed it
/// (`remove_accept_encoding_header`); then, in reverse order, the first that may compress
/// chooses the encoding for all, and the one whose encoding it is compresses.
pub fn negotiate<'c>(
    chain: &[&'c CompressorConfig],
    ctx: &Ctx<'_>,
    resp: &Response,
    raw: &[u8],
    upgrade: bool,
) -> Coding<'c> {
    let head = Head {
        status: resp.status,
        end_stream: resp.framing == Framing::Empty,
        header: &|name: &[u8]| header(resp, raw, name),
    };
    decide(chain, ctx, &head, upgrade)
}

/// A response head as the decision reads it: the upstream's, or a local reply's.
struct Head<'h> {
    status: u16,
    /// No body follows.
    end_stream: bool,
    /// A header's value by lower-case name.
    header: &'h dyn Fn(&[u8]) -> Option<&'h [u8]>,
}

/// [`negotiate`] over any head.
fn decide<'c>(
    chain: &[&'c CompressorConfig],
    ctx: &Ctx<'_>,
    head: &Head<'_>,
    upgrade: bool,
) -> Coding<'c> {
    let mut out = Coding {
        compress: None,
        vary: false,
        etag: Etag::Keep,
    };
    let header = head.header;
    let media = header(b"content-type").map(media_type);
    let declared = header(b"content-length");
    let no_transform = header(b"cache-control").is_some_and(|v| has_token(v, b"no-transform"));
    let etag = header(b"etag");
    let mut encoded = header(b"content-encoding").is_some();
    let transfer = header(b"transfer-encoding");
    let end_stream = head.end_stream;
    let accept = ctx.req.header("accept-encoding").map(str::as_bytes);
    // Filter i saw `accept-encoding` unless one before it removed it.
    let removed_before = |i: usize| {
        chain[..i]
            .iter()
            .any(|c| c.enabled && c.remove_accept_encoding_header)
    };
    let mut decision: Option<Option<&'static str>> = None;
    for (i, cfg) in chain.iter().enumerate().rev() {
        let long_enough = cfg.enabled
            && match declared {
                // After a filter compressed, the length is gone.
                Some(n) if out.compress.is_none() => std::str::from_utf8(n)
                    .ok()
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n >= u64::from(cfg.min_content_length)),
                _ => true,
            };
        let compressible = long_enough
            && !upgrade
            && type_allowed(cfg, media)
            && !no_transform
            && (!cfg.disable_on_etag_header || etag.is_none())
            && !encoded
            && !cfg.uncompressible_response_codes.contains(&head.status);
        let seen = accept.filter(|_| !removed_before(i));
        let chosen = long_enough
            && seen.is_some_and(|a| {
                let enc = *decision.get_or_insert_with(|| choose(chain, a, media));
                enc == Some(cfg.library.encoding())
            });
        let transfer_ok = transfer.is_none_or(|t| {
            !t.split(|&b| b == b',').any(|v| {
                let v = v.trim_ascii();
                [&b"gzip"[..], b"br", b"deflate", b"compress", b"zstd"]
                    .iter()
                    .any(|c| v.eq_ignore_ascii_case(c))
                    || v.eq_ignore_ascii_case(cfg.library.encoding().as_bytes())
            })
        });
        if !end_stream && chosen && compressible && transfer_ok {
            out.compress = Some(cfg);
            encoded = true;
            let strong = etag.is_some_and(|e| e.len() > 2 && !e[..2].eq_ignore_ascii_case(b"w/"));
            out.etag = match (strong, cfg.weaken_etag_on_compress) {
                (false, _) => Etag::Keep,
                (true, true) => Etag::Weaken,
                (true, false) => Etag::Remove,
            };
            ctx.stats.inc(Counter::CompressorCompressed);
        } else {
            ctx.stats.inc(Counter::CompressorNotCompressed);
        }
        if compressible {
            out.vary = true;
        }
    }
    out
}

/// A response body's encoder. Each `push` compresses and flushes what it is given, so that
/// what has arrived goes on at once; `finish` ends the stream.
pub enum Encoder {
    Gzip(flate2::Compress),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoder::Gzip(_) => "Encoder::Gzip",
            Encoder::Brotli(_) => "Encoder::Brotli",
            Encoder::Zstd(_) => "Encoder::Zstd",
        })
    }
}

impl Encoder {
    pub fn new(lib: &CompressorLibrary) -> std::io::Result<Encoder> {
        Ok(match *lib {
            CompressorLibrary::Gzip {
                level, window_bits, ..
            } => Encoder::Gzip(flate2::Compress::new_gzip(
                flate2::Compression::new(level),
                window_bits,
            )),
            CompressorLibrary::Brotli {
                quality,
                window_bits,
                input_block_bits,
                mode,
                disable_literal_context_modeling,
                chunk_size,
            } => {
                let params = brotli::enc::BrotliEncoderParams {
                    quality: quality as i32,
                    lgwin: window_bits as i32,
                    lgblock: input_block_bits as i32,
                    mode: match mode {
                        1 => brotli::enc::backward_references::BrotliEncoderMode::BROTLI_MODE_TEXT,
                        2 => brotli::enc::backward_references::BrotliEncoderMode::BROTLI_MODE_FONT,
                        _ => {
                            brotli::enc::backward_references::BrotliEncoderMode::BROTLI_MODE_GENERIC
                        }
                    },
                    disable_literal_context_modeling: i32::from(disable_literal_context_modeling),
                    ..Default::default()
                };
                Encoder::Brotli(Box::new(brotli::CompressorWriter::with_params(
                    Vec::new(),
                    chunk_size as usize,
                    &params,
                )))
            }
            CompressorLibrary::Zstd {
                level,
                checksum,
                strategy,
                ..
            } => {
                let mut e = zstd::stream::write::Encoder::new(Vec::new(), level)?;
                e.include_checksum(checksum)?;
                if strategy > 0 {
                    use zstd::zstd_safe::{CParameter, Strategy};
                    let s = match strategy {
                        1 => Strategy::ZSTD_fast,
                        2 => Strategy::ZSTD_dfast,
                        3 => Strategy::ZSTD_greedy,
                        4 => Strategy::ZSTD_lazy,
                        5 => Strategy::ZSTD_lazy2,
                        6 => Strategy::ZSTD_btlazy2,
                        7 => Strategy::ZSTD_btopt,
                        8 => Strategy::ZSTD_btultra,
                        _ => Strategy::ZSTD_btultra2,
                    };
                    e.set_parameter(CParameter::Strategy(s))?;
                }
                Encoder::Zstd(e)
            }
        })
    }

    /// Compresses `data` and flushes (`last`: ends the stream); the output is appended to
    /// `out`.
    pub fn push(&mut self, data: &[u8], last: bool, out: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(c) => {
                let flush = match last {
                    true => flate2::FlushCompress::Finish,
                    false => flate2::FlushCompress::Sync,
                };
                let mut input = data;
                loop {
                    out.reserve(input.len() / 2 + 64);
                    let before = c.total_in();
                    let status = c
                        .compress_vec(input, out, flush)
                        .map_err(std::io::Error::other)?;
                    input = &input[(c.total_in() - before) as usize..];
                    let full = out.len() == out.capacity();
                    match status {
                        flate2::Status::StreamEnd => return Ok(()),
                        _ if input.is_empty() && !full && !last => return Ok(()),
                        _ => {}
                    }
                }
            }
            Encoder::Brotli(w) => {
                w.write_all(data)?;
                w.flush()?;
                if last {
                    let w = std::mem::replace(
                        w,
                        Box::new(brotli::CompressorWriter::new(Vec::new(), 4096, 0, 10)),
                    );
                    out.extend_from_slice(&w.into_inner());
                } else {
                    out.append(w.get_mut());
                }
                Ok(())
            }
            Encoder::Zstd(e) => {
                e.write_all(data)?;
                if last {
                    e.do_finish()?;
                } else {
                    e.flush()?;
                }
                out.append(e.get_mut());
                Ok(())
            }
        }
    }
}

/// A local reply's body (a `direct_response`), compressed whole when the chain's compressors
/// take it, as Envoy's encoder filters take its local replies: `Some(encoded body)`, with
/// `headers` (the reply's own, before `content-type` and the length) given `vary` and
/// `content-encoding`.
pub fn local_body<'h>(
    chain: &[&CompressorConfig],
    ctx: &Ctx<'_>,
    status: u16,
    body: &str,
    headers: &mut Vec<(&'h [u8], std::borrow::Cow<'h, [u8]>)>,
) -> Option<Vec<u8>> {
    let len = body.len().to_string();
    let lookup = |name: &[u8]| -> Option<&[u8]> {
        match name {
            b"content-type" if !body.is_empty() => Some(b"text/plain"),
            b"content-length" => Some(len.as_bytes()),
            _ => headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| &v[..]),
        }
    };
    let head = Head {
        status,
        end_stream: body.is_empty(),
        header: &lookup,
    };
    let coding = decide(chain, ctx, &head, false);
    let encoded = coding.compress.and_then(|cfg| {
        let mut out = Vec::new();
        let mut enc = Encoder::new(&cfg.library).ok()?;
        enc.push(body.as_bytes(), true, &mut out).ok()?;
        ctx.stats
            .add(Counter::CompressorTotalUncompressedBytes, body.len() as u64);
        ctx.stats
            .add(Counter::CompressorTotalCompressedBytes, out.len() as u64);
        Some((cfg, out))
    });
    if coding.vary {
        match headers.iter_mut().find(|(n, _)| *n == b"vary") {
            Some((_, v)) if !has_token(v, b"accept-encoding") => {
                let mut joined = v.to_vec();
                joined.extend_from_slice(b", Accept-Encoding");
                *v = joined.into();
            }
            Some(_) => {}
            None => headers.push((b"vary", (&b"Accept-Encoding"[..]).into())),
        }
    }
    let (cfg, out) = encoded?;
    if coding.etag != Etag::Keep {
        headers.retain(|(n, _)| *n != b"etag");
    }
    headers.push((
        b"content-encoding",
        cfg.library.encoding().as_bytes().into(),
    ));
    Some(out)
}

/// `data` as HTTP/1.1 chunks of at most `max` bytes each.
pub fn chunk_into(data: &[u8], max: usize, out: &mut Vec<u8>) {
    for piece in data.chunks(max.max(1)) {
        let _ = write!(out, "{:x}\r\n", piece.len());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
}

/// The library's `chunk_size`: the most bytes one written chunk carries.
pub fn chunk_size(lib: &CompressorLibrary) -> usize {
    match *lib {
        CompressorLibrary::Gzip { chunk_size, .. }
        | CompressorLibrary::Brotli { chunk_size, .. }
        | CompressorLibrary::Zstd { chunk_size, .. } => chunk_size as usize,
    }
}

#[cfg(test)]
mod tests;
