//! Small, pure pieces of HTTP semantics: byte ranges, `Accept-Encoding`, entity tags, caching.

use http::{HeaderMap, HeaderValue, header};

/// `Cache-Control` for narinfo: metadata may gain signatures, so a day.
pub const CACHE_NARINFO: HeaderValue = HeaderValue::from_static("public, max-age=86400");
/// `Cache-Control` for content addressed by its hash (NARs, listings, logs).
pub const CACHE_IMMUTABLE: HeaderValue =
    HeaderValue::from_static("public, max-age=31536000, immutable");
/// `Cache-Control` for misses, errors and anything that must not be shared.
pub const CACHE_NONE: HeaderValue = HeaderValue::from_static("no-store");

/// An inclusive byte range `start..=end` inside a resource of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
}

/// What a `Range` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: serve the whole resource (absent header, other units, several ranges).
    Full,
    /// One satisfiable range.
    Single(ByteRange),
    /// Syntactically a byte range, but it cannot be satisfied (or is malformed): 416.
    Unsatisfiable,
}

/// Interprets a `Range` header value against a resource of `size` bytes (RFC 9110 §14).
///
/// Several ranges are answered with the full resource, which RFC 9110 allows; a malformed
/// `bytes=` value is refused with 416 so clients learn about their bug.
pub fn parse_range(value: &[u8], size: u64) -> RangeRequest {
    let Ok(value) = std::str::from_utf8(value) else {
        return RangeRequest::Unsatisfiable;
    };
    let value = value.trim();
    let Some((unit, spec)) = value.split_once('=') else {
        return RangeRequest::Unsatisfiable;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Full;
    }
    let spec = spec.trim();
    if spec.contains(',') {
        // Validate every part so garbage is still refused, then serve in full.
        let all_valid = spec
            .split(',')
            .all(|part| parse_one(part.trim(), u64::MAX).is_some());
        return if all_valid {
            RangeRequest::Full
        } else {
            RangeRequest::Unsatisfiable
        };
    }
    match parse_one(spec, size) {
        Some(Some(r)) => RangeRequest::Single(r),
        _ => RangeRequest::Unsatisfiable,
    }
}

/// `Some(None)`: well-formed but unsatisfiable; `None`: malformed.
fn parse_one(spec: &str, size: u64) -> Option<Option<ByteRange>> {
    let (first, last) = spec.split_once('-')?;
    let digits = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if first.is_empty() {
        // Suffix range: the last N bytes.
        let n = digits(last)?;
        if n == 0 || size == 0 {
            return Some(None);
        }
        let n = n.min(size);
        return Some(Some(ByteRange {
            start: size - n,
            end: size - 1,
        }));
    }
    let start = digits(first)?;
    let end = if last.is_empty() {
        None
    } else {
        Some(digits(last)?)
    };
    if let Some(end) = end
        && end < start
    {
        return None;
    }
    if start >= size {
        return Some(None);
    }
    let end = end.map_or(size - 1, |e| e.min(size - 1));
    Some(Some(ByteRange { start, end }))
}

/// Whether the client lists `coding` in `Accept-Encoding` with a non-zero quality.
pub fn accepts_encoding(headers: &HeaderMap, coding: &str) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            if !name.eq_ignore_ascii_case(coding) {
                return false;
            }
            // An explicit q=0 means "not acceptable".
            for param in parts {
                if let Some((k, v)) = param.split_once('=')
                    && k.trim().eq_ignore_ascii_case("q")
                {
                    return v.trim().parse::<f32>().is_ok_and(|q| q > 0.0);
                }
            }
            true
        })
}

/// Whether `If-None-Match` matches `etag` (weak comparison, as RFC 9110 asks for this header).
pub fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let want = bare(etag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || bare(t) == want)
}

/// Whether a range request may be honoured given `If-Range` (strong comparison).
pub fn if_range_allows(headers: &HeaderMap, etag: &str) -> bool {
    match headers.get(header::IF_RANGE) {
        None => true,
        Some(v) => v.to_str().is_ok_and(|v| v.trim() == etag),
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str, size: u64) -> RangeRequest {
        parse_range(s.as_bytes(), size)
    }
    fn single(start: u64, end: u64) -> RangeRequest {
        RangeRequest::Single(ByteRange { start, end })
    }

    #[test]
    fn range_forms() {
        assert_eq!(r("bytes=0-9", 100), single(0, 9));
        assert_eq!(r("bytes=10-", 100), single(10, 99));
        assert_eq!(r("bytes=-10", 100), single(90, 99));
        assert_eq!(r("bytes=-1000", 100), single(0, 99));
        assert_eq!(r("bytes=90-1000", 100), single(90, 99));
        assert_eq!(r("bytes=99-99", 100), single(99, 99));
        assert_eq!(r("BYTES = 1-2", 100), single(1, 2));
    }

    #[test]
    fn unsatisfiable_and_malformed() {
        assert_eq!(r("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=5-1", 100), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=a-b", 100), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=", 100), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=+1-2", 100), RangeRequest::Unsatisfiable);
        assert_eq!(
            r("bytes=99999999999999999999999-", 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(r("garbage", 100), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=0-0", 0), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn other_units_and_multiple_ranges_serve_full() {
        assert_eq!(r("items=0-1", 100), RangeRequest::Full);
        assert_eq!(r("bytes=0-1,5-6", 100), RangeRequest::Full);
        assert_eq!(r("bytes=0-1,x", 100), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn accept_encoding() {
        let mut h = HeaderMap::new();
        assert!(!accepts_encoding(&h, "zstd"));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, zstd;q=0.5"),
        );
        assert!(accepts_encoding(&h, "zstd"));
        assert!(!accepts_encoding(&h, "bzip2"));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("zstd;q=0, gzip"),
        );
        assert!(!accepts_encoding(&h, "zstd"));
    }

    #[test]
    fn etags() {
        let mut h = HeaderMap::new();
        assert!(!if_none_match(&h, "\"abc\""));
        assert!(if_range_allows(&h, "\"abc\""));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(if_none_match(&h, "\"abc\""));
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"other\""));
        assert!(!if_range_allows(&h, "\"abc\""));
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
