//! Optional push of detections to Alertmanager's v2 API
//! (`--alertmanager-url`), for sites that want alerts without a rule.
//! Each flagged source and scan type is one alert, re-sent while the source
//! stays active with `endsAt` a few re-send intervals ahead, and sent once
//! more with `endsAt` = now when it stops.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::detect::ScanType;

/// How often active alerts are re-sent.
pub const RESEND: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AlertmanagerError {
    #[error("--alertmanager-url {0:?}: expected http://HOST:PORT[/PATH] (https is not supported)")]
    Url(String),
    #[error("alertmanager {url}: {detail}")]
    Push { url: String, detail: String },
}

/// An Alertmanager endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alertmanager {
    pub url: String,
    host: String,
    port: u16,
    path: String,
}

impl Alertmanager {
    pub fn parse(url: &str) -> Result<Self, AlertmanagerError> {
        let bad = || AlertmanagerError::Url(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(bad());
        }
        let prefix = prefix.trim_end_matches('/');
        let path = if prefix.is_empty() {
            "/api/v2/alerts".to_string()
        } else {
            format!("/{prefix}/api/v2/alerts")
        };
        Ok(Self {
            url: url.to_string(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            path,
        })
    }

    /// POSTs a JSON body; Ok when Alertmanager answers 200.
    pub async fn post(&self, body: &[u8]) -> Result<(), AlertmanagerError> {
        let err = |detail: String| AlertmanagerError::Push {
            url: self.url.clone(),
            detail,
        };
        let exchange = async {
            let mut stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                self.path,
                self.host,
                self.port,
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok::<Vec<u8>, std::io::Error>(response)
        };
        let response = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| err("timed out".into()))?
            .map_err(|e| err(e.to_string()))?;
        let status = String::from_utf8_lossy(&response);
        let line = status.lines().next().unwrap_or_default();
        if line.split_whitespace().nth(1) == Some("200") {
            Ok(())
        } else {
            Err(err(format!("answered {line:?}")))
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AmAlert {
    labels: BTreeMap<&'static str, String>,
    annotations: BTreeMap<&'static str, String>,
    starts_at: String,
    ends_at: String,
}

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One flagged source's alerts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flagged {
    pub source: String,
    pub types: Vec<ScanType>,
    pub since: SystemTime,
}

/// The v2 API body: firing alerts end `3 x RESEND` from `now`; resolved ones end now.
pub fn body(firing: &[Flagged], resolved: &[Flagged], instance: &str, now: SystemTime) -> Vec<u8> {
    let mut alerts = Vec::new();
    for (list, ends) in [(firing, now + 3 * RESEND), (resolved, now)] {
        for f in list {
            for t in &f.types {
                alerts.push(AmAlert {
                    labels: BTreeMap::from([
                        ("alertname", "ScanwatchScanDetected".to_string()),
                        ("source", f.source.clone()),
                        ("type", t.name().to_string()),
                        ("instance", instance.to_string()),
                        ("origin", "scanwatch-agent".to_string()),
                        ("severity", "warning".to_string()),
                    ]),
                    annotations: BTreeMap::from([(
                        "summary",
                        format!(
                            "{} is scanning ({}), seen by {instance}",
                            f.source,
                            t.name()
                        ),
                    )]),
                    starts_at: rfc3339(f.since),
                    ends_at: rfc3339(ends),
                });
            }
        }
    }
    serde_json::to_vec(&alerts).unwrap_or_else(|_| b"[]".to_vec())
}

/// This host's name, for the `instance` label.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    if ok && end > 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let am = Alertmanager::parse("http://198.18.0.1:19093").unwrap();
        assert_eq!(
            (am.host.as_str(), am.port, am.path.as_str()),
            ("198.18.0.1", 19093, "/api/v2/alerts")
        );
        let am = Alertmanager::parse("http://am.example:9093/prefix/").unwrap();
        assert_eq!(am.path, "/prefix/api/v2/alerts");
        let am = Alertmanager::parse("http://[fd00::1]:9093").unwrap();
        assert_eq!((am.host.as_str(), am.port), ("fd00::1", 9093));
        assert_eq!(Alertmanager::parse("http://am").unwrap().port, 80);
        for bad in [
            "https://am:9093",
            "am:9093",
            "http://",
            "http://am:notaport",
        ] {
            assert!(Alertmanager::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn body_has_one_alert_per_type() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let f = Flagged {
            source: "198.18.0.9".into(),
            types: vec![ScanType::PortScan, ScanType::StealthScan],
            since: now,
        };
        let v: serde_json::Value = serde_json::from_slice(&body(
            std::slice::from_ref(&f),
            std::slice::from_ref(&f),
            "edge1",
            now,
        ))
        .unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a[0]["labels"]["alertname"], "ScanwatchScanDetected");
        assert_eq!(a[0]["labels"]["type"], "port_scan");
        assert_eq!(a[0]["labels"]["source"], "198.18.0.9");
        assert_eq!(a[0]["endsAt"], "1970-01-01T00:18:10.000Z");
        assert_eq!(
            a[2]["endsAt"], "1970-01-01T00:16:40.000Z",
            "resolved: ends now"
        );
    }
}
