//! Prometheus metrics. Everything that lives in BPF maps is read at scrape
//! time (const metrics, as node_exporter and ebpf_exporter do); what the
//! agent itself counts is copied into a shared snapshot after each step of
//! its loop. One place, [`build_registry`], registers every metric.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        counter::ConstCounter,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};
use scanwatch_common::{
    Counter,
    trw::ReplyCounters,
    web::{WebCounter, WebCounters},
};

use super::{
    alert_log::AlertLogStats,
    crowdsec::{
        bouncer::{BouncerStats, ORIGINS, SKIP_REASONS},
        machine::MachineStats,
    },
    evidence::EvidenceStats,
    mitigation::{FeedStats, MitigationStats},
};
use crate::{
    detect::{DistributedStats, EngineStats, web::WebStats},
    kernel::{
        detect_maps::ScanwatchMaps, reply_maps::ReplyMaps, sweep::SweepCounters,
        web_maps::WebCountersMap,
    },
    model::ScanType,
};

/// Default number of flagged sources exported with a `source` label.
pub const DEFAULT_TOP_SOURCES: usize = 10;

/// An attached interface, for `scanwatch_xdp_attached`.
#[derive(Clone, Debug)]
pub struct AttachedInterface {
    pub name: String,
    pub ifindex: u32,
    pub mode: &'static str,
}

/// What the agent knows outside the maps, refreshed by its loop.
#[derive(Clone, Debug, Default)]
pub struct AgentSnapshot {
    pub engine: EngineStats,
    /// The distributed-scan view's counters.
    pub distributed: DistributedStats,
    pub alert_log: AlertLogStats,
    /// Sources newly detected per scan type (counter).
    pub detections: BTreeMap<ScanType, u64>,
    /// Active (recently crossed) sources per scan type.
    pub active: BTreeMap<ScanType, u64>,
    /// The busiest active sources: (address, types, probes in the window).
    pub top: Vec<(String, Vec<ScanType>, u64)>,
    /// Entries in the source map at the last count, in total and by the
    /// interface of their latest probe.
    pub tracked_total: Option<u64>,
    pub tracked_by_ifindex: BTreeMap<u32, u64>,
    pub alertmanager_pushes: u64,
    pub alertmanager_errors: u64,
    pub mitigation: MitigationStats,
    pub feeds: BTreeMap<String, FeedStats>,
    /// Alerts written, by the scanner tool they name (`detect::tool::NAMES`).
    pub alerts_by_tool: BTreeMap<&'static str, u64>,
    /// The evidence packets' files (zero while `[evidence]` is off).
    pub evidence: EvidenceStats,
    /// The CrowdSec bouncer's figures (when it runs).
    pub crowdsec_bouncer: Option<BouncerStats>,
    /// The CrowdSec machine's figures (when it runs).
    pub crowdsec_machine: Option<MachineStats>,
    /// The web detector's counters and the web ring's undecodable records
    /// (`[detection.web]` on).
    pub web: Option<(crate::detect::web::WebStats, u64)>,
}

/// The reply-aware detector's state for the metrics: its maps (kernel
/// counters read at scrape time) and the sweeper's counters.
pub struct ReplySource {
    pub maps: ReplyMaps,
    pub sweep: Arc<SweepCounters>,
}

/// The scrape-time collector.
pub struct ScanwatchCollector {
    maps: Mutex<ScanwatchMaps>,
    reply: Option<Mutex<ReplySource>>,
    /// The web sampling's counters (pinned by the agent).
    web: Option<Mutex<WebCountersMap>>,
    snapshot: Arc<Mutex<AgentSnapshot>>,
    interfaces: Vec<AttachedInterface>,
    capacity: u32,
}

impl fmt::Debug for ScanwatchCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanwatchCollector")
            .field("interfaces", &self.interfaces)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    value: u64,
) -> fmt::Result {
    let c = ConstCounter::new(value);
    let mut m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m.encode_family(&labels)?)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    value: i64,
) -> fmt::Result {
    let g = ConstGauge::new(value);
    let mut m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m.encode_family(&labels)?)
}

/// One family with several labelled samples.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind_of: &M,
    samples: Vec<(Vec<(&str, String)>, M)>,
) -> fmt::Result {
    let mut m = encoder.encode_descriptor(name, help, None, kind_of.metric_type())?;
    for (labels, metric) in samples {
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        metric.encode(m.encode_family(&labels.as_slice())?)?;
    }
    Ok(())
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Probe kinds as `scanwatch_packets_total{kind}`: the six probe kinds and
/// `other` (not a probe, or not IP).
const PACKET_KINDS: [(&str, &[Counter]); 7] = [
    ("syn", &[Counter::ProbeSyn]),
    ("stealth", &[Counter::ProbeStealth]),
    ("udp", &[Counter::ProbeUdp]),
    ("icmp_echo", &[Counter::ProbeIcmpEcho]),
    ("icmp_other_probe", &[Counter::ProbeIcmpOtherProbe]),
    ("fragment", &[Counter::ProbeFragment]),
    ("other", &[Counter::NotProbe, Counter::NotIp]),
];

const PARSE_ERRORS: [Counter; 3] = [
    Counter::Truncated,
    Counter::Malformed,
    Counter::Ipv6ExtChainTooLong,
];

impl Collector for ScanwatchCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let snapshot = self
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let counters = self
            .maps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iface_counters()
            .unwrap_or_default();
        let reply = self.reply.as_ref().map(|r| {
            let r = r.lock().unwrap_or_else(PoisonError::into_inner);
            (
                r.maps.counters().unwrap_or(ReplyCounters::ZERO),
                r.sweep.no_answers.load(Ordering::Relaxed),
            )
        });
        let web = self.web.as_ref().map_or_else(WebCounters::default, |w| {
            w.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .read()
                .unwrap_or_default()
        });
        Scrape {
            counters: &counters,
            snapshot: &snapshot,
            interfaces: &self.interfaces,
            capacity: self.capacity,
            reply,
            web,
        }
        .encode(encoder)
    }
}

/// Everything one scrape reports.
pub struct Scrape<'a> {
    pub counters: &'a BTreeMap<u32, scanwatch_common::IfaceCounters>,
    pub snapshot: &'a AgentSnapshot,
    pub interfaces: &'a [AttachedInterface],
    pub capacity: u32,
    /// The reply-aware detector's kernel counters (summed over CPUs) and the
    /// no-answers the sweeper marked; `None` while it is disabled.
    pub reply: Option<(ReplyCounters, u64)>,
    /// The web sampling's kernel counters (summed over CPUs).
    pub web: WebCounters,
}

type Samples<M> = Vec<(Vec<(&'static str, String)>, M)>;

/// The per-interface families, one sample per watched interface.
#[derive(Default)]
struct IfaceFamilies {
    packets: Samples<ConstCounter>,
    errors: Samples<ConstCounter>,
    created: Samples<ConstCounter>,
    events_dropped: Samples<ConstCounter>,
    tracked: Samples<ConstGauge>,
    dropped: Samples<ConstCounter>,
    attached: Samples<ConstGauge>,
    spared: Samples<ConstCounter>,
}

impl Scrape<'_> {
    pub fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let e = &mut encoder;
        let f = self.interface_families();
        self.encode_kernel(
            e,
            f.packets,
            f.errors,
            f.created,
            f.events_dropped,
            f.tracked,
        )?;
        encode_detection(e, self.snapshot)?;
        encode_distributed(e, self.snapshot)?;
        encode_top(e, self.snapshot)?;
        encode_mitigation(e, self.snapshot, f.dropped, f.spared)?;
        encode_agent(e, self.snapshot, f.attached)?;
        let all = |c: Counter| self.counters.values().map(|v| v.get(c)).sum::<u64>();
        encode_evidence(
            e,
            &self.snapshot.evidence,
            all(Counter::EvidenceSent),
            all(Counter::EvidenceDropped),
        )?;
        if let Some(b) = &self.snapshot.crowdsec_bouncer {
            encode_bouncer(e, b)?;
        }
        if let Some(m) = &self.snapshot.crowdsec_machine {
            encode_machine(e, m)?;
        }
        if let Some((reply, no_answers)) = &self.reply {
            encode_reply(e, reply, *no_answers)?;
        }
        encode_web(e, &self.web, self.snapshot.web.as_ref())?;
        Ok(())
    }

    fn interface_families(&self) -> IfaceFamilies {
        let (counters, snapshot) = (self.counters, self.snapshot);
        let IfaceFamilies {
            mut packets,
            mut errors,
            mut created,
            mut events_dropped,
            mut tracked,
            mut dropped,
            mut attached,
            mut spared,
        } = IfaceFamilies::default();
        for iface in self.interfaces {
            let c = counters
                .get(&iface.ifindex)
                .copied()
                .unwrap_or(scanwatch_common::IfaceCounters::ZERO);
            let name = || ("interface", iface.name.clone());
            for (kind, slots) in PACKET_KINDS {
                let v = slots.iter().map(|s| c.get(*s)).sum::<u64>();
                packets.push((
                    vec![name(), ("kind", kind.to_string())],
                    ConstCounter::new(v),
                ));
            }
            for reason in PARSE_ERRORS {
                errors.push((
                    vec![name(), ("reason", reason.name().to_string())],
                    ConstCounter::new(c.get(reason)),
                ));
            }
            created.push((
                vec![name()],
                ConstCounter::new(c.get(Counter::SourcesCreated)),
            ));
            events_dropped.push((
                vec![name()],
                ConstCounter::new(c.get(Counter::EventsDropped)),
            ));
            tracked.push((
                vec![name()],
                ConstGauge::new(saturating_i64(
                    snapshot
                        .tracked_by_ifindex
                        .get(&iface.ifindex)
                        .copied()
                        .unwrap_or(0),
                )),
            ));
            for (reason, counter) in [
                ("blocklist", Counter::DroppedBlocklist),
                ("feed", Counter::DroppedFeed),
            ] {
                dropped.push((
                    vec![name(), ("reason", reason.to_string())],
                    ConstCounter::new(c.get(counter)),
                ));
            }
            spared.push((
                vec![name()],
                ConstCounter::new(c.get(Counter::NeverBlockSpared)),
            ));
            attached.push((
                vec![name(), ("mode", iface.mode.to_string())],
                ConstGauge::new(1i64),
            ));
        }
        IfaceFamilies {
            packets,
            errors,
            created,
            events_dropped,
            tracked,
            dropped,
            attached,
            spared,
        }
    }

    /// What the kernel counts: packets, parse errors, the source map.
    fn encode_kernel(
        &self,
        e: &mut DescriptorEncoder<'_>,
        packets: Samples<ConstCounter>,
        errors: Samples<ConstCounter>,
        created: Samples<ConstCounter>,
        events_dropped: Samples<ConstCounter>,
        tracked: Samples<ConstGauge>,
    ) -> fmt::Result {
        let snapshot = self.snapshot;
        family(
            e,
            "packets",
            "Packets seen by the XDP program, by probe kind (other: not a probe, or not IP).",
            &ConstCounter::new(0u64),
            packets,
        )?;
        family(
            e,
            "parse_errors",
            "Packets the XDP program could not parse (passed, not dropped), by reason.",
            &ConstCounter::new(0u64),
            errors,
        )?;
        family(
            e,
            "sources_created",
            "Sources admitted into the source table (they sent enough probes in a window to be tracked).",
            &ConstCounter::new(0u64),
            created,
        )?;
        family(
            e,
            "events_dropped",
            "Threshold crossings lost because the ring buffer was full.",
            &ConstCounter::new(0u64),
            events_dropped,
        )?;
        family(
            e,
            "tracked_sources",
            "Sources in the source map at the last count, by the interface of their latest probe.",
            &ConstGauge::new(0i64),
            tracked,
        )?;
        gauge(
            e,
            "source_map_capacity",
            "Capacity of the source map (sources).",
            &[],
            i64::from(self.capacity),
        )?;
        gauge(
            e,
            "source_map_entries",
            "Sources in the source map at the last count (all interfaces).",
            &[],
            saturating_i64(snapshot.tracked_total.unwrap_or(0)),
        )?;
        let all = |c: Counter| self.counters.values().map(|v| v.get(c)).sum::<u64>();
        counter(
            e,
            "source_map_evictions",
            "Tracked sources whose slot went to a newly admitted source.",
            &[],
            all(Counter::SourcesEvicted),
        )?;
        counter(
            e,
            "admission_overwrites",
            "Sources waiting for admission (fewer probes than admit_after in the window) whose waiting probes another source overwrote.",
            &[],
            all(Counter::AdmissionOverwritten),
        )?;
        Ok(())
    }
}

/// Detections, active scanners, alerts and the alert log, crossings.
fn encode_detection(e: &mut DescriptorEncoder<'_>, snapshot: &AgentSnapshot) -> fmt::Result {
    let types = ScanType::ALL;
    family(
        e,
        "detections",
        "Sources newly detected, by scan type.",
        &ConstCounter::new(0u64),
        types
            .iter()
            .map(|t| {
                (
                    vec![("type", t.name().to_string())],
                    ConstCounter::new(snapshot.detections.get(t).copied().unwrap_or(0)),
                )
            })
            .collect(),
    )?;
    family(
        e,
        "active_scanners",
        "Sources that crossed a threshold within the current window, by scan type.",
        &ConstGauge::new(0i64),
        types
            .iter()
            .map(|t| {
                (
                    vec![("type", t.name().to_string())],
                    ConstGauge::new(saturating_i64(snapshot.active.get(t).copied().unwrap_or(0))),
                )
            })
            .collect(),
    )?;
    // Each type's own technique (a sweep is T1595.001, a web scan
    // T1595.002 or .003, the rest T1595): a fixed set of four labels.
    let mut by_technique: BTreeMap<&str, u64> = ["T1595", "T1595.001", "T1595.002", "T1595.003"]
        .into_iter()
        .map(|t| (t, 0))
        .collect();
    for t in types {
        *by_technique
            .entry(crate::detect::attack_technique(&[t]))
            .or_default() += snapshot.detections.get(&t).copied().unwrap_or(0);
    }
    family(
        e,
        "detections_by_technique",
        "Sources newly detected, by the ATT&CK technique of their scan type (T1595.001 sweeps, T1595.002 vulnerability scanners, T1595.003 wordlist scanning, T1595 the rest).",
        &ConstCounter::new(0u64),
        by_technique
            .into_iter()
            .map(|(t, n)| (vec![("technique", t.to_string())], ConstCounter::new(n)))
            .collect(),
    )?;
    encode_alerts(e, snapshot)?;
    counter(
        e,
        "crossings",
        "Threshold crossings received from the kernel.",
        &[],
        snapshot.engine.events,
    )?;
    counter(
        e,
        "ignored_crossings",
        "Threshold crossings by sources in `ignore` networks (never alerted).",
        &[],
        snapshot.engine.ignored,
    )?;
    Ok(())
}

/// The distributed-scan view: targets over a threshold, failed contacts counted.
fn encode_distributed(e: &mut DescriptorEncoder<'_>, snapshot: &AgentSnapshot) -> fmt::Result {
    family(
        e,
        "distributed_scan_targets",
        "Targets at or over a distributed_scan threshold at the last pass: local addresses (many ports) or ports (many local addresses).",
        &ConstGauge::new(0i64),
        [
            ("address", snapshot.distributed.address_targets),
            ("port", snapshot.distributed.port_targets),
        ]
        .into_iter()
        .map(|(kind, n)| {
            (
                vec![("kind", kind.to_string())],
                ConstGauge::new(saturating_i64(n)),
            )
        })
        .collect(),
    )?;
    gauge(
        e,
        "distributed_failed_contacts",
        "Failed first contacts in the window by sources neither flagged nor ignored, at the last distributed_scan pass.",
        &[],
        saturating_i64(snapshot.distributed.failed_contacts),
    )?;
    Ok(())
}

/// Alerts and the alert log.
fn encode_alerts(e: &mut DescriptorEncoder<'_>, snapshot: &AgentSnapshot) -> fmt::Result {
    counter(
        e,
        "alerts",
        "Alerts written (per-source, distributed_scan and web).",
        &[],
        snapshot.engine.alerts
            + snapshot.distributed.alerts
            + snapshot.web.map_or(0, |(w, _)| {
                w.findings_vuln_scanner + w.findings_wordlist_scan
            }),
    )?;
    counter(
        e,
        "alerts_held",
        "First alerts of an incident held for first_alert_hold_milliseconds (then written once, with every scan type crossed by then).",
        &[],
        snapshot.engine.held,
    )?;
    family(
        e,
        "alerts_by_tool",
        "Alerts written, by the scanner tool their probes' header fields name (unknown: none held for every tested probe; os-stack: a real TCP stack).",
        &ConstCounter::new(0u64),
        crate::detect::tool::NAMES
            .iter()
            .map(|t| {
                (
                    vec![("tool", (*t).to_string())],
                    ConstCounter::new(snapshot.alerts_by_tool.get(t).copied().unwrap_or(0)),
                )
            })
            .collect(),
    )?;
    counter(
        e,
        "alert_write_errors",
        "Failed writes to the alert log (disk full, I/O errors); each retry of a waiting alert counts.",
        &[],
        snapshot.alert_log.write_errors,
    )?;
    counter(
        e,
        "alert_log_reopen_errors",
        "Failed reopens of the alert log (SIGHUP, and their retries).",
        &[],
        snapshot.alert_log.reopen_errors,
    )?;
    counter(
        e,
        "alerts_dropped",
        "Alerts never written to the alert log: the in-memory backlog was full.",
        &[],
        snapshot.alert_log.dropped,
    )?;
    gauge(
        e,
        "alert_log_backlog",
        "Alerts waiting in memory for the alert log to take them.",
        &[],
        saturating_i64(snapshot.alert_log.backlog),
    )?;
    Ok(())
}

/// The busiest flagged sources (the only family with a per-address label).
fn encode_top(e: &mut DescriptorEncoder<'_>, snapshot: &AgentSnapshot) -> fmt::Result {
    let mut top = Vec::new();
    for (source, types, probes) in &snapshot.top {
        for t in types {
            top.push((
                vec![("source", source.clone()), ("type", t.name().to_string())],
                ConstGauge::new(saturating_i64(*probes)),
            ));
        }
    }
    family(
        e,
        "top_source_probes",
        "Probes in the current window of the busiest flagged sources (top N only), by scan type.",
        &ConstGauge::new(0i64),
        top,
    )?;
    Ok(())
}

/// Blocks, drops and feeds.
fn encode_mitigation(
    e: &mut DescriptorEncoder<'_>,
    snapshot: &AgentSnapshot,
    dropped: Samples<ConstCounter>,
    spared: Samples<ConstCounter>,
) -> fmt::Result {
    gauge(
        e,
        "blocked_sources",
        "Entries (addresses and networks) in the kernel blocklist.",
        &[],
        saturating_i64(snapshot.mitigation.blocked_sources),
    )?;
    family(
        e,
        "dropped_packets",
        "Packets dropped by XDP, by reason (blocklist, drop feed).",
        &ConstCounter::new(0u64),
        dropped,
    )?;
    family(
        e,
        "never_block_spared_packets",
        "Packets that matched a block or drop feed but were passed: their source is in never_block.",
        &ConstCounter::new(0u64),
        spared,
    )?;
    counter(
        e,
        "blocks",
        "Blocks made (detections and manual).",
        &[],
        snapshot.mitigation.blocks_made,
    )?;
    counter(
        e,
        "blocklist_full",
        "Blocks refused because the blocklist was full (the source was alerted, not blocked).",
        &[],
        snapshot.mitigation.blocklist_full,
    )?;
    counter(
        e,
        "never_block_refusals",
        "Blocks refused because the source is in never_block.",
        &[],
        snapshot.mitigation.never_block_refusals,
    )?;
    family(
        e,
        "feed_entries",
        "Networks loaded from each feed.",
        &ConstGauge::new(0i64),
        snapshot
            .feeds
            .iter()
            .map(|(n, f)| {
                (
                    vec![("feed", n.clone())],
                    ConstGauge::new(saturating_i64(f.entries)),
                )
            })
            .collect(),
    )?;
    family(
        e,
        "feed_invalid_lines",
        "Feed lines skipped as not an address or CIDR (each load).",
        &ConstCounter::new(0u64),
        snapshot
            .feeds
            .iter()
            .map(|(n, f)| {
                (
                    vec![("feed", n.clone())],
                    ConstCounter::new(f.invalid_lines_total),
                )
            })
            .collect(),
    )?;
    Ok(())
}

/// The agent itself: attachments, build, Alertmanager pushes.
fn encode_agent(
    e: &mut DescriptorEncoder<'_>,
    snapshot: &AgentSnapshot,
    attached: Samples<ConstGauge>,
) -> fmt::Result {
    family(
        e,
        "xdp_attached",
        "1 for each interface the XDP program is attached to, with its mode.",
        &ConstGauge::new(0i64),
        attached,
    )?;
    gauge(
        e,
        "build_info",
        "scanwatch build information.",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    )?;
    counter(
        e,
        "alertmanager_pushes",
        "Alert batches pushed to Alertmanager.",
        &[],
        snapshot.alertmanager_pushes,
    )?;
    counter(
        e,
        "alertmanager_push_errors",
        "Alert batches Alertmanager did not accept.",
        &[],
        snapshot.alertmanager_errors,
    )?;
    Ok(())
}

/// Evidence packets: the kernel's records (sent, lost to a full ring) and
/// what the agent made of them.
fn encode_evidence(
    e: &mut DescriptorEncoder<'_>,
    s: &EvidenceStats,
    sent: u64,
    dropped: u64,
) -> fmt::Result {
    family(
        e,
        "evidence_records",
        "Evidence packets the kernel handed to the agent (sent) or lost because the evidence ring was full (dropped).",
        &ConstCounter::new(0u64),
        vec![
            (
                vec![("result", "sent".to_string())],
                ConstCounter::new(sent),
            ),
            (
                vec![("result", "dropped".to_string())],
                ConstCounter::new(dropped),
            ),
        ],
    )?;
    counter(
        e,
        "evidence_packets_written",
        "Evidence packets written to pcapng files.",
        &[],
        s.packets_written,
    )?;
    counter(
        e,
        "evidence_files_created",
        "Evidence files created (one per alerted source and window).",
        &[],
        s.files_created,
    )?;
    family(
        e,
        "evidence_discarded",
        "Evidence packets the agent did not write: overflow (held buffer full, or over the budget), expired (no alert for their source and window), ignored (source in an ignore network), write_error.",
        &ConstCounter::new(0u64),
        [
            ("overflow", s.overflow),
            ("expired", s.expired),
            ("ignored", s.ignored),
            ("write_error", s.write_errors),
        ]
        .into_iter()
        .map(|(reason, v)| (vec![("reason", reason.to_string())], ConstCounter::new(v)))
        .collect(),
    )?;
    gauge(
        e,
        "evidence_held",
        "Evidence packets waiting for their source's alert.",
        &[],
        saturating_i64(s.held),
    )?;
    counter(
        e,
        "evidence_files_removed",
        "Evidence files removed to keep the directory under max_bytes (oldest first).",
        &[],
        s.files_removed,
    )?;
    let g = ConstGauge::new(saturating_i64(s.directory_bytes));
    let mut m = e.encode_descriptor(
        "evidence_directory",
        "Bytes of the evidence directory's pcapng files.",
        Some(&Unit::Bytes),
        g.metric_type(),
    )?;
    let labels: &[(&str, &str)] = &[];
    g.encode(m.encode_family(&labels)?)
}

/// Web sampling and the web detector: the kernel's records (sampled, lost
/// to a full ring), what the agent parsed, matched and evicted.
fn encode_web(
    e: &mut DescriptorEncoder<'_>,
    kernel: &WebCounters,
    agent: Option<&(WebStats, u64)>,
) -> fmt::Result {
    let k = |c: WebCounter| kernel.counters[c as usize];
    let labelled = |rows: &[(&str, &str, u64)]| -> Samples<ConstCounter> {
        rows.iter()
            .map(|(kind, result, v)| {
                (
                    vec![("kind", kind.to_string()), ("result", result.to_string())],
                    ConstCounter::new(*v),
                )
            })
            .collect()
    };
    family(
        e,
        "web_samples",
        "Web sampling records the kernel handed to the agent (sampled) or lost because the web ring was full (dropped): request (a request's or ClientHello's first segment) and response (an HTTP/1.x status code).",
        &ConstCounter::new(0u64),
        labelled(&[
            ("request", "sampled", k(WebCounter::RequestsSampled)),
            ("request", "dropped", k(WebCounter::RequestsDropped)),
            ("response", "sampled", k(WebCounter::ResponsesSampled)),
            ("response", "dropped", k(WebCounter::ResponsesDropped)),
        ]),
    )?;
    let Some((w, decode_errors)) = agent else {
        return Ok(());
    };
    family(
        e,
        "web_parsed",
        "Web samples the agent read, by kind (http, tls, response, record) and result: parsed, unparseable (http, tls: counted and skipped), matched/unmatched (responses to a pending request), invalid (ring records).",
        &ConstCounter::new(0u64),
        labelled(&[
            ("http", "parsed", w.requests_parsed),
            ("http", "unparseable", w.http_unparseable),
            ("tls", "parsed", w.tls_hellos),
            ("tls", "unparseable", w.tls_unparseable),
            ("response", "matched", w.responses_matched),
            ("response", "unmatched", w.responses_unmatched),
            ("record", "invalid", *decode_errors),
        ]),
    )?;
    gauge(
        e,
        "web_sources",
        "Sources the web detector tracks now (at most [detection.web] max_sources).",
        &[],
        saturating_i64(w.sources_tracked),
    )?;
    family(
        e,
        "web_evicted",
        "Web detector state dropped to stay bounded: source and connection (the oldest seen), pending_request (a full per-connection queue).",
        &ConstCounter::new(0u64),
        [
            ("source", w.sources_evicted),
            ("connection", w.connections_evicted),
            ("pending_request", w.pending_dropped),
        ]
        .into_iter()
        .map(|(what, v)| (vec![("what", what.to_string())], ConstCounter::new(v)))
        .collect(),
    )?;
    counter(
        e,
        "web_ignored",
        "Web samples from sources in `ignore` networks (not tracked).",
        &[],
        w.ignored,
    )?;
    counter(
        e,
        "web_suppressed",
        "Web findings not alerted: the source had one of that type within suppression_seconds.",
        &[],
        w.suppressed,
    )
}

/// Pull results of the CrowdSec bouncer.
pub const PULL_RESULTS: [&str; 4] = ["ok", "unreachable", "unauthorized", "error"];

/// The CrowdSec bouncer: pulls, decisions in force and skipped.
fn encode_bouncer(e: &mut DescriptorEncoder<'_>, b: &BouncerStats) -> fmt::Result {
    let labelled = |names: &[&'static str], key: &'static str, map: &BTreeMap<&str, u64>| {
        names
            .iter()
            .map(|n| {
                (
                    vec![(key, (*n).to_string())],
                    map.get(n).copied().unwrap_or(0),
                )
            })
            .collect::<Vec<_>>()
    };
    family(
        e,
        "crowdsec_pulls",
        "Pulls of the CrowdSec Local API's decision stream, by result (ok, unreachable, unauthorized, error).",
        &ConstCounter::new(0u64),
        labelled(&PULL_RESULTS, "result", &b.pulls)
            .into_iter()
            .map(|(l, v)| (l, ConstCounter::new(v)))
            .collect(),
    )?;
    let mut origins: Vec<&'static str> = ORIGINS.to_vec();
    origins.push("other");
    family(
        e,
        "crowdsec_decisions_active",
        "CrowdSec decisions enforced in the blocklist, by the decision's origin.",
        &ConstGauge::new(0i64),
        labelled(&origins, "origin", &b.active)
            .into_iter()
            .map(|(l, v)| (l, ConstGauge::new(saturating_i64(v))))
            .collect(),
    )?;
    family(
        e,
        "crowdsec_decisions_skipped",
        "CrowdSec decisions not applied, by reason (type, scope, origin, invalid, never_block, blocklist_full).",
        &ConstCounter::new(0u64),
        labelled(&SKIP_REASONS, "reason", &b.skipped)
            .into_iter()
            .map(|(l, v)| (l, ConstCounter::new(v)))
            .collect(),
    )?;
    let g = ConstGauge::new(b.last_success.unwrap_or(0.0));
    let mut m = e.encode_descriptor(
        "crowdsec_last_pull_success_timestamp",
        "When the decision stream was last pulled successfully (0: never).",
        Some(&Unit::Seconds),
        g.metric_type(),
    )?;
    let no_labels: &[(&str, &str)] = &[];
    g.encode(m.encode_family(&no_labels)?)
}

/// The CrowdSec machine: alerts pushed, dropped, queued.
fn encode_machine(e: &mut DescriptorEncoder<'_>, m: &MachineStats) -> fmt::Result {
    counter(
        e,
        "crowdsec_alerts_pushed",
        "Alerts accepted by the CrowdSec Local API.",
        &[],
        m.pushed,
    )?;
    counter(
        e,
        "crowdsec_alerts_dropped",
        "Alerts not pushed to the CrowdSec Local API: the queue was full, or the Local API refused them.",
        &[],
        m.dropped,
    )?;
    counter(
        e,
        "crowdsec_push_errors",
        "Failed pushes to the CrowdSec Local API (unreachable, refused login, errors).",
        &[],
        m.errors,
    )?;
    gauge(
        e,
        "crowdsec_alerts_queued",
        "Alerts waiting for the CrowdSec Local API.",
        &[],
        saturating_i64(m.queued),
    )
}

/// The reply-aware detector's metrics.
fn encode_reply(
    e: &mut DescriptorEncoder<'_>,
    reply: &ReplyCounters,
    no_answers: u64,
) -> fmt::Result {
    use scanwatch_common::trw::ReplyCounter as R;
    counter(
        e,
        "reply_first_contacts",
        "First contacts (SYN or UDP probe to a new local address and port) recorded for the reply-aware test.",
        &[],
        reply.get(R::Contacts),
    )?;
    counter(
        e,
        "reply_contact_errors",
        "First contacts the kernel could not record (should stay zero).",
        &[],
        reply.get(R::ContactErrors),
    )?;
    counter(
        e,
        "reply_contacts_overwritten",
        "Pending first contacts overwritten by a newer contact hashing to the same slot of the direct-mapped contact table (their answer or timeout is then not counted).",
        &[],
        reply.get(R::ContactsOverwritten),
    )?;
    counter(
        e,
        "reply_contacts_waiting",
        "First SYNs of sources not yet tracked whose first contact waited in their admission slot instead of the contact table (resolved there by this host's answer, or moved to the table by the source's next probe of another port of the same host).",
        &[],
        reply.get(R::ContactsWaiting),
    )?;
    counter(
        e,
        "reply_answers_after_verdict",
        "Answers to sources the reply-aware test decided scan in their current window: not read (a decided source's first contacts are no longer recorded).",
        &[],
        reply.get(R::AfterVerdict),
    )?;
    family(
        e,
        "reply_outcomes",
        "Outcomes of first contacts: success (SYN-ACK, UDP reply), failure (RST, ICMP unreachable), no_answer (timeout).",
        &ConstCounter::new(0u64),
        vec![
            (
                vec![("outcome", "success".to_string())],
                ConstCounter::new(reply.get(R::Successes)),
            ),
            (
                vec![("outcome", "failure".to_string())],
                ConstCounter::new(reply.get(R::Failures)),
            ),
            (
                vec![("outcome", "no_answer".to_string())],
                ConstCounter::new(no_answers),
            ),
        ],
    )?;
    counter(
        e,
        "reply_unmatched_answers",
        "Answers seen on egress that resolve no pending first contact (repeat connections, already resolved).",
        &[],
        reply.get(R::Unmatched),
    )?;
    counter(
        e,
        "reply_egress_packets",
        "Packets seen by the TC egress program.",
        &[],
        reply.get(R::EgressPackets),
    )?;
    family(
        e,
        "reply_crossings",
        "Crossings of the reply-aware test's scanner boundary sent by the kernel to the agent (sent) or lost to a full ring buffer (dropped).",
        &ConstCounter::new(0u64),
        vec![
            (
                vec![("result", "sent".to_string())],
                ConstCounter::new(reply.get(R::EventsSent)),
            ),
            (
                vec![("result", "dropped".to_string())],
                ConstCounter::new(reply.get(R::EventsDropped)),
            ),
        ],
    )
}

/// The registry and the handles the agent updates.
pub struct Metrics {
    pub registry: Registry,
    pub poll_duration: Histogram,
    pub snapshot: Arc<Mutex<AgentSnapshot>>,
}

/// Registers every metric: the scrape-time collector over `maps` and the
/// agent's own poll-duration histogram.
pub fn build_registry(
    maps: ScanwatchMaps,
    reply: Option<ReplySource>,
    web: Option<WebCountersMap>,
    interfaces: Vec<AttachedInterface>,
) -> Metrics {
    let mut registry = Registry::with_prefix("scanwatch");
    let snapshot = Arc::new(Mutex::new(AgentSnapshot::default()));
    let poll_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
    registry.register_with_unit(
        "poll_duration",
        "Time the agent spends working per step of its loop (events, re-checks, pushes)",
        Unit::Seconds,
        poll_duration.clone(),
    );
    let capacity = maps.source_capacity();
    registry.register_collector(Box::new(ScanwatchCollector {
        maps: Mutex::new(maps),
        reply: reply.map(Mutex::new),
        web: web.map(Mutex::new),
        snapshot: Arc::clone(&snapshot),
        interfaces,
        capacity,
    }));
    Metrics {
        registry,
        poll_duration,
        snapshot,
    }
}

/// Encodes the registry: OpenMetrics text, or the classic Prometheus text
/// format when `openmetrics` is false.
pub fn render(registry: &Registry, openmetrics: bool) -> Result<String, fmt::Error> {
    let mut out = String::new();
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, registry)?;
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanwatch_common::IfaceCounters;

    #[derive(Debug)]
    struct Fixed {
        counters: BTreeMap<u32, IfaceCounters>,
        snapshot: AgentSnapshot,
        interfaces: Vec<AttachedInterface>,
    }

    impl Collector for Fixed {
        fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
            Scrape {
                counters: &self.counters,
                snapshot: &self.snapshot,
                interfaces: &self.interfaces,
                capacity: 262_144,
                reply: None,
                web: WebCounters {
                    counters: [3, 1, 2, 0],
                },
            }
            .encode(encoder)
        }
    }

    fn rendered(openmetrics: bool) -> String {
        let mut c = IfaceCounters::ZERO;
        c.counters[Counter::ProbeSyn as usize] = 1000;
        c.counters[Counter::NotProbe as usize] = 7;
        c.counters[Counter::NotIp as usize] = 3;
        c.counters[Counter::Truncated as usize] = 2;
        c.counters[Counter::EvidenceSent as usize] = 35;
        c.counters[Counter::EvidenceDropped as usize] = 1;
        let mut snapshot = AgentSnapshot::default();
        snapshot.engine.alerts = 3;
        snapshot.distributed.alerts = 1;
        snapshot.distributed.address_targets = 1;
        snapshot.detections.insert(ScanType::PortScan, 2);
        snapshot.top = vec![(
            "198.18.0.9".into(),
            vec![ScanType::PortScan, ScanType::StealthScan],
            1000,
        )];
        snapshot.tracked_by_ifindex.insert(2, 5);
        snapshot.evidence.packets_written = 32;
        snapshot.evidence.expired = 3;
        snapshot.evidence.directory_bytes = 4096;
        let mut registry = Registry::with_prefix("scanwatch");
        registry.register_collector(Box::new(Fixed {
            counters: BTreeMap::from([(2, c)]),
            snapshot,
            interfaces: vec![AttachedInterface {
                name: "eth0".into(),
                ifindex: 2,
                mode: "native",
            }],
        }));
        render(&registry, openmetrics).unwrap()
    }

    #[test]
    fn crowdsec_metrics_have_bounded_labels() {
        let mut snapshot = AgentSnapshot::default();
        let mut b = BouncerStats::default();
        b.pulls.insert("ok", 3);
        b.active.insert("cscli", 2);
        b.skipped.insert("never_block", 1);
        b.last_success = Some(1_700_000_000.5);
        snapshot.crowdsec_bouncer = Some(b);
        snapshot.crowdsec_machine = Some(MachineStats {
            pushed: 4,
            queued: 1,
            ..MachineStats::default()
        });
        let mut registry = Registry::with_prefix("scanwatch");
        registry.register_collector(Box::new(Fixed {
            counters: BTreeMap::new(),
            snapshot,
            interfaces: Vec::new(),
        }));
        let text = render(&registry, false).unwrap();
        for line in [
            "# TYPE scanwatch_crowdsec_pulls_total counter",
            "scanwatch_crowdsec_pulls_total{result=\"ok\"} 3",
            "scanwatch_crowdsec_pulls_total{result=\"unreachable\"} 0",
            "scanwatch_crowdsec_decisions_active{origin=\"cscli\"} 2",
            "scanwatch_crowdsec_decisions_active{origin=\"other\"} 0",
            "scanwatch_crowdsec_decisions_skipped_total{reason=\"never_block\"} 1",
            "# TYPE scanwatch_crowdsec_last_pull_success_timestamp_seconds gauge",
            "scanwatch_crowdsec_last_pull_success_timestamp_seconds 1700000000.5",
            "scanwatch_crowdsec_alerts_pushed_total 4",
            "scanwatch_crowdsec_alerts_queued 1",
        ] {
            assert!(text.contains(line), "{line}:\n{text}");
        }
        let origins = text
            .lines()
            .filter(|l| l.starts_with("scanwatch_crowdsec_decisions_active{"))
            .count();
        assert_eq!(
            origins,
            ORIGINS.len() + 1,
            "bounded: the known origins and other"
        );
        assert!(
            !rendered(false).contains("crowdsec"),
            "nothing without [crowdsec]"
        );
    }

    #[test]
    fn names_types_and_help() {
        let text = rendered(false);
        for (name, kind) in [
            ("scanwatch_packets_total", "counter"),
            ("scanwatch_parse_errors_total", "counter"),
            ("scanwatch_tracked_sources", "gauge"),
            ("scanwatch_source_map_capacity", "gauge"),
            ("scanwatch_source_map_evictions_total", "counter"),
            ("scanwatch_detections_total", "counter"),
            ("scanwatch_active_scanners", "gauge"),
            ("scanwatch_alerts_total", "counter"),
            ("scanwatch_alerts_held_total", "counter"),
            ("scanwatch_distributed_scan_targets", "gauge"),
            ("scanwatch_distributed_failed_contacts", "gauge"),
            ("scanwatch_top_source_probes", "gauge"),
            ("scanwatch_blocked_sources", "gauge"),
            ("scanwatch_dropped_packets_total", "counter"),
            ("scanwatch_build_info", "gauge"),
            ("scanwatch_xdp_attached", "gauge"),
            ("scanwatch_evidence_records_total", "counter"),
            ("scanwatch_evidence_packets_written_total", "counter"),
            ("scanwatch_evidence_files_created_total", "counter"),
            ("scanwatch_evidence_discarded_total", "counter"),
            ("scanwatch_evidence_held", "gauge"),
            ("scanwatch_evidence_files_removed_total", "counter"),
            ("scanwatch_evidence_directory_bytes", "gauge"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} {kind}:\n{text}"
            );
            assert!(text.contains(&format!("# HELP {name} ")), "help of {name}");
        }
    }

    #[test]
    fn values_and_bounded_labels() {
        let text = rendered(false);
        for line in [
            "scanwatch_packets_total{interface=\"eth0\",kind=\"syn\"} 1000",
            "scanwatch_packets_total{interface=\"eth0\",kind=\"other\"} 10",
            "scanwatch_parse_errors_total{interface=\"eth0\",reason=\"truncated\"} 2",
            "scanwatch_tracked_sources{interface=\"eth0\"} 5",
            "scanwatch_detections_total{type=\"port_scan\"} 2",
            "scanwatch_detections_total{type=\"syn_flood_source\"} 0",
            "scanwatch_alerts_total 4",
            "scanwatch_distributed_scan_targets{kind=\"address\"} 1",
            "scanwatch_distributed_scan_targets{kind=\"port\"} 0",
            "scanwatch_detections_total{type=\"distributed_scan\"} 0",
            "scanwatch_top_source_probes{source=\"198.18.0.9\",type=\"port_scan\"} 1000",
            "scanwatch_top_source_probes{source=\"198.18.0.9\",type=\"stealth_scan\"} 1000",
            "scanwatch_xdp_attached{interface=\"eth0\",mode=\"native\"} 1",
            "scanwatch_dropped_packets_total{interface=\"eth0\",reason=\"blocklist\"} 0",
            "scanwatch_blocked_sources 0",
            "scanwatch_evidence_records_total{result=\"sent\"} 35",
            "scanwatch_evidence_records_total{result=\"dropped\"} 1",
            "scanwatch_evidence_packets_written_total 32",
            "scanwatch_evidence_discarded_total{reason=\"expired\"} 3",
            "scanwatch_evidence_discarded_total{reason=\"overflow\"} 0",
            "scanwatch_evidence_directory_bytes 4096",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        // Per-IP labels only in the top-N family.
        for l in text.lines().filter(|l| l.contains("source=\"")) {
            assert!(l.starts_with("scanwatch_top_source_probes"), "{l}");
        }
    }

    #[test]
    fn openmetrics_ends_with_eof() {
        let text = rendered(true);
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("# TYPE scanwatch_packets counter"));
    }

    #[test]
    fn reply_metrics() {
        use scanwatch_common::trw::ReplyCounter;
        let mut c = ReplyCounters::ZERO;
        c.counters[ReplyCounter::Contacts as usize] = 9;
        c.counters[ReplyCounter::Failures as usize] = 5;
        c.counters[ReplyCounter::Successes as usize] = 3;
        c.counters[ReplyCounter::ContactsOverwritten as usize] = 2;
        c.counters[ReplyCounter::ContactsWaiting as usize] = 4;
        c.counters[ReplyCounter::AfterVerdict as usize] = 6;
        let snapshot = AgentSnapshot::default();
        let mut text = String::new();
        struct One(AgentSnapshot, ReplyCounters);
        impl fmt::Debug for One {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("One")
            }
        }
        impl Collector for One {
            fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
                Scrape {
                    counters: &BTreeMap::new(),
                    snapshot: &self.0,
                    interfaces: &[],
                    capacity: 1024,
                    reply: Some((self.1, 1)),
                    web: WebCounters::default(),
                }
                .encode(encoder)
            }
        }
        let mut registry = Registry::with_prefix("scanwatch");
        registry.register_collector(Box::new(One(snapshot, c)));
        text.push_str(&render(&registry, false).unwrap());
        for line in [
            "# TYPE scanwatch_reply_outcomes_total counter",
            "scanwatch_reply_outcomes_total{outcome=\"success\"} 3",
            "scanwatch_reply_outcomes_total{outcome=\"failure\"} 5",
            "scanwatch_reply_outcomes_total{outcome=\"no_answer\"} 1",
            "scanwatch_reply_first_contacts_total 9",
            "# TYPE scanwatch_reply_contacts_overwritten_total counter",
            "scanwatch_reply_contacts_overwritten_total 2",
            "scanwatch_reply_contacts_waiting_total 4",
            "scanwatch_reply_answers_after_verdict_total 6",
            "scanwatch_reply_crossings_total{result=\"sent\"} 0",
        ] {
            assert!(text.contains(line), "{line}:\n{text}");
        }
    }
}
