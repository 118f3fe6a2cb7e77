//! `scanwatch top`: the busiest sources, read from a running agent's pins.

use std::collections::BTreeMap;

use scanwatch_common::{SourceKey, SourceStats};
use serde::Serialize;

use super::{
    cli::TopArgs,
    privileges::{self, Capability, PrivilegeError},
};
use crate::{
    config::Detection,
    detect::{Evidence, ProbeCounts, ScannerTool, classify},
    kernel::{
        detect_maps::{MapsError, ScanwatchMaps, pinned_prefixes},
        pins::PinDirError,
    },
    model::{KernelClock, ScanType, SourcePrefixes},
};

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    PinDir(#[from] PinDirError),
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// `scanwatch top`.
pub fn run(args: &TopArgs) -> Result<(), TopError> {
    use std::io::Write as _;
    privileges::require("scanwatch top", &[Capability::Bpf])?;
    let maps = ScanwatchMaps::open_pinned(&args.pin_dir)?;
    let names = maps.iface_names();
    let clock = KernelClock::now();
    let sources = maps.sources()?;
    let tracked = sources.len();
    let feed_names = feed_names(&args.pin_dir);
    let prefixes = pinned_prefixes(&args.pin_dir);
    let rows = sources
        .iter()
        .map(|(k, v)| {
            let mut row = SourceRow::new(k, v, &names, &clock, prefixes);
            if v.known_bad != 0 {
                row.known_bad = Some(
                    feed_names
                        .get(&u32::from(v.known_bad))
                        .cloned()
                        .unwrap_or_else(|| format!("feed {}", v.known_bad)),
                );
            }
            row
        })
        .collect();
    let rows = busiest(rows, args.limit);
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", render_json(&rows)?)?;
    } else {
        write!(
            stdout,
            "{}",
            render_table(&rows, tracked, maps.source_capacity())
        )?;
    }
    Ok(())
}

/// One source as `top` shows it (and `--json` prints it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceRow {
    pub source: String,
    /// Interface of the latest probe (as named by the agent).
    pub interface: Option<String>,
    /// Probes in the current window, by kind.
    #[serde(flatten)]
    pub probes: ProbeCounts,
    pub total: u64,
    /// Distinct destination ports and hosts in the current window.
    pub distinct_ports: u64,
    pub distinct_hosts: u64,
    /// Scan types the kernel flagged in the current window.
    pub flagged: Vec<ScanType>,
    /// The scanner tool its probes' header fields name (see alerts'
    /// `scanner_tool`).
    pub tool: &'static str,
    /// The `tag` feed listing the source, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_bad: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(skip)]
    last_seen_ns: u64,
}

impl SourceRow {
    pub fn new(
        key: &SourceKey,
        stats: &SourceStats,
        names: &BTreeMap<u32, String>,
        clock: &KernelClock,
        prefixes: SourcePrefixes,
    ) -> Self {
        let evidence = Evidence::from_stats(stats);
        Self {
            distinct_ports: evidence.distinct_ports,
            distinct_hosts: evidence.distinct_hosts,
            // The kernel only crosses thresholds of enabled types.
            flagged: classify(&evidence, &Detection::default()),
            tool: ScannerTool::from_stats(stats).name,
            known_bad: None,
            source: prefixes.label(key.ip()),
            interface: names.get(&stats.last_ifindex).cloned(),
            probes: ProbeCounts::from_array(&stats.probes.map(u64::from)),
            total: stats.total_probes(),
            first_seen: clock.rfc3339(stats.first_seen_ns),
            last_seen: clock.rfc3339(stats.last_seen_ns),
            last_seen_ns: stats.last_seen_ns,
        }
    }
}

/// Feed id -> name, from the agent's pinned `FEED_NAMES` (empty if absent).
fn feed_names(pin_dir: &std::path::Path) -> BTreeMap<u32, String> {
    let path = pin_dir.join(scanwatch_common::maps::FEED_NAMES_MAP);
    let Ok(data) = aya::maps::MapData::from_pin(&path) else {
        return BTreeMap::new();
    };
    let Ok(map) = aya::maps::Map::from_map_data(data) else {
        return BTreeMap::new();
    };
    let Ok(names) = aya::maps::HashMap::<_, u32, scanwatch_common::Name32>::try_from(map) else {
        return BTreeMap::new();
    };
    names
        .iter()
        .filter_map(Result::ok)
        .map(|(k, v)| (k, v.as_string()))
        .collect()
}

/// Busiest first (most probes, then most recent); `limit == 0` keeps all.
pub fn busiest(mut rows: Vec<SourceRow>, limit: usize) -> Vec<SourceRow> {
    rows.sort_by(|a, b| {
        b.total
            .cmp(&a.total)
            .then(b.last_seen_ns.cmp(&a.last_seen_ns))
            .then(a.source.cmp(&b.source))
    });
    if limit != 0 {
        rows.truncate(limit);
    }
    rows
}

pub fn render_json(rows: &[SourceRow]) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(rows)
}

pub fn render_table(rows: &[SourceRow], tracked: usize, capacity: u32) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{tracked} sources tracked (capacity {capacity}); busiest {}:",
        rows.len()
    );
    let _ = writeln!(
        out,
        "{:<39} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}  {:<24} {:<24} {:<10} {:<11} KNOWN_BAD",
        "SOURCE",
        "SYN",
        "STEALTH",
        "UDP",
        "ICMP_ECHO",
        "ICMP_OTH",
        "FRAGMENT",
        "TOTAL",
        "FIRST_SEEN",
        "LAST_SEEN",
        "IFACE",
        "TOOL"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<39} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}  {:<24} {:<24} {:<10} {:<11} {}",
            r.source,
            r.probes.syn,
            r.probes.stealth,
            r.probes.udp,
            r.probes.icmp_echo,
            r.probes.icmp_other_probe,
            r.probes.fragment,
            r.total,
            r.first_seen,
            r.last_seen,
            r.interface.as_deref().unwrap_or("-"),
            r.tool,
            r.known_bad.as_deref().unwrap_or("-")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanwatch_common::ProbeKind;
    use std::time::{Duration, SystemTime};

    fn row(ip: &str, kind: ProbeKind, n: u64, last: u64) -> SourceRow {
        let key = SourceKey::from_ip(ip.parse().unwrap());
        let mut s = SourceStats::new(&key, 1_000_000_000, 2);
        s.probes[kind.index()] = u32::try_from(n).unwrap();
        s.last_seen_ns = last;
        let names = BTreeMap::from([(2, "veth0".to_string())]);
        let clock = KernelClock::at(
            SystemTime::UNIX_EPOCH + Duration::from_secs(100),
            10_000_000_000,
        );
        SourceRow::new(&key, &s, &names, &clock, SourcePrefixes::HOSTS)
    }

    #[test]
    fn sorts_and_limits() {
        let rows = vec![
            row("198.18.0.1", ProbeKind::Syn, 5, 3_000_000_000),
            row("fd00::1", ProbeKind::Udp, 50, 2_000_000_000),
            row("198.18.0.3", ProbeKind::Syn, 5, 4_000_000_000),
        ];
        let top = busiest(rows.clone(), 2);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].source, "fd00::1");
        assert_eq!(top[1].source, "198.18.0.3", "ties go to the most recent");
        assert_eq!(busiest(rows, 0).len(), 3);
    }

    #[test]
    fn json_fields() {
        let r = row("198.18.0.1", ProbeKind::Stealth, 7, 9_000_000_000);
        let v: serde_json::Value = serde_json::from_str(&render_json(&[r]).unwrap()).unwrap();
        let o = &v[0];
        assert_eq!(o["source"], "198.18.0.1");
        assert_eq!(o["stealth"], 7);
        assert_eq!(o["syn"], 0);
        assert_eq!(o["interface"], "veth0");
        assert_eq!(o["first_seen"], "1970-01-01T00:01:31.000Z");
        assert_eq!(o["last_seen"], "1970-01-01T00:01:39.000Z");
        assert_eq!(o["flagged"], serde_json::json!([]));
        for k in [
            "udp",
            "icmp_echo",
            "icmp_other_probe",
            "fragment",
            "total",
            "distinct_ports",
            "distinct_hosts",
        ] {
            assert!(o.get(k).is_some(), "{k}");
        }
    }

    #[test]
    fn table_has_header_and_rows() {
        let t = render_table(&[row("198.18.0.1", ProbeKind::Syn, 1000, 1)], 1, 1024);
        assert!(t.contains("SOURCE"));
        assert!(t.contains("198.18.0.1"));
        assert!(t.contains("1000"));
    }
}
