//! HTTP/1.x request heads from the first payload segment of a request:
//! the request line (method, target, version), Host and User-Agent.
//!
//! The kernel captures at most 512 bytes. The request line must be whole
//! (ended by a line feed); header lines after the cut are simply missing
//! (a header line cut in the middle is dropped). Anything else — binary
//! data, TLS, the HTTP/2 preface, a request line without its end — is an
//! [`HttpError`], which the caller counts.

use super::tls::printable;

/// The longest method, User-Agent and Host kept.
const MAX_METHOD: usize = 16;
const MAX_HEADER_VALUE: usize = 512;
const MAX_HOST: usize = 255;

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// The request target as sent (origin form `/a?b`, absolute form, `*`).
    pub target: String,
    /// The target's path: no scheme and authority, no query, no fragment.
    pub path: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The first Host header (printable ASCII, at most 255 characters).
    pub host: Option<String>,
    /// The first User-Agent header (printable ASCII, at most 512 characters).
    pub user_agent: Option<String>,
    /// The head's end (an empty line) was captured.
    pub head_complete: bool,
}

/// Why a segment is not an HTTP/1.x request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("not text: byte {0:#04x} in the request line")]
    Binary(u8),
    #[error("the HTTP/2 connection preface")]
    Http2Preface,
    #[error("request line cut before its end")]
    LineIncomplete,
    #[error("malformed request line: {0}")]
    BadRequestLine(&'static str),
    #[error("not HTTP/1.0 or HTTP/1.1")]
    UnsupportedVersion,
}

/// RFC 9110 token characters (methods and header names).
const fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// The request head at the start of `data`.
pub fn parse_request(data: &[u8]) -> Result<HttpRequest, HttpError> {
    if data.starts_with(b"PRI * HTTP/2.0") {
        return Err(HttpError::Http2Preface);
    }
    let line_end = data.iter().position(|&b| b == b'\n');
    let line = &data[..line_end.unwrap_or(data.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(&b) = line
        .iter()
        .find(|&&b| !(b == b' ' || b == b'\t' || b.is_ascii_graphic()))
    {
        return Err(HttpError::Binary(b));
    }
    let Some(line_end) = line_end else {
        return Err(HttpError::LineIncomplete);
    };
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequestLine(
            "not three space-separated fields",
        ));
    };
    if method.is_empty() || method.len() > MAX_METHOD || !method.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::BadRequestLine("method"));
    }
    if target.is_empty() || !target.iter().all(u8::is_ascii_graphic) {
        return Err(HttpError::BadRequestLine("target"));
    }
    let minor_version = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        v if v.starts_with(b"HTTP/") => return Err(HttpError::UnsupportedVersion),
        _ => return Err(HttpError::BadRequestLine("version")),
    };
    let target = printable(target, usize::MAX);
    let mut req = HttpRequest {
        method: printable(method, MAX_METHOD),
        path: path_of(&target).to_string(),
        target,
        minor_version,
        host: None,
        user_agent: None,
        head_complete: false,
    };
    read_headers(&data[line_end + 1..], &mut req);
    Ok(req)
}

/// Host and User-Agent from the header lines (whole lines only).
fn read_headers(mut rest: &[u8], req: &mut HttpRequest) {
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        rest = &rest[end + 1..];
        if line.is_empty() {
            req.head_complete = true;
            return;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"host") && req.host.is_none() {
            req.host = Some(printable(value, MAX_HOST));
        } else if name.eq_ignore_ascii_case(b"user-agent") && req.user_agent.is_none() {
            req.user_agent = Some(printable(value, MAX_HEADER_VALUE));
        }
    }
}

/// The path of a request target: origin form `/a/b?q` gives `/a/b`,
/// absolute form `http://h:80/a?q` gives `/a`, `*` and authority form stay.
pub fn path_of(target: &str) -> &str {
    let mut t = target;
    if let Some(i) = t.find("://") {
        t = &t[i + 3..];
        t = t.find('/').map_or("/", |j| &t[j..]);
    }
    let end = t.find(['?', '#']).unwrap_or(t.len());
    &t[..end]
}

/// Static resources never count as not-found probes (as in CrowdSec's
/// http-probing): their extension, case-insensitively.
pub const STATIC_EXTENSIONS: [&str; 13] = [
    "ico", "png", "jpg", "jpeg", "gif", "svg", "css", "js", "woff", "woff2", "ttf", "map", "webp",
];

/// Whether `path` names a static resource (by its last segment's extension).
pub fn is_static(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or(path);
    last.rsplit_once('.').is_some_and(|(_, ext)| {
        STATIC_EXTENSIONS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(ext))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOBUSTER: &[u8] =
        b"GET /admin HTTP/1.1\r\nHost: 198.18.77.2\r\nUser-Agent: gobuster/3.5\r\nAccept-Encoding: gzip\r\n\r\n";

    #[test]
    fn a_real_request_head() {
        let r = parse_request(GOBUSTER).unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/admin");
        assert_eq!(r.path, "/admin");
        assert_eq!(r.minor_version, 1);
        assert_eq!(r.host.as_deref(), Some("198.18.77.2"));
        assert_eq!(r.user_agent.as_deref(), Some("gobuster/3.5"));
        assert!(r.head_complete);
    }

    #[test]
    fn header_names_are_case_insensitive_and_the_first_wins() {
        let r = parse_request(
            b"POST /x?id=1 HTTP/1.0\nuSeR-aGeNt:  sqlmap/1.7.2#stable (https://sqlmap.org) \nHOST: a\nhost: b\n\n",
        )
        .unwrap();
        assert_eq!(r.path, "/x");
        assert_eq!(r.minor_version, 0);
        assert_eq!(r.host.as_deref(), Some("a"));
        assert_eq!(
            r.user_agent.as_deref(),
            Some("sqlmap/1.7.2#stable (https://sqlmap.org)")
        );
    }

    #[test]
    fn a_head_cut_at_the_capture_keeps_its_whole_lines() {
        let cut = &GOBUSTER[..GOBUSTER.len() - 30];
        let r = parse_request(cut).unwrap();
        assert_eq!(r.host.as_deref(), Some("198.18.77.2"));
        assert_eq!(r.user_agent, None, "a cut header line is dropped");
        assert!(!r.head_complete);
        assert_eq!(
            parse_request(b"GET /admin HTTP/1."),
            Err(HttpError::LineIncomplete)
        );
    }

    #[test]
    fn junk_is_an_error_of_its_kind() {
        assert_eq!(
            parse_request(b"\x16\x03\x01\x02\x00\x01"),
            Err(HttpError::Binary(0x16))
        );
        assert_eq!(
            parse_request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Err(HttpError::Http2Preface)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/2\r\n\r\n"),
            Err(HttpError::UnsupportedVersion)
        );
        assert_eq!(
            parse_request(b"SSH-2.0-OpenSSH_9.2\r\n"),
            Err(HttpError::BadRequestLine(
                "not three space-separated fields"
            ))
        );
        assert_eq!(
            parse_request(b"G(T / HTTP/1.1\r\n"),
            Err(HttpError::BadRequestLine("method"))
        );
        assert_eq!(
            parse_request(b"GET / FTP/1.1\r\n"),
            Err(HttpError::BadRequestLine("version"))
        );
        assert_eq!(parse_request(b""), Err(HttpError::LineIncomplete));
    }

    #[test]
    fn every_prefix_and_random_bytes_never_panic() {
        for cut in 0..=GOBUSTER.len() {
            let r = parse_request(&GOBUSTER[..cut]);
            // The request line ends at byte 20.
            assert_eq!(r.is_ok(), cut >= 21, "cut at {cut}: {r:?}");
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let len = (next() % 600) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                // Printable junk with line feeds, after a valid request line.
                data = GOBUSTER[..21].to_vec();
                data.extend((0..len).map(|_| match next() % 8 {
                    0 => b'\n',
                    1 => b':',
                    _ => (next() % 95 + 32) as u8,
                }));
            }
            let _ = parse_request(&data);
        }
    }

    #[test]
    fn paths_and_static_resources() {
        assert_eq!(path_of("/a/b?c=1#f"), "/a/b");
        assert_eq!(path_of("http://h:8080/a?q"), "/a");
        assert_eq!(path_of("http://h"), "/");
        assert_eq!(path_of("*"), "*");
        for p in ["/favicon.ico", "/a/B.PNG", "/x.js", "/f.woff2", "/m.js.map"] {
            assert!(is_static(p), "{p}");
        }
        for p in ["/admin", "/.env", "/a.php", "/js/", "/x.json", "/icons"] {
            assert!(!is_static(p), "{p}");
        }
    }
}
