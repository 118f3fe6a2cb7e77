//! Optional push of detections to Alertmanager's v2 API
//! (`--alertmanager-url`), for sites that want alerts without a rule.
//! Each flagged source and scan type is one alert, re-sent while the source
//! stays active with `endsAt` a few re-send intervals ahead, and sent once
//! more with `endsAt` = now when it stops.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::model::{HttpEndpoint, ScanType};

/// How often active alerts are re-sent.
pub const RESEND: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AlertmanagerError {
    #[error("alertmanager {url}: {detail}")]
    Push { url: String, detail: String },
}

/// An Alertmanager endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alertmanager {
    endpoint: HttpEndpoint,
}

impl Alertmanager {
    pub const fn new(endpoint: HttpEndpoint) -> Self {
        Self { endpoint }
    }

    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// POSTs a JSON body; Ok when Alertmanager answers 200.
    pub async fn post(&self, body: &[u8]) -> Result<(), AlertmanagerError> {
        let HttpEndpoint {
            url,
            host,
            port,
            path,
        } = &self.endpoint;
        let err = |detail: String| AlertmanagerError::Push {
            url: url.clone(),
            detail,
        };
        let exchange = async {
            let mut stream = TcpStream::connect((host.as_str(), *port)).await?;
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                path,
                host,
                port,
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

/// Push outcomes, counted by the pushing tasks (metrics read them).
#[derive(Debug, Default)]
pub struct PushCounters {
    pub pushes: AtomicU64,
    pub errors: AtomicU64,
}

/// What has been pushed: sources firing at the last push and since when,
/// so that a source that stops is sent once more as resolved.
#[derive(Debug)]
pub struct Pusher {
    am: Alertmanager,
    instance: String,
    pushed: HashMap<String, Flagged>,
    since: HashMap<String, SystemTime>,
    pub counters: Arc<PushCounters>,
}

impl Pusher {
    pub fn new(am: Alertmanager) -> Self {
        Self {
            am,
            instance: hostname(),
            pushed: HashMap::new(),
            since: HashMap::new(),
            counters: Arc::new(PushCounters::default()),
        }
    }

    /// `flagged`: each flagged source with its scan types, now.
    fn firing(&mut self, flagged: Vec<(String, Vec<ScanType>)>) -> Vec<Flagged> {
        flagged
            .into_iter()
            .map(|(source, types)| {
                let since = *self
                    .since
                    .entry(source.clone())
                    .or_insert_with(SystemTime::now);
                Flagged {
                    source,
                    types,
                    since,
                }
            })
            .collect()
    }

    /// Every [`RESEND`]: re-sends the firing sources and resolves those that
    /// stopped.
    pub fn resend(&mut self, flagged: Vec<(String, Vec<ScanType>)>) {
        let firing = self.firing(flagged);
        let resolved: Vec<Flagged> = self
            .pushed
            .values()
            .filter(|p| !firing.iter().any(|f| f.source == p.source))
            .cloned()
            .collect();
        for r in &resolved {
            self.since.remove(&r.source);
        }
        self.pushed = firing
            .iter()
            .map(|f| (f.source.clone(), f.clone()))
            .collect();
        if !firing.is_empty() || !resolved.is_empty() {
            self.push(body(&firing, &resolved, &self.instance, SystemTime::now()));
        }
    }

    /// New alerts go out at once, not at the next re-send: `alerted` are
    /// their sources.
    pub fn alerted(&mut self, flagged: Vec<(String, Vec<ScanType>)>, alerted: &[String]) {
        let firing: Vec<Flagged> = self
            .firing(flagged)
            .into_iter()
            .filter(|f| alerted.contains(&f.source))
            .collect();
        for f in &firing {
            self.pushed.insert(f.source.clone(), f.clone());
        }
        self.push(body(&firing, &[], &self.instance, SystemTime::now()));
    }

    /// Pushes in the background; counts the outcome.
    fn push(&self, body: Vec<u8>) {
        let am = self.am.clone();
        let counters = Arc::clone(&self.counters);
        tokio::spawn(async move {
            match am.post(&body).await {
                Ok(()) => counters.pushes.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    log::warn!("{e}");
                    counters.errors.fetch_add(1, Ordering::Relaxed)
                }
            };
        });
    }
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
