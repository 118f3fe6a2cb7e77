//! The machine (log processor): each alert of the agent becomes a CrowdSec
//! alert (`POST /v1/alerts`), scenario `scanwatch/<scan type>`, the
//! evidence in its `meta`, and — when the agent blocked the source — a
//! ban decision for the block's remaining time, which every bouncer of the
//! fleet then enforces. Alerts wait in a bounded queue while the Local API
//! cannot be reached; each is pushed once (it leaves the queue when the
//! Local API has accepted it). The local alert log stays the record.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::client::{Lapi, LapiError};
use crate::{
    detect::AlertReason,
    model::ScanType,
    output::{alert::Alert, web_alert::WebAlert},
};

/// The decisions' origin: that of every log processor's decisions, which
/// `cscli decisions list` and `alerts list` show without `--all` (their
/// scenario, `scanwatch/...`, tells them apart).
pub const ORIGIN: &str = "crowdsec";
/// Alerts in one `POST /v1/alerts`.
const BATCH: usize = 50;

/// `scanwatch/<scan type>`.
pub fn scenario(t: ScanType) -> String {
    format!("scanwatch/{}", t.name())
}

/// A stable hash of a scenario and its version (FNV-1a, hex), for
/// `scenario_hash`.
fn scenario_hash(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(env!("CARGO_PKG_VERSION").bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The time left until an RFC 3339 instant, whole seconds (at least 1).
fn seconds_until(rfc3339: &str, now: DateTime<Utc>) -> Option<u64> {
    let t = DateTime::parse_from_rfc3339(rfc3339).ok()?;
    let left = t
        .with_timezone(&Utc)
        .signed_duration_since(now)
        .num_seconds();
    u64::try_from(left).ok().filter(|s| *s > 0)
}

/// An alert's evidence as CrowdSec `meta` pairs.
fn meta_of(alert: &Alert, types: &[&str], host: &str) -> Vec<(&'static str, String)> {
    let mut meta: Vec<(&'static str, String)> = vec![
        ("source", alert.source.clone()),
        ("scan_types", types.join(",")),
        ("attack_technique", alert.attack_technique.to_string()),
        ("detector", alert.detector.to_string()),
        (
            "confidence",
            format!("{:?}", alert.confidence).to_lowercase(),
        ),
        ("total_probes", alert.total_probes.to_string()),
        ("distinct_ports", alert.distinct_ports.to_string()),
        ("distinct_udp_ports", alert.distinct_udp_ports.to_string()),
        ("distinct_hosts", alert.distinct_hosts.to_string()),
        ("distinct_icmp_hosts", alert.distinct_icmp_hosts.to_string()),
        (
            "sample_ports",
            alert
                .sample_ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("window_seconds", alert.window_seconds.to_string()),
        ("first_seen", alert.first_seen.clone()),
        ("last_seen", alert.last_seen.clone()),
        ("action", alert.action.to_string()),
        ("scanner_tool", alert.scanner_tool.name.to_string()),
        ("scanwatch_host", host.to_string()),
    ];
    if let Some(g) = &alert.group {
        meta.push((
            "group",
            format!("{} {}: {}", g.kind, g.id, g.members.join(",")),
        ));
    }
    if let Some(i) = &alert.interface {
        meta.push(("interface", i.clone()));
    }
    if let Some(r) = &alert.reply {
        meta.push((
            "reply",
            format!(
                "{} answered, {} refused, {} unanswered first contacts",
                r.successes, r.failures, r.no_answers
            ),
        ));
    }
    meta
}

/// One agent alert as a CrowdSec alert; `host` names this agent.
pub fn to_crowdsec(alert: &Alert, host: &str, now: DateTime<Utc>) -> Value {
    let types: Vec<&str> = alert.scan_types.iter().map(|t| t.name()).collect();
    let scenario = alert
        .scan_types
        .first()
        .map_or_else(|| "scanwatch/scan".to_string(), |t| scenario(*t));
    // The block scanwatch made for a new detection, for the fleet.
    let ban = (alert.action == "blocked" && alert.reason == AlertReason::New)
        .then_some(alert.block_expires.as_deref())
        .flatten()
        .and_then(|e| seconds_until(e, now));
    crowdsec_alert(
        &Shape {
            scenario,
            source: &alert.source,
            message: alert.summary(),
            events: alert.total_probes,
            start: &alert.first_seen,
            meta: meta_of(alert, &types, host),
            ban,
        },
        now,
    )
}

/// One web alert as a CrowdSec alert (scenario `scanwatch/vuln_scanner` or
/// `scanwatch/wordlist_scan`, the tool, User-Agent and sample paths in its
/// meta; a ban when the agent blocked the source).
pub fn web_to_crowdsec(alert: &WebAlert, host: &str, now: DateTime<Utc>) -> Value {
    let w = &alert.web;
    let mut meta: Vec<(&'static str, String)> = vec![
        ("source", alert.source.clone()),
        ("scan_types", alert.scan_types[0].name().to_string()),
        ("attack_technique", alert.attack_technique.to_string()),
        ("detector", alert.detector.to_string()),
        (
            "confidence",
            format!("{:?}", alert.confidence).to_lowercase(),
        ),
        (
            "scanner_tool",
            w.tool
                .as_ref()
                .map_or("unknown", |t| t.name.as_str())
                .to_string(),
        ),
        ("requests", w.requests.to_string()),
        ("not_found_paths", w.not_found_paths.to_string()),
        ("sample_paths", w.sample_paths.join(",")),
        ("hosts", w.hosts.join(",")),
        ("first_seen", alert.first_seen.clone()),
        ("last_seen", alert.last_seen.clone()),
        ("action", alert.action.to_string()),
        ("scanwatch_host", host.to_string()),
    ];
    if let Some(ua) = &w.user_agent {
        meta.push(("user_agent", ua.clone()));
    }
    let ban = (alert.action == "blocked")
        .then_some(alert.block_expires.as_deref())
        .flatten()
        .and_then(|e| seconds_until(e, now));
    crowdsec_alert(
        &Shape {
            scenario: scenario(alert.scan_types[0]),
            source: &alert.source,
            message: alert.summary(),
            events: w.requests,
            start: &alert.first_seen,
            meta,
            ban,
        },
        now,
    )
}

/// What a CrowdSec alert is made of.
struct Shape<'a> {
    scenario: String,
    /// An address, or a network (`Range`).
    source: &'a str,
    message: String,
    events: u64,
    start: &'a str,
    meta: Vec<(&'static str, String)>,
    /// A ban of this many seconds for the fleet.
    ban: Option<u64>,
}

/// The `POST /v1/alerts` object of `s`.
fn crowdsec_alert(s: &Shape<'_>, now: DateTime<Utc>) -> Value {
    let scope = if s.source.contains('/') {
        "Range"
    } else {
        "Ip"
    };
    let source = if scope == "Range" {
        json!({"scope": "Range", "value": s.source, "range": s.source})
    } else {
        json!({"scope": "Ip", "value": s.source, "ip": s.source})
    };
    let stop = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let meta: Vec<Value> = s
        .meta
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    let decisions: Vec<Value> = s
        .ban
        .map(|secs| {
            json!({
                "duration": format!("{secs}s"),
                "type": "ban",
                "scope": scope,
                "value": s.source,
                "origin": ORIGIN,
                "scenario": s.scenario,
            })
        })
        .into_iter()
        .collect();
    json!({
        "scenario": s.scenario,
        "scenario_hash": scenario_hash(&s.scenario),
        "scenario_version": env!("CARGO_PKG_VERSION"),
        "message": s.message,
        "events_count": i32::try_from(s.events).unwrap_or(i32::MAX),
        "start_at": s.start,
        "stop_at": stop,
        "capacity": 0,
        "leakspeed": "0s",
        "simulated": false,
        "remediation": !decisions.is_empty(),
        "source": source,
        "events": [{"timestamp": stop, "meta": meta}],
        "meta": meta,
        "decisions": decisions,
    })
}

/// What the machine has done, for metrics and `status`.
#[derive(Debug, Default)]
pub struct MachineCounters {
    pub pushed: AtomicU64,
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
    pub queued: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// The same figures, copied.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MachineStats {
    pub pushed: u64,
    pub dropped: u64,
    pub errors: u64,
    pub queued: u64,
    pub last_error: Option<String>,
}

impl MachineCounters {
    pub fn stats(&self) -> MachineStats {
        MachineStats {
            pushed: self.pushed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    fn set_error(&self, e: Option<&LapiError>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = e.map(ToString::to_string);
    }
}

/// The agent's side: hands alerts to the pushing task.
pub struct Machine {
    tx: mpsc::Sender<Value>,
    host: String,
    pub counters: Arc<MachineCounters>,
}

impl Machine {
    /// Starts the pushing task.
    pub fn spawn(lapi: Lapi, machine_id: String, password: String, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.clamp(1, 4096));
        let counters = Arc::new(MachineCounters::default());
        let pusher = Pusher {
            lapi,
            machine_id,
            password,
            capacity,
            queue: VecDeque::new(),
            token: None,
            counters: Arc::clone(&counters),
        };
        tokio::spawn(pusher.run(rx));
        Self {
            tx,
            host: super::super::alertmanager::hostname(),
            counters,
        }
    }

    /// Queues one alert (counted as dropped when the queue is full).
    pub fn send(&self, alert: &Alert) {
        self.queue(to_crowdsec(alert, &self.host, Utc::now()));
    }

    /// Queues one web alert (as [`Machine::send`]).
    pub fn send_web(&self, alert: &WebAlert) {
        self.queue(web_to_crowdsec(alert, &self.host, Utc::now()));
    }

    fn queue(&self, value: Value) {
        if self.tx.try_send(value).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Pusher {
    lapi: Lapi,
    machine_id: String,
    password: String,
    capacity: usize,
    queue: VecDeque<Value>,
    /// The token and when to renew it.
    token: Option<(String, Instant)>,
    counters: Arc<MachineCounters>,
}

impl Pusher {
    fn enqueue(&mut self, v: Value) {
        if self.queue.len() >= self.capacity {
            self.queue.pop_front();
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.queue.push_back(v);
        self.counters
            .queued
            .store(self.queue.len() as u64, Ordering::Relaxed);
    }

    /// A valid token (logs in when there is none or it is about to expire).
    async fn token(&mut self) -> Result<String, LapiError> {
        if let Some((t, renew)) = &self.token
            && Instant::now() < *renew
        {
            return Ok(t.clone());
        }
        let scenarios: Vec<String> = ScanType::ALL.iter().map(|t| scenario(*t)).collect();
        let t = self
            .lapi
            .login(&self.machine_id, &self.password, &scenarios)
            .await?;
        let left = DateTime::parse_from_rfc3339(&t.expire)
            .ok()
            .and_then(|e| {
                e.with_timezone(&Utc)
                    .signed_duration_since(Utc::now())
                    .to_std()
                    .ok()
            })
            .unwrap_or(Duration::from_secs(600));
        // Renewed a minute before it expires (or half-way, if shorter).
        let renew = Instant::now() + left.saturating_sub(Duration::from_secs(60)).max(left / 2);
        log::info!(
            "CrowdSec LAPI {}: logged in as machine {} (token until {})",
            self.lapi.url(),
            self.machine_id,
            t.expire
        );
        self.token = Some((t.token.clone(), renew));
        Ok(t.token)
    }

    /// Pushes the head of the queue; `Ok(n)` alerts went.
    async fn push_batch(&mut self) -> Result<usize, LapiError> {
        let n = self.queue.len().min(BATCH);
        let batch: Vec<&Value> = self.queue.iter().take(n).collect();
        let body = serde_json::to_vec(&batch).unwrap_or_else(|_| b"[]".to_vec());
        let token = self.token().await?;
        match self.lapi.push_alerts(&token, &self.machine_id, &body).await {
            Err(LapiError::BadLogin { .. }) => {
                // Expired or revoked: log in again once.
                self.token = None;
                let token = self.token().await?;
                self.lapi
                    .push_alerts(&token, &self.machine_id, &body)
                    .await?;
            }
            other => other?,
        }
        Ok(n)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Value>) {
        let mut delay = Duration::from_secs(1);
        let mut last_log: Option<Instant> = None;
        loop {
            if self.queue.is_empty() {
                match rx.recv().await {
                    Some(v) => self.enqueue(v),
                    None => return,
                }
            }
            while let Ok(v) = rx.try_recv() {
                self.enqueue(v);
            }
            match self.push_batch().await {
                Ok(n) => {
                    self.queue.drain(..n);
                    self.counters
                        .queued
                        .store(self.queue.len() as u64, Ordering::Relaxed);
                    self.counters.pushed.fetch_add(n as u64, Ordering::Relaxed);
                    self.counters.set_error(None);
                    if last_log.take().is_some() {
                        log::info!("CrowdSec LAPI {}: alerts pushed again", self.lapi.url());
                    }
                    delay = Duration::from_secs(1);
                }
                Err(e) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    self.counters.set_error(Some(&e));
                    if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(600)) {
                        log::error!("{e} (alerts queued: {})", self.queue.len());
                        last_log = Some(Instant::now());
                    }
                    if let LapiError::Status { status, .. } = e
                        && (400..500).contains(&status)
                    {
                        // The Local API refuses these alerts: retrying cannot help.
                        let n = self.queue.len().min(BATCH);
                        self.queue.drain(..n);
                        self.counters.dropped.fetch_add(n as u64, Ordering::Relaxed);
                        continue;
                    }
                    // Keep queueing while waiting.
                    let until = tokio::time::Instant::now() + delay;
                    loop {
                        tokio::select! {
                            v = rx.recv() => match v {
                                Some(v) => self.enqueue(v),
                                None => return,
                            },
                            () = tokio::time::sleep_until(until) => break,
                        }
                    }
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::alert::tests::sample;

    /// The value of `meta` key `k` of a CrowdSec alert.
    fn meta_value(v: &Value, k: &str) -> Option<Value> {
        v["meta"]
            .as_array()?
            .iter()
            .find(|m| m["key"] == k)
            .map(|m| m["value"].clone())
    }

    #[test]
    fn a_web_alert_as_crowdsec_sees_it() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = crate::model::KernelClock::now();
        let finding = crate::output::web_alert::tests::finding(true);
        let mut alert = WebAlert::from_finding(&finding, 300, &clock);
        let v = web_to_crowdsec(&alert, "edge1", now);
        assert_eq!(v["scenario"], "scanwatch/wordlist_scan");
        assert_eq!(v["source"]["value"], "198.18.0.1");
        assert_eq!(v["events_count"], 42);
        assert_eq!(v["decisions"], json!([]), "not blocked: no decision");
        let meta = |k: &str| meta_value(&v, k);
        assert_eq!(meta("scanner_tool"), Some(json!("gobuster")));
        assert_eq!(meta("user_agent"), Some(json!("gobuster/3.5")));
        assert_eq!(meta("sample_paths"), Some(json!("/admin,/.git/config")));
        assert_eq!(meta("attack_technique"), Some(json!("T1595.003")));
        alert.set_outcome(super::super::super::mitigation::Action::Blocked {
            expires: "2026-01-01T01:00:00Z".into(),
        });
        let v = web_to_crowdsec(&alert, "edge1", now);
        assert_eq!(v["decisions"][0]["duration"], "3600s");
        assert_eq!(v["decisions"][0]["scenario"], "scanwatch/wordlist_scan");
        assert_eq!(v["remediation"], true);
    }

    #[test]
    fn an_alert_as_crowdsec_sees_it() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut alert = sample();
        let v = to_crowdsec(&alert, "edge1", now);
        assert_eq!(v["scenario"], "scanwatch/port_scan");
        assert_eq!(v["scenario_version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["scenario_hash"].as_str().unwrap().len(), 16);
        assert_eq!(v["source"]["scope"], "Ip");
        assert_eq!(v["source"]["value"], "198.18.0.9");
        assert_eq!(v["events_count"], 1000);
        assert_eq!(v["stop_at"], "2026-01-01T00:00:00Z");
        assert_eq!(v["remediation"], false);
        assert_eq!(v["decisions"], json!([]), "not blocked: no decision");
        let meta = |k: &str| meta_value(&v, k);
        assert_eq!(meta("distinct_ports"), Some(json!("1000")));
        assert_eq!(meta("sample_ports"), Some(json!("22,80,443")));
        assert_eq!(meta("scanwatch_host"), Some(json!("edge1")));
        assert_eq!(meta("scanner_tool"), Some(json!("unknown")));
        assert_eq!(v["events"][0]["meta"], v["meta"]);

        // Blocked by the agent: a ban for the block's remaining time.
        alert.action = "blocked";
        alert.block_expires = Some("2026-01-01T01:00:00.000Z".into());
        let v = to_crowdsec(&alert, "edge1", now);
        assert_eq!(v["remediation"], true);
        assert_eq!(
            v["decisions"],
            json!([{"duration": "3600s", "type": "ban", "scope": "Ip", "value": "198.18.0.9",
                    "origin": "crowdsec", "scenario": "scanwatch/port_scan"}])
        );
        // An escalation of a blocked source: no second decision.
        alert.reason = AlertReason::Escalated;
        assert_eq!(to_crowdsec(&alert, "edge1", now)["decisions"], json!([]));
        // A network source (IPv6 /64): scope Range.
        alert.source = "fd00:5::/64".into();
        let v = to_crowdsec(&alert, "edge1", now);
        assert_eq!(v["source"]["scope"], "Range");
        assert_eq!(v["source"]["range"], "fd00:5::/64");
    }
}
