//! The connection manager's path normalization, in Envoy's order and before anything reads
//! the path (routing, filters, the upstream request): `path_with_escaped_slashes_action`,
//! then `normalize_path` (RFC 3986 section 6.2.2 as Envoy's canonicalizer does it:
//! percent-encoded unreserved characters decoded, other escapes kept as sent, characters a
//! path may not carry escaped, a backslash taken as a slash, dot segments removed), then
//! `merge_slashes`. Sans-I/O: a path in, a verdict out.

use zerohop_proto::{EscapedSlashes, PathNormalization};

/// What becomes of a request's path.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Unchanged.
    Keep,
    /// Served with this path (no query) instead.
    Rewrite(String),
    /// Answered 400 (an escaped slash refused, or a path that cannot be normalized).
    Reject,
    /// Answered 307 to this path (escaped slashes unescaped; the query kept by the caller).
    Redirect(String),
}

/// The verdict on `path` (without its query) under `p`.
pub fn normalize(path: &str, p: &PathNormalization) -> Verdict {
    if !p.normalize && !p.merge_slashes && p.escaped_slashes == EscapedSlashes::KeepUnchanged {
        return Verdict::Keep;
    }
    let mut out = std::borrow::Cow::Borrowed(path);
    let mut redirect = false;
    if has_escaped_slash(&out) {
        match p.escaped_slashes {
            EscapedSlashes::KeepUnchanged => {}
            EscapedSlashes::Reject => return Verdict::Reject,
            EscapedSlashes::UnescapeAndForward => out = unescape_slashes(&out).into(),
            EscapedSlashes::UnescapeAndRedirect => {
                out = unescape_slashes(&out).into();
                redirect = true;
            }
        }
    }
    if p.normalize {
        match canonical(&out) {
            Some(c) => out = c.into(),
            None => return Verdict::Reject,
        }
    }
    if p.merge_slashes && out.contains("//") {
        out = merge_slashes(&out).into();
    }
    match (redirect, out == path) {
        (true, _) => Verdict::Redirect(out.into_owned()),
        (false, true) => Verdict::Keep,
        (false, false) => Verdict::Rewrite(out.into_owned()),
    }
}

fn has_escaped_slash(p: &str) -> bool {
    let b = p.as_bytes();
    b.windows(3).any(|w| {
        w[0] == b'%' && w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f')
            || w[0] == b'%' && w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c')
    })
}

fn unescape_slashes(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = String::with_capacity(p.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            match (b[i + 1], b[i + 2].to_ascii_lowercase()) {
                (b'2', b'f') => {
                    out.push('/');
                    i += 3;
                    continue;
                }
                (b'5', b'c') => {
                    out.push('\\');
                    i += 3;
                    continue;
                }
                _ => {}
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

fn merge_slashes(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// A byte a path carries as itself (RFC 3986 `pchar` and `/`, beyond the unreserved ones);
/// anything else is percent-encoded.
fn plain(b: u8) -> bool {
    unreserved(b)
        || matches!(
            b,
            b'/' | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'['
                | b']'
                | b'|'
                | b'^'
        )
}

/// RFC 3986 normalization of an absolute path; `None` when it is not one (no leading `/`,
/// or a `%` not followed by two hex digits).
fn canonical(path: &str) -> Option<String> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return None;
    }
    // Escapes first: unreserved ones decoded, the rest upper-cased; bytes a path cannot
    // carry plain, encoded.
    let mut decoded = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hex = |x: u8| (x as char).to_digit(16);
            let (h, l) = (hex(*b.get(i + 1)?)?, hex(*b.get(i + 2)?)?);
            let v = (h * 16 + l) as u8;
            if unreserved(v) {
                decoded.push(v as char);
            } else {
                // Kept as sent (Envoy's canonicalizer does not change its case).
                decoded.push_str(&path[i..i + 3]);
            }
            i += 3;
            continue;
        }
        if c == b'\\' {
            // A backslash is a slash, as in Envoy's (Chromium's) canonicalizer.
            decoded.push('/');
        } else if plain(c) {
            decoded.push(c as char);
        } else {
            decoded.push_str(&format!("%{c:02X}"));
        }
        i += 1;
    }
    // Dot segments (RFC 3986 section 5.2.4).
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = decoded[1..].split('/').collect();
    let last = parts.len() - 1;
    for (n, seg) in parts.iter().enumerate() {
        match *seg {
            "." => {
                if n == last {
                    segments.push("");
                }
            }
            ".." => {
                segments.pop();
                if n == last {
                    segments.push("");
                }
            }
            s => segments.push(s),
        }
    }
    Some(format!("/{}", segments.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(normalize: bool, merge: bool, escaped: EscapedSlashes) -> PathNormalization {
        PathNormalization {
            normalize,
            merge_slashes: merge,
            escaped_slashes: escaped,
        }
    }

    #[test]
    fn rfc3986_normalization() {
        let p = opts(true, false, EscapedSlashes::KeepUnchanged);
        let n = |s| normalize(s, &p);
        assert_eq!(n("/a/b"), Verdict::Keep);
        assert_eq!(n("/a/../b"), Verdict::Rewrite("/b".into()));
        assert_eq!(n("/a/./b/."), Verdict::Rewrite("/a/b/".into()));
        assert_eq!(n("/../../a"), Verdict::Rewrite("/a".into()));
        assert_eq!(n("/a/b/.."), Verdict::Rewrite("/a/".into()));
        assert_eq!(n("/%61/%2e%2E/x"), Verdict::Rewrite("/x".into()));
        assert_eq!(n("/%61"), Verdict::Rewrite("/a".into()));
        assert_eq!(n("/a%2fb"), Verdict::Keep);
        assert_eq!(n("/a\\b"), Verdict::Rewrite("/a/b".into()));
        assert_eq!(n("/a//b"), Verdict::Keep);
        assert_eq!(n("/a%zz"), Verdict::Reject);
        assert_eq!(n("/a%4"), Verdict::Reject);
    }

    #[test]
    fn slashes_merged_and_escaped_slashes_handled() {
        let m = opts(false, true, EscapedSlashes::KeepUnchanged);
        assert_eq!(normalize("//a///b/", &m), Verdict::Rewrite("/a/b/".into()));
        let r = opts(false, false, EscapedSlashes::Reject);
        assert_eq!(normalize("/a%2Fb", &r), Verdict::Reject);
        assert_eq!(normalize("/a%5cb", &r), Verdict::Reject);
        assert_eq!(normalize("/a/b", &r), Verdict::Keep);
        let f = opts(false, false, EscapedSlashes::UnescapeAndForward);
        assert_eq!(normalize("/a%2fb", &f), Verdict::Rewrite("/a/b".into()));
        let d = opts(true, true, EscapedSlashes::UnescapeAndRedirect);
        assert_eq!(
            normalize("/a%2F%2Fb/../c", &d),
            Verdict::Redirect("/a/c".into())
        );
        assert_eq!(normalize("/a/c", &d), Verdict::Keep);
    }
}
