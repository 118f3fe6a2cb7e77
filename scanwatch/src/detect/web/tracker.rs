//! The per-source web tracker: HTTP requests and TLS ClientHellos the
//! kernel sampled, the status codes of the answers, and the findings they
//! make. No I/O and no clock: times come with the events.
//!
//! - `vuln_scanner`: a request whose User-Agent (or a ClientHello whose
//!   JA4) matches a catalogue entry of kind `vuln_scanner`, at once.
//! - `wordlist_scan`: a catalogue match of kind `wordlist_scan`, at once;
//!   or the source's distinct not-found paths (answered 404, 403 or 400,
//!   static resources excepted) in its window reaching `wordlist_paths`.
//!
//! HTTP/1.1 answers requests of a connection in order, so each connection
//! keeps a FIFO of the paths it asked for (at most 8): an answer takes the
//! oldest. Everything is bounded: sources (the oldest seen evicted, an
//! eighth at a time), connections (likewise), pending requests, the
//! distinct not-found paths of a source (at most the threshold), samples.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::IpAddr,
};

use ipnet::IpNet;

use super::{
    catalogue::{Catalogue, Entry},
    http::{is_static, parse_request},
    tls::{ja4, parse_client_hello},
};
use crate::{
    config::Detection,
    model::{Connection, SourcePrefixes, WebEvent, WebScanKind},
};

/// Requests awaiting their answer on one connection.
pub const MAX_PENDING: usize = 8;
/// Not-found paths kept as a sample in a finding.
pub const SAMPLE_PATHS: usize = 10;
/// Longest sample path kept (characters).
pub const SAMPLE_PATH_LEN: usize = 200;
/// Distinct Host headers kept per source.
pub const MAX_HOSTS: usize = 4;
/// ClientHellos remembered per source.
pub const TLS_SEEN: usize = 4;
/// Findings waiting for [`WebDetector::take_findings`].
pub const MAX_QUEUED_FINDINGS: usize = 1024;

/// What the tracker needs from the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct WebSettings {
    /// A source's tumbling window.
    pub window_ns: u64,
    /// At most one finding per source and kind within this time.
    pub suppression_ns: u64,
    /// Distinct not-found paths that make a wordlist scan.
    pub wordlist_paths: u32,
    pub max_sources: usize,
    pub max_connections: usize,
    /// Sources are networks of these lengths (as the kernel counts them).
    pub prefixes: SourcePrefixes,
    /// Sources never tracked.
    pub ignore: Vec<IpNet>,
    /// A finding waits this long after the request that made it, then
    /// carries the source's evidence as it is by then (a tool named at its
    /// first request has sent more by then).
    pub hold_ns: u64,
}

impl WebSettings {
    /// From `[detection]`: its window, suppression, prefixes and `ignore`
    /// list, and `[detection.web]` (connections: four per source).
    pub fn from_config(d: &Detection) -> Self {
        let max_sources = d.web.max_sources as usize;
        Self {
            window_ns: d.window_seconds.saturating_mul(1_000_000_000),
            suppression_ns: d.suppression_seconds.saturating_mul(1_000_000_000),
            wordlist_paths: d.web.wordlist_paths,
            max_sources,
            max_connections: max_sources.saturating_mul(4),
            prefixes: d.prefixes(),
            ignore: d.ignore.clone(),
            hold_ns: d.first_alert_hold_milliseconds.saturating_mul(1_000_000),
        }
    }
}

/// A ClientHello a source sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSeen {
    pub sni: Option<String>,
    /// `None` when the capture cut something JA4 needs.
    pub ja4: Option<String>,
    pub local_port: u16,
    pub time_ns: u64,
}

/// The catalogue entry that named the tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolMatch {
    pub name: String,
    /// `"user_agent"` or `"ja4"`.
    pub matched_by: &'static str,
}

/// A web-layer detection of one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebFinding {
    pub source: IpNet,
    pub kind: WebScanKind,
    pub tool: Option<ToolMatch>,
    pub user_agent: Option<String>,
    /// Distinct Host headers (at most 4).
    pub hosts: Vec<String>,
    /// Requests of the source in its window.
    pub requests: u64,
    /// Distinct not-found paths in the window (at most the threshold).
    pub not_found_paths: u64,
    /// The first not-found paths (at most 10, each at most 200 characters).
    pub sample_paths: Vec<String>,
    pub tls: Vec<TlsSeen>,
    pub first_ns: u64,
    pub last_ns: u64,
}

/// Plain counters (the lead's metrics read them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebStats {
    pub requests_parsed: u64,
    pub http_unparseable: u64,
    pub tls_hellos: u64,
    pub tls_unparseable: u64,
    pub responses_matched: u64,
    pub responses_unmatched: u64,
    /// Sources tracked now.
    pub sources_tracked: u64,
    pub sources_evicted: u64,
    pub connections_evicted: u64,
    /// Requests dropped from a full pending FIFO (its oldest).
    pub pending_dropped: u64,
    /// Events from `ignore` sources.
    pub ignored: u64,
    /// Findings not emitted: the source had one of that kind within the
    /// suppression interval.
    pub suppressed: u64,
    /// Findings dropped because nobody took them.
    pub findings_dropped: u64,
    pub findings_vuln_scanner: u64,
    pub findings_wordlist_scan: u64,
}

#[derive(Debug, Default)]
struct SourceState {
    last_seen_ns: u64,
    window_start_ns: u64,
    first_ns: u64,
    requests: u64,
    not_found: HashSet<String>,
    sample: Vec<String>,
    hosts: Vec<String>,
    user_agent: Option<String>,
    /// The catalogue entry the latest User-Agent matched.
    ua_tool: Option<(String, WebScanKind)>,
    tls: VecDeque<TlsSeen>,
    /// When each kind was last found (index: `kind as usize`).
    last_finding_ns: [Option<u64>; 2],
}

impl SourceState {
    /// The source's window as a finding shows it (all but `last_ns`).
    fn evidence_into(&self, f: &mut WebFinding) {
        f.hosts.clone_from(&self.hosts);
        f.requests = self.requests;
        f.not_found_paths = self.not_found.len() as u64;
        f.sample_paths.clone_from(&self.sample);
        f.tls = self.tls.iter().cloned().collect();
        f.first_ns = self.first_ns;
    }
}

#[derive(Debug, Default)]
struct ConnState {
    last_seen_ns: u64,
    /// Paths of the requests awaiting an answer (`None`: not counted:
    /// unparseable or static).
    pending: VecDeque<Option<String>>,
}

/// The web-layer detector.
#[derive(Debug)]
pub struct WebDetector {
    settings: WebSettings,
    catalogue: Catalogue,
    sources: HashMap<IpNet, SourceState>,
    conns: HashMap<Connection, ConnState>,
    /// Findings and when they are due.
    findings: Vec<(u64, WebFinding)>,
    stats: WebStats,
}

/// Why a finding is made.
struct Trigger<'a> {
    kind: WebScanKind,
    tool: Option<ToolMatch>,
    user_agent: Option<&'a str>,
}

impl WebDetector {
    pub fn new(settings: WebSettings, catalogue: Catalogue) -> Self {
        Self {
            settings,
            catalogue,
            sources: HashMap::new(),
            conns: HashMap::new(),
            findings: Vec::new(),
            stats: WebStats::default(),
        }
    }

    /// One event from the kernel.
    pub fn observe(&mut self, event: WebEvent) {
        let remote = event.conn().remote.ip();
        if self.ignored(remote) {
            self.stats.ignored += 1;
            return;
        }
        match event {
            WebEvent::Request {
                conn,
                time_ns,
                payload,
                ..
            } => {
                if payload.first() == Some(&0x16) {
                    self.on_client_hello(conn, time_ns, &payload);
                } else {
                    self.on_request(conn, time_ns, &payload);
                }
            }
            WebEvent::Response {
                conn,
                time_ns,
                status,
            } => self.on_response(conn, time_ns, status),
        }
    }

    /// When the first waiting finding is due (kernel clock).
    pub fn next_due_ns(&self) -> Option<u64> {
        self.findings.iter().map(|(due, _)| *due).min()
    }

    /// The findings due at `now_ns` (kernel clock), each with its source's
    /// evidence as it is now.
    pub fn take_findings(&mut self, now_ns: u64) -> Vec<WebFinding> {
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.findings)
            .into_iter()
            .partition(|(at, _)| *at <= now_ns);
        self.findings = waiting;
        due.into_iter()
            .map(|(_, mut f)| {
                if let Some(s) = self.sources.get(&f.source) {
                    s.evidence_into(&mut f);
                    f.last_ns = s.last_seen_ns.max(f.last_ns);
                }
                f
            })
            .collect()
    }

    /// The most recent ClientHellos of `source` (oldest first).
    pub fn tls_seen(&self, source: &IpNet) -> Vec<TlsSeen> {
        self.sources
            .get(source)
            .map(|s| s.tls.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn stats(&self) -> WebStats {
        WebStats {
            sources_tracked: self.sources.len() as u64,
            ..self.stats
        }
    }

    /// The source network of `ip`.
    pub fn source_of(&self, ip: IpAddr) -> IpNet {
        self.settings.prefixes.network(ip)
    }

    fn ignored(&self, ip: IpAddr) -> bool {
        let source = self.source_of(ip);
        self.settings.ignore.iter().any(|n| n.contains(&source))
    }

    fn on_request(&mut self, conn: Connection, time_ns: u64, payload: &[u8]) {
        let Ok(req) = parse_request(payload) else {
            self.stats.http_unparseable += 1;
            // Its answer still comes: keep the FIFO in step.
            self.push_pending(conn, time_ns, None);
            return;
        };
        self.stats.requests_parsed += 1;
        let counted = (!is_static(&req.path)).then(|| req.path.clone());
        self.push_pending(conn, time_ns, counted);
        let source = self.source_of(conn.remote.ip());
        // The catalogue's regexes run once per User-Agent a source changes
        // to, not per request (most of the agent's time per request).
        let known = self
            .sources
            .get(&source)
            .filter(|s| s.user_agent.is_some() && s.user_agent == req.user_agent)
            .map(|s| s.ua_tool.clone());
        let tool = match known {
            Some(tool) => tool,
            None => req
                .user_agent
                .as_deref()
                .and_then(|ua| self.catalogue.match_user_agent(ua))
                .map(|e: &Entry| (e.tool.clone(), e.kind)),
        };
        let s = self.source(source, time_ns);
        s.requests += 1;
        if let Some(host) = req.host
            && s.hosts.len() < MAX_HOSTS
            && !s.hosts.contains(&host)
        {
            s.hosts.push(host);
        }
        if req.user_agent.is_some() {
            s.user_agent.clone_from(&req.user_agent);
            s.ua_tool.clone_from(&tool);
        }
        if let Some((name, kind)) = tool {
            let ua = req.user_agent.as_deref();
            self.find(
                source,
                time_ns,
                &Trigger {
                    kind,
                    tool: Some(ToolMatch {
                        name,
                        matched_by: "user_agent",
                    }),
                    user_agent: ua,
                },
            );
        }
    }

    fn on_client_hello(&mut self, conn: Connection, time_ns: u64, payload: &[u8]) {
        let Ok(hello) = parse_client_hello(payload) else {
            self.stats.tls_unparseable += 1;
            return;
        };
        self.stats.tls_hellos += 1;
        let fingerprint = ja4(&hello);
        let tool = fingerprint
            .as_deref()
            .and_then(|j| self.catalogue.match_ja4(j))
            .map(|e| (e.tool.clone(), e.kind));
        let source = self.source_of(conn.remote.ip());
        let s = self.source(source, time_ns);
        if s.tls.len() == TLS_SEEN {
            s.tls.pop_front();
        }
        s.tls.push_back(TlsSeen {
            sni: hello.sni,
            ja4: fingerprint,
            local_port: conn.local.port(),
            time_ns,
        });
        if let Some((name, kind)) = tool {
            self.find(
                source,
                time_ns,
                &Trigger {
                    kind,
                    tool: Some(ToolMatch {
                        name,
                        matched_by: "ja4",
                    }),
                    user_agent: None,
                },
            );
        }
    }

    fn on_response(&mut self, conn: Connection, time_ns: u64, status: u16) {
        let Some(path) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.pending.pop_front())
        else {
            self.stats.responses_unmatched += 1;
            return;
        };
        self.stats.responses_matched += 1;
        let Some(path) = path else { return };
        if !matches!(status, 400 | 403 | 404) {
            return;
        }
        let threshold = self.settings.wordlist_paths as usize;
        let source = self.source_of(conn.remote.ip());
        let s = self.source(source, time_ns);
        if s.not_found.contains(&path) {
            return;
        }
        if s.not_found.len() < threshold {
            if s.sample.len() < SAMPLE_PATHS {
                s.sample.push(path.chars().take(SAMPLE_PATH_LEN).collect());
            }
            s.not_found.insert(path);
        }
        // A distinct path beyond a full set is new too: the set holds the
        // window's first distinct paths.
        if s.not_found.len() >= threshold {
            let tool = s.ua_tool.clone().map(|(name, _)| ToolMatch {
                name,
                matched_by: "user_agent",
            });
            let ua = s.user_agent.clone();
            self.find(
                source,
                time_ns,
                &Trigger {
                    kind: WebScanKind::WordlistScan,
                    tool,
                    user_agent: ua.as_deref(),
                },
            );
        }
    }

    fn push_pending(&mut self, conn: Connection, time_ns: u64, path: Option<String>) {
        if !self.conns.contains_key(&conn) && self.conns.len() >= self.settings.max_connections {
            let evicted = evict_oldest(&mut self.conns, |c| c.last_seen_ns);
            self.stats.connections_evicted += evicted;
        }
        let c = self.conns.entry(conn).or_default();
        c.last_seen_ns = c.last_seen_ns.max(time_ns);
        if c.pending.len() == MAX_PENDING {
            c.pending.pop_front();
            self.stats.pending_dropped += 1;
        }
        c.pending.push_back(path);
    }

    /// The source's state, its window restarted when over (and a slot
    /// made for a new source).
    fn source(&mut self, source: IpNet, time_ns: u64) -> &mut SourceState {
        if !self.sources.contains_key(&source) && self.sources.len() >= self.settings.max_sources {
            let evicted = evict_oldest(&mut self.sources, |s| s.last_seen_ns);
            self.stats.sources_evicted += evicted;
        }
        let window = self.settings.window_ns;
        let s = self.sources.entry(source).or_insert_with(|| SourceState {
            window_start_ns: time_ns,
            first_ns: time_ns,
            ..SourceState::default()
        });
        s.last_seen_ns = s.last_seen_ns.max(time_ns);
        if time_ns.saturating_sub(s.window_start_ns) >= window {
            s.window_start_ns = time_ns;
            s.first_ns = time_ns;
            s.requests = 0;
            s.not_found.clear();
            s.sample.clear();
            s.hosts.clear();
        }
        s
    }

    /// A finding of `source`, unless one of that kind is suppressed.
    fn find(&mut self, source: IpNet, time_ns: u64, t: &Trigger<'_>) {
        let suppression = self.settings.suppression_ns;
        let Some(s) = self.sources.get_mut(&source) else {
            return;
        };
        let last = &mut s.last_finding_ns[t.kind as usize];
        if last.is_some_and(|l| time_ns.saturating_sub(l) < suppression) {
            self.stats.suppressed += 1;
            return;
        }
        *last = Some(time_ns);
        match t.kind {
            WebScanKind::VulnScanner => self.stats.findings_vuln_scanner += 1,
            WebScanKind::WordlistScan => self.stats.findings_wordlist_scan += 1,
        }
        if self.findings.len() >= MAX_QUEUED_FINDINGS {
            self.stats.findings_dropped += 1;
            return;
        }
        let due = time_ns.saturating_add(self.settings.hold_ns);
        let mut finding = WebFinding {
            source,
            kind: t.kind,
            tool: t.tool.clone(),
            user_agent: t.user_agent.map(str::to_string),
            hosts: Vec::new(),
            requests: 0,
            not_found_paths: 0,
            sample_paths: Vec::new(),
            tls: Vec::new(),
            first_ns: 0,
            last_ns: time_ns,
        };
        // Kept with the finding: the source may be evicted before it is due.
        s.evidence_into(&mut finding);
        self.findings.push((due, finding));
    }
}

/// Removes the oldest eighth (at least one) of `map` by `seen`; how many.
fn evict_oldest<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    seen: impl Fn(&V) -> u64,
) -> u64 {
    let mut times: Vec<u64> = map.values().map(&seen).collect();
    if times.is_empty() {
        return 0;
    }
    let n = (times.len() / 8).max(1);
    let (_, cutoff, _) = times.select_nth_unstable(n - 1);
    let cutoff = *cutoff;
    let mut removed = 0u64;
    map.retain(|_, v| {
        if removed < n as u64 && seen(v) <= cutoff {
            removed += 1;
            false
        } else {
            true
        }
    });
    removed
}

#[cfg(test)]
mod tests;
