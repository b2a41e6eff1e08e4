use super::*;

fn gzip() -> CompressorConfig {
    CompressorConfig {
        name: "g".into(),
        library: CompressorLibrary::Gzip {
            level: 6,
            window_bits: 12,
            chunk_size: 4096,
        },
        enabled: true,
        min_content_length: 30,
        content_types: vec!["text/plain".into()],
        disable_on_etag_header: false,
        weaken_etag_on_compress: false,
        remove_accept_encoding_header: false,
        uncompressible_response_codes: vec![],
        choose_first: false,
    }
}

fn with(lib: CompressorLibrary) -> CompressorConfig {
    CompressorConfig {
        library: lib,
        ..gzip()
    }
}

fn br() -> CompressorConfig {
    with(CompressorLibrary::Brotli {
        quality: 3,
        window_bits: 18,
        input_block_bits: 24,
        mode: 0,
        disable_literal_context_modeling: false,
        chunk_size: 4096,
    })
}

#[test]
fn accept_encoding_negotiation_as_envoy() {
    let (g, b) = (gzip(), br());
    let chain = [&g, &b];
    let pick = |accept: &str| choose(&chain, accept.as_bytes(), Some(b"text/plain"));
    assert_eq!(pick("gzip"), Some("gzip"));
    assert_eq!(pick("br"), Some("br"));
    assert_eq!(pick("gzip;q=0.5, br;q=0.8"), Some("br"));
    assert_eq!(
        pick("gzip, br"),
        Some("gzip"),
        "a tie keeps the first listed"
    );
    assert_eq!(pick("*"), Some("gzip"), "the first registered");
    assert_eq!(pick("gzip;q=0, *"), Some("br"));
    assert_eq!(pick("identity"), None);
    assert_eq!(pick("identity;q=1, gzip;q=0.5"), None);
    assert_eq!(pick("deflate"), None);
    assert_eq!(pick("gzip;q=0"), None);
    assert_eq!(pick(""), None);
    // A compressor that does not take the media type is not a candidate.
    let json = CompressorConfig {
        content_types: vec!["application/json".into()],
        ..gzip()
    };
    let chain = [&json, &b];
    assert_eq!(choose(&chain, b"gzip, br", Some(b"text/plain")), Some("br"));
}

/// Every encoder's output, pushed in pieces and finished, decodes to the input.
#[test]
fn encoders_round_trip_in_pieces() {
    let text: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("line {i} of a compressible body\n").into_bytes())
        .collect();
    let libs = [
        gzip().library,
        br().library,
        CompressorLibrary::Zstd {
            level: 3,
            checksum: true,
            strategy: 4,
            chunk_size: 4096,
        },
    ];
    for lib in libs {
        let mut e = Encoder::new(&lib).unwrap();
        let mut out = Vec::new();
        for piece in text.chunks(7_000) {
            e.push(piece, false, &mut out).unwrap();
        }
        e.push(b"", true, &mut out).unwrap();
        assert!(out.len() < text.len() / 5, "{lib:?}: {}", out.len());
        let mut back = Vec::new();
        match lib {
            CompressorLibrary::Gzip { .. } => {
                use std::io::Read;
                flate2::read::GzDecoder::new(&out[..])
                    .read_to_end(&mut back)
                    .unwrap();
            }
            CompressorLibrary::Brotli { .. } => {
                brotli::BrotliDecompress(&mut &out[..], &mut back).unwrap();
            }
            CompressorLibrary::Zstd { .. } => back = zstd::decode_all(&out[..]).unwrap(),
        }
        assert_eq!(back, text, "{lib:?}");
    }
}

#[test]
fn chunks_of_at_most_chunk_size() {
    let mut out = Vec::new();
    chunk_into(&[b'x'; 10], 4, &mut out);
    assert_eq!(out, b"4\r\nxxxx\r\n4\r\nxxxx\r\n2\r\nxx\r\n");
}

#[test]
fn one_push_that_ends_the_stream() {
    let text = b"the quick brown fox jumps over the lazy dog\n".repeat(50);
    let mut e = Encoder::new(&br().library).unwrap();
    let mut out = Vec::new();
    e.push(&text, true, &mut out).unwrap();
    let mut back = Vec::new();
    brotli::BrotliDecompress(&mut &out[..], &mut back).unwrap();
    assert_eq!(back, text);
}

#[test]
fn brotli_with_a_small_window() {
    let text = b"the quick brown fox jumps over the lazy dog\n".repeat(50);
    let lib = CompressorLibrary::Brotli {
        quality: 4,
        window_bits: 16,
        input_block_bits: 24,
        mode: 0,
        disable_literal_context_modeling: false,
        chunk_size: 4096,
    };
    let mut e = Encoder::new(&lib).unwrap();
    let mut out = Vec::new();
    e.push(&text, true, &mut out).unwrap();
    let mut back = Vec::new();
    brotli::BrotliDecompress(&mut &out[..], &mut back).unwrap();
    assert_eq!(back, text);
}
