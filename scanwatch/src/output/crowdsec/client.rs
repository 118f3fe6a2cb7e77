//! A small client of CrowdSec's Local API (plain HTTP/1.1, one request per
//! connection): the bouncer's decision stream, the machine's login and
//! alert push.

use std::time::Duration;

use serde::Deserialize;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::model::HttpEndpoint;

const TIMEOUT: Duration = Duration::from_secs(30);
/// A decision stream with a community blocklist is a few MB; more is refused.
const MAX_RESPONSE: usize = 64 << 20;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LapiError {
    /// Not reached, or no complete answer.
    #[error("CrowdSec LAPI {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// The bouncer's API key was refused (403).
    #[error(
        "CrowdSec LAPI {url} refused the bouncer's API key ({detail}): check [crowdsec] api_key_file (cscli bouncers add NAME -o raw)"
    )]
    BadApiKey { url: String, detail: String },
    /// The machine's login was refused, or its token expired (401).
    #[error(
        "CrowdSec LAPI {url} refused machine {machine}'s login ({detail}): check [crowdsec] machine_id and password_file (cscli machines add NAME --password P)"
    )]
    BadLogin {
        url: String,
        machine: String,
        detail: String,
    },
    /// Any other answer.
    #[error("CrowdSec LAPI {url}{path}: answered {status}: {detail}")]
    Status {
        url: String,
        path: String,
        status: u16,
        detail: String,
    },
}

impl LapiError {
    /// A short name for the `result` label of the pull counter.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::BadApiKey { .. } | Self::BadLogin { .. } => "unauthorized",
            Self::Status { .. } => "error",
        }
    }
}

/// One HTTP answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text, shortened, for error messages.
    pub fn detail(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        match text.char_indices().nth(200) {
            Some((i, _)) => format!("{}...", &text[..i]),
            None => text.to_string(),
        }
    }
}

/// Decodes a chunked body.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if body.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Splits a raw response into status and (de-chunked) body.
pub fn parse_response(raw: &[u8]) -> Option<Answer> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Some(Answer { status, body })
}

/// The Local API at one endpoint.
#[derive(Clone, Debug)]
pub struct Lapi {
    endpoint: HttpEndpoint,
}

impl Lapi {
    pub const fn new(endpoint: HttpEndpoint) -> Self {
        Self { endpoint }
    }

    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    fn unreachable(&self, detail: String) -> LapiError {
        LapiError::Unreachable {
            url: self.endpoint.url.clone(),
            detail,
        }
    }

    /// One request; `headers` are whole lines without CRLF.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[String],
        body: Option<&[u8]>,
    ) -> Result<Answer, LapiError> {
        let HttpEndpoint {
            host,
            port,
            path: prefix,
            ..
        } = &self.endpoint;
        let mut head = format!(
            "{method} {prefix}{path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: scanwatch/{}\r\nConnection: close\r\n",
            env!("CARGO_PKG_VERSION")
        );
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        let exchange = async {
            let mut stream = TcpStream::connect((host.as_str(), *port)).await?;
            stream.write_all(head.as_bytes()).await?;
            if let Some(b) = body {
                stream.write_all(b).await?;
            }
            let mut response = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                if response.len() + n > MAX_RESPONSE {
                    return Err(std::io::Error::other("response over 64 MiB"));
                }
                response.extend_from_slice(&chunk[..n]);
            }
            Ok::<Vec<u8>, std::io::Error>(response)
        };
        let raw = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| self.unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))?
            .map_err(|e| self.unreachable(e.to_string()))?;
        parse_response(&raw).ok_or_else(|| self.unreachable("malformed HTTP answer".into()))
    }

    /// `GET /v1/decisions/stream` with the bouncer's key.
    pub async fn stream(
        &self,
        api_key: &str,
        startup: bool,
        scopes: &[String],
        origins: &[String],
    ) -> Result<Stream, LapiError> {
        let mut query = format!("?startup={startup}");
        if !scopes.is_empty() {
            query.push_str(&format!("&scopes={}", scopes.join(",")));
        }
        if !origins.is_empty() {
            query.push_str(&format!("&origins={}", origins.join(",")));
        }
        let path = format!("/v1/decisions/stream{query}");
        let answer = self
            .request("GET", &path, &[format!("X-Api-Key: {api_key}")], None)
            .await?;
        match answer.status {
            200 => serde_json::from_slice(&answer.body).map_err(|e| LapiError::Status {
                url: self.url().to_string(),
                path,
                status: 200,
                detail: format!("not a decision stream: {e}"),
            }),
            401 | 403 => Err(LapiError::BadApiKey {
                url: self.url().to_string(),
                detail: answer.detail(),
            }),
            status => Err(LapiError::Status {
                url: self.url().to_string(),
                path,
                status,
                detail: answer.detail(),
            }),
        }
    }

    /// `POST /v1/watchers/login`: a token and its expiry (RFC 3339).
    pub async fn login(
        &self,
        machine: &str,
        password: &str,
        scenarios: &[String],
    ) -> Result<Token, LapiError> {
        let body = serde_json::json!({
            "machine_id": machine,
            "password": password,
            "scenarios": scenarios,
        });
        let answer = self
            .request(
                "POST",
                "/v1/watchers/login",
                &[],
                Some(body.to_string().as_bytes()),
            )
            .await?;
        match answer.status {
            200 => serde_json::from_slice(&answer.body).map_err(|e| LapiError::Status {
                url: self.url().to_string(),
                path: "/v1/watchers/login".into(),
                status: 200,
                detail: format!("no token: {e}"),
            }),
            status => Err(self.machine_refused(machine, "/v1/watchers/login", status, &answer)),
        }
    }

    /// `POST /v1/alerts` with a JSON array of alerts.
    pub async fn push_alerts(
        &self,
        token: &str,
        machine: &str,
        body: &[u8],
    ) -> Result<(), LapiError> {
        let answer = self
            .request(
                "POST",
                "/v1/alerts",
                &[format!("Authorization: Bearer {token}")],
                Some(body),
            )
            .await?;
        match answer.status {
            200 | 201 => Ok(()),
            status => Err(self.machine_refused(machine, "/v1/alerts", status, &answer)),
        }
    }

    /// A machine's request refused: a bad login (401, 403) or another status.
    fn machine_refused(
        &self,
        machine: &str,
        path: &str,
        status: u16,
        answer: &Answer,
    ) -> LapiError {
        match status {
            401 | 403 => LapiError::BadLogin {
                url: self.url().to_string(),
                machine: machine.to_string(),
                detail: answer.detail(),
            },
            status => LapiError::Status {
                url: self.url().to_string(),
                path: path.into(),
                status,
                detail: answer.detail(),
            },
        }
    }
}

/// A machine's token.
#[derive(Clone, Debug, Deserialize)]
pub struct Token {
    pub token: String,
    pub expire: String,
}

/// One decision as the stream gives it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Decision {
    pub id: i64,
    /// Time left, a Go duration (`3h59m58.9s`; negative once over).
    pub duration: String,
    #[serde(default)]
    pub origin: String,
    #[serde(default)]
    pub scenario: String,
    pub scope: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// `GET /v1/decisions/stream`'s answer (`null` lists when empty).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Stream {
    #[serde(default)]
    pub new: Option<Vec<Decision>>,
    #[serde(default)]
    pub deleted: Option<Vec<Decision>>,
}

/// Parses a Go duration (`1h2m3.5s`, `250ms`, `-10.3ms`, `0s`); `None` if
/// it is not one. Negative durations are `Some(None)`: over.
pub fn go_duration(text: &str) -> Option<Option<Duration>> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Some(Duration::ZERO));
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * scale;
    }
    if negative && total > 0.0 {
        return Some(None);
    }
    Duration::try_from_secs_f64(total).ok().map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let d = |s| go_duration(s).unwrap().unwrap().as_secs_f64();
        assert!((d("3h59m58.849077318s") - 14_398.849_077_318).abs() < 1e-6);
        assert!((d("1m58.5s") - 118.5).abs() < 1e-9);
        assert!((d("250ms") - 0.25).abs() < 1e-9);
        assert!((d("1h0m0s") - 3600.0).abs() < 1e-9);
        assert_eq!(d("0s"), 0.0);
        assert_eq!(go_duration("-10.328995ms"), Some(None), "over");
        for bad in ["", "5", "1x", "h", "1h-2m", "--1s"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn responses() {
        let a = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"new\r\nc\r\n\":null,\"a\":1\r\n1\r\n}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.body, b"{\"new\":null,\"a\":1}");
        let a = parse_response(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 30\r\n\r\n{\"message\":\"access forbidden\"}").unwrap();
        assert_eq!(
            (a.status, a.detail().as_str()),
            (403, "{\"message\":\"access forbidden\"}")
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_none());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .is_none()
        );
        let s: Stream = serde_json::from_str(
            r#"{"deleted":null,"new":[{"duration":"58.8s","id":1,"origin":"cscli","scenario":"manual 'ban' from 'cscli'","scope":"Ip","type":"ban","value":"198.18.5.5"}]}"#,
        )
        .unwrap();
        let new = s.new.unwrap();
        assert_eq!(
            (new[0].id, new[0].kind.as_str(), new[0].scope.as_str()),
            (1, "ban", "Ip")
        );
        assert!(s.deleted.is_none());
    }
}
