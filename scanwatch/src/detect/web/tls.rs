//! The TLS ClientHello of a connection's first segment: SNI, ALPN, the
//! offered versions, cipher suites, extensions and signature algorithms,
//! and its JA4 fingerprint (FoxIO's published JA4 algorithm,
//! `technical_details/JA4.md`).
//!
//! The kernel captures at most 512 bytes of the segment, and a ClientHello
//! is often longer (OpenSSL pads its hellos to a 517-byte record; browsers
//! with post-quantum key shares send well over 1,500 bytes, in two
//! segments). A hello cut short is parsed as far as it goes and marked
//! `truncated`: the SNI is there when the cut falls after it, and
//! [`ja4`] gives a fingerprint only when every part JA4 needs was seen
//! (every extension's type, and the whole content of the
//! supported_versions, ALPN and signature_algorithms extensions), e.g. when
//! only the padding extension at the end was cut. A hello cut before its
//! extensions is an error ([`TlsError::Truncated`]).

use std::fmt::Write as _;

use super::sha256::sha256_hex_prefix;

const SNI: u16 = 0x0000;
const SIGNATURE_ALGORITHMS: u16 = 0x000d;
const ALPN: u16 = 0x0010;
const SUPPORTED_VERSIONS: u16 = 0x002b;

/// What a ClientHello offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The hello's own (legacy) version field.
    pub legacy_version: u16,
    /// The supported_versions extension, in order (GREASE included).
    pub supported_versions: Vec<u16>,
    /// Cipher suites in order (GREASE included).
    pub ciphers: Vec<u16>,
    /// Extension types in order (GREASE included).
    pub extensions: Vec<u16>,
    /// The server name (SNI), if sent and captured.
    pub sni: Option<String>,
    /// ALPN protocol names in order.
    pub alpn: Vec<Vec<u8>>,
    /// Signature algorithms in order.
    pub signature_algorithms: Vec<u16>,
    /// The capture ended before the hello did.
    pub truncated: bool,
    /// Every part JA4 needs was captured.
    pub ja4_complete: bool,
}

/// Why a payload is not a (usable) ClientHello; the caller counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("not a TLS handshake record")]
    NotHandshake,
    #[error("a TLS handshake but not a ClientHello")]
    NotClientHello,
    #[error("ClientHello cut before its extensions (in {0})")]
    Truncated(&'static str),
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

/// GREASE values (RFC 8701): 0x?a?a with both bytes equal.
pub const fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// A cursor over bytes that never reads past the end.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    const fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

fn u16_list(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

/// The ClientHello in a TLS record (the first payload segment of a
/// connection, possibly cut short).
pub fn parse_client_hello(data: &[u8]) -> Result<ClientHello, TlsError> {
    let mut r = Reader::new(data);
    let (Some(0x16), Some(major)) = (r.u8(), r.u8()) else {
        return Err(TlsError::NotHandshake);
    };
    if major != 3 {
        return Err(TlsError::NotHandshake);
    }
    let _minor = r.u8().ok_or(TlsError::Truncated("record header"))?;
    let record_len = usize::from(r.u16().ok_or(TlsError::Truncated("record header"))?);
    match r.u8() {
        Some(1) => {}
        Some(_) => return Err(TlsError::NotClientHello),
        None => return Err(TlsError::Truncated("handshake header")),
    }
    let hs_len = r.u24().ok_or(TlsError::Truncated("handshake header"))?;
    if record_len < 4 {
        return Err(TlsError::Malformed(
            "record shorter than a handshake header",
        ));
    }
    // The hello as far as this record and the capture go (a hello longer
    // than its record continues in the next one: seen as cut here).
    let in_record = hs_len.min(record_len - 4);
    let body_end = (r.pos + in_record).min(data.len());
    let mut hello = ClientHello {
        truncated: data.len() - r.pos < hs_len,
        ..ClientHello::default()
    };
    let mut b = Reader::new(&data[r.pos..body_end]);
    let declared = hs_len;
    hello.legacy_version = b.u16().ok_or(TlsError::Truncated("version"))?;
    b.take(32).ok_or(TlsError::Truncated("random"))?;
    let sid = b.u8().ok_or(TlsError::Truncated("session id"))?;
    if sid > 32 {
        return Err(TlsError::Malformed("session id longer than 32 bytes"));
    }
    b.take(usize::from(sid))
        .ok_or(TlsError::Truncated("session id"))?;
    let n = usize::from(b.u16().ok_or(TlsError::Truncated("cipher suites"))?);
    if n % 2 != 0 {
        return Err(TlsError::Malformed("odd cipher suites length"));
    }
    hello.ciphers = u16_list(b.take(n).ok_or(TlsError::Truncated("cipher suites"))?);
    let n = usize::from(b.u8().ok_or(TlsError::Truncated("compression methods"))?);
    b.take(n)
        .ok_or(TlsError::Truncated("compression methods"))?;
    if b.pos >= declared {
        // No extensions at all (an SSL 3.0/TLS 1.0-era hello).
        hello.ja4_complete = true;
        return Ok(hello);
    }
    let ext_len = usize::from(b.u16().ok_or(TlsError::Truncated("extensions length"))?);
    if b.pos + ext_len > declared {
        return Err(TlsError::Malformed("extensions run past the handshake"));
    }
    parse_extensions(&mut b, ext_len, &mut hello)?;
    Ok(hello)
}

/// The extension block: every type seen, the content of those we read.
fn parse_extensions(
    b: &mut Reader<'_>,
    ext_len: usize,
    hello: &mut ClientHello,
) -> Result<(), TlsError> {
    let end = b.pos + ext_len;
    let mut complete = true;
    while b.pos < end {
        let (Some(ty), Some(len)) = (b.u16(), b.u16()) else {
            // An extension header cut: its type is unknown.
            complete = false;
            break;
        };
        let len = usize::from(len);
        if b.pos + len > end {
            return Err(TlsError::Malformed(
                "extension runs past the extension block",
            ));
        }
        hello.extensions.push(ty);
        let Some(body) = b.take(len) else {
            // Cut inside this extension's data: the types after it are
            // unknown unless it was the last one.
            complete &= b.pos + len == end
                && !matches!(ty, SIGNATURE_ALGORITHMS | ALPN | SUPPORTED_VERSIONS);
            b.pos = b.data.len();
            break;
        };
        read_extension(ty, body, hello)?;
    }
    hello.ja4_complete = complete;
    if b.pos < end {
        hello.truncated = true;
    }
    Ok(())
}

fn read_extension(ty: u16, body: &[u8], hello: &mut ClientHello) -> Result<(), TlsError> {
    let mut e = Reader::new(body);
    match ty {
        SNI => {
            let list = usize::from(e.u16().ok_or(TlsError::Malformed("server_name"))?);
            let mut names = Reader::new(e.take(list).ok_or(TlsError::Malformed("server_name"))?);
            while let (Some(kind), Some(n)) = (names.u8(), names.u16()) {
                let name = names
                    .take(usize::from(n))
                    .ok_or(TlsError::Malformed("server_name"))?;
                if kind == 0 && hello.sni.is_none() {
                    hello.sni = Some(printable(name, 255));
                }
            }
        }
        ALPN => {
            let list = usize::from(e.u16().ok_or(TlsError::Malformed("alpn"))?);
            let mut protos = Reader::new(e.take(list).ok_or(TlsError::Malformed("alpn"))?);
            while let Some(n) = protos.u8() {
                let p = protos
                    .take(usize::from(n))
                    .ok_or(TlsError::Malformed("alpn"))?;
                hello.alpn.push(p.to_vec());
            }
        }
        SIGNATURE_ALGORITHMS => {
            let n = usize::from(e.u16().ok_or(TlsError::Malformed("signature_algorithms"))?);
            let list = e
                .take(n)
                .ok_or(TlsError::Malformed("signature_algorithms"))?;
            hello.signature_algorithms = u16_list(list);
        }
        SUPPORTED_VERSIONS => {
            let n = usize::from(e.u8().ok_or(TlsError::Malformed("supported_versions"))?);
            let list = e.take(n).ok_or(TlsError::Malformed("supported_versions"))?;
            hello.supported_versions = u16_list(list);
        }
        _ => {}
    }
    Ok(())
}

/// Bytes as text for alerts: printable ASCII kept, anything else `?`, at
/// most `max` characters.
pub fn printable(bytes: &[u8], max: usize) -> String {
    bytes
        .iter()
        .take(max)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

impl ClientHello {
    /// ALPN protocol names as text.
    pub fn alpn_names(&self) -> Vec<String> {
        self.alpn.iter().map(|p| printable(p, 64)).collect()
    }

    /// The highest TLS version offered (supported_versions, GREASE
    /// ignored; the legacy field without it).
    pub fn version(&self) -> u16 {
        self.supported_versions
            .iter()
            .copied()
            .filter(|v| !is_grease(*v))
            .max()
            .unwrap_or(self.legacy_version)
    }
}

/// JA4's two-character version code.
fn version_code(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// JA4's ALPN code: first and last character of the first ALPN value,
/// or of its hex form when either is not alphanumeric; `00` without one.
fn alpn_code(alpn: Option<&Vec<u8>>) -> String {
    let Some((&first, &last)) = alpn.and_then(|p| Some((p.first()?, p.last()?))) else {
        return "00".to_string();
    };
    if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
        format!("{}{}", char::from(first), char::from(last))
    } else {
        let hex = format!("{first:02x}{last:02x}");
        format!("{}{}", &hex[..1], &hex[3..])
    }
}

fn hex_list(values: &[u16]) -> String {
    let mut s = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{v:04x}");
    }
    s
}

fn hash12(text: &str) -> String {
    sha256_hex_prefix(text.as_bytes(), 12)
}

/// The JA4 fingerprint (`t13d1516h2_8daaf6152771_e5627efa2ab1`), or `None`
/// when the capture cut something it needs.
pub fn ja4(hello: &ClientHello) -> Option<String> {
    if !hello.ja4_complete {
        return None;
    }
    let mut ciphers: Vec<u16> = hello
        .ciphers
        .iter()
        .copied()
        .filter(|c| !is_grease(*c))
        .collect();
    let extensions: Vec<u16> = hello
        .extensions
        .iter()
        .copied()
        .filter(|e| !is_grease(*e))
        .collect();
    let a = format!(
        "t{}{}{:02}{:02}{}",
        version_code(hello.version()),
        if extensions.contains(&SNI) { 'd' } else { 'i' },
        ciphers.len().min(99),
        extensions.len().min(99),
        alpn_code(hello.alpn.first()),
    );
    ciphers.sort_unstable();
    let b = if ciphers.is_empty() {
        "000000000000".to_string()
    } else {
        hash12(&hex_list(&ciphers))
    };
    let mut hashed: Vec<u16> = extensions
        .iter()
        .copied()
        .filter(|e| *e != SNI && *e != ALPN)
        .collect();
    hashed.sort_unstable();
    let c = if extensions.is_empty() {
        "000000000000".to_string()
    } else if hello.signature_algorithms.is_empty() {
        hash12(&hex_list(&hashed))
    } else {
        hash12(&format!(
            "{}_{}",
            hex_list(&hashed),
            hex_list(&hello.signature_algorithms)
        ))
    };
    Some(format!("{a}_{b}_{c}"))
}

#[cfg(test)]
pub(super) mod tests;
