//! Evidence packets: the probe headers the kernel hands over for each
//! alerted source ([`scanwatch_common::evidence`]), written as pcapng, one
//! file per incident (source and window), under a directory with a size cap
//! (the oldest files go first). Records that arrive before their source's
//! alert wait in a bounded buffer ([`held`]); the alert creates the file with
//! them, and later records of that source and window are appended up to the
//! budget.

pub mod decode;
pub mod held;
pub mod pcapng;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io::Write as _,
    ops::Range,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::Instant,
};

use scanwatch_common::{SourceKey, evidence::EvidenceRecord};
use serde::Serialize;

use self::held::{HOLD_FOR, Held, MAX_HELD, Refused};
use crate::{
    detect::ProbeSample,
    model::{KernelClock, error_chain},
};

/// Extension of the files.
pub const EXTENSION: &str = "pcapng";
/// Incidents followed at once (the oldest window is forgotten beyond).
const MAX_INCIDENTS: usize = 4096;

/// What an alert says about its evidence packets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EvidenceRef {
    /// The pcapng file.
    pub file: String,
    /// Packets in it when the alert was written (later probes of the same
    /// source and window are appended, up to `packets_per_source`).
    pub packets: u32,
}

/// Counters for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvidenceStats {
    pub files_created: u64,
    pub packets_written: u64,
    /// Records not written: the held buffer was full (per source or in all).
    pub overflow: u64,
    /// Records held without an alert for their source and window.
    pub expired: u64,
    /// Records of sources in `ignore` networks.
    pub ignored: u64,
    pub write_errors: u64,
    /// Files removed to stay under `max_bytes`.
    pub files_removed: u64,
    pub directory_bytes: u64,
    pub held: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("evidence directory {}: {detail} (set [evidence] enabled = false to run without evidence packets)", path.display())]
pub struct EvidenceDirError {
    pub path: PathBuf,
    pub detail: String,
}

/// Where and how the files are kept.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    pub directory: PathBuf,
    pub max_bytes: u64,
    /// Packets per source and window.
    pub budget: u32,
    /// The detection window (kernel-clock ns).
    pub window_ns: u64,
    /// ifindex -> interface name (for the interface blocks).
    pub names: BTreeMap<u32, String>,
}

/// One incident's file.
#[derive(Debug)]
struct Incident {
    path: PathBuf,
    window: Range<u64>,
    packets: u32,
    /// ifindex of each interface block written, in order.
    interfaces: Vec<u32>,
    comment: String,
    /// What the packets written show (at most the budget).
    samples: Vec<ProbeSample>,
}

/// The fields of an evidence packet the tool naming reads across probes.
fn sample_of(r: &EvidenceRecord) -> ProbeSample {
    let captured = (r.captured as usize).min(r.bytes.len());
    let d = decode::decode(&r.bytes[..captured]);
    ProbeSample {
        ttl: d.ttl.unwrap_or(0),
        src_port: d.src_port,
        udp: d.protocol == "UDP",
    }
}

/// How many of the oldest files (sizes oldest first) go so that `incoming`
/// more bytes fit under `cap` with `total` bytes there now.
pub fn removals(
    sizes: impl IntoIterator<Item = u64>,
    total: u64,
    incoming: u64,
    cap: u64,
) -> usize {
    let mut left = total;
    let mut n = 0;
    for size in sizes {
        if left.saturating_add(incoming) <= cap {
            break;
        }
        left = left.saturating_sub(size);
        n += 1;
    }
    n
}

/// A file name: the alert's UTC time and the source (`/` of a network as `_`).
pub fn file_name(wall: chrono::DateTime<chrono::Utc>, source_label: &str, attempt: u32) -> String {
    let suffix = if attempt == 0 {
        String::new()
    } else {
        format!("-{}", attempt + 1)
    };
    format!(
        "{}_{}{suffix}.{EXTENSION}",
        wall.format("%Y-%m-%dT%H-%M-%SZ"),
        source_label.replace('/', "_")
    )
}

/// Whether `name` is one of the files of `source_label`.
pub fn is_file_of(name: &str, source_label: &str) -> bool {
    let label = source_label.replace('/', "_");
    name.strip_suffix(&format!(".{EXTENSION}"))
        .and_then(|stem| stem.split_once('_'))
        .map(|(_, rest)| rest)
        .is_some_and(|rest| {
            rest == label
                || rest
                    .strip_prefix(&label)
                    .and_then(|s| s.strip_prefix('-'))
                    .is_some_and(|n| n.parse::<u32>().is_ok())
        })
}

/// The pcapng files of `dir` with their sizes, oldest first (by
/// modification time, then name).
pub fn list_files(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            files.push((meta.modified().ok(), path, meta.len()));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p, s)| (p, s)).collect())
}

pub struct EvidenceStore {
    settings: StoreSettings,
    held: Held,
    incidents: HashMap<SourceKey, Incident>,
    /// The directory's files, oldest first, with their sizes.
    files: VecDeque<(PathBuf, u64)>,
    pub stats: EvidenceStats,
}

impl EvidenceStore {
    /// Creates the directory if needed (mode 0750), counts what is in it and
    /// removes the oldest files beyond the cap.
    pub fn open(settings: StoreSettings) -> Result<Self, EvidenceDirError> {
        let dir = &settings.directory;
        let err = |e: std::io::Error| EvidenceDirError {
            path: dir.clone(),
            detail: error_chain(&e),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(err)?;
        let files: VecDeque<(PathBuf, u64)> = list_files(dir).map_err(err)?.into();
        // A file we cannot create is found now rather than at the first alert.
        let probe = dir.join(".scanwatch-write-test");
        std::fs::write(&probe, b"").map_err(err)?;
        let _ = std::fs::remove_file(&probe);
        let mut store = Self {
            held: Held::new(settings.budget, MAX_HELD),
            settings,
            incidents: HashMap::new(),
            stats: EvidenceStats {
                directory_bytes: files.iter().map(|(_, s)| s).sum(),
                ..EvidenceStats::default()
            },
            files,
        };
        store.make_room(0);
        Ok(store)
    }

    pub fn directory(&self) -> &Path {
        &self.settings.directory
    }

    /// One record from the kernel, which arrived at `now`. `ignored`: its
    /// source is in an `ignore` network (never alerted on).
    pub fn on_record(&mut self, record: &EvidenceRecord, ignored: bool, now: Instant) {
        if ignored {
            self.stats.ignored += 1;
            return;
        }
        let budget = self.settings.budget;
        if let Some(incident) = self.incidents.get(&record.source)
            && incident.window.contains(&record.time_ns)
        {
            if incident.packets >= budget {
                // CPUs racing in the kernel may overshoot the budget.
                self.stats.overflow += 1;
            } else {
                self.append(&record.source, std::slice::from_ref(record));
            }
            return;
        }
        match self.held.push(*record, now) {
            Ok(()) => {}
            Err(Refused::Full | Refused::SourceFull) => self.stats.overflow += 1,
        }
        self.stats.held = self.held.len() as u64;
    }

    /// An alert about `source` (`label`: as the alert names it) whose window
    /// started at `window_start_ns`: the incident's file (created with the
    /// held records on the first alert of the window) and its packet count.
    pub fn on_alert(
        &mut self,
        source: &SourceKey,
        label: &str,
        window_start_ns: u64,
        comment: String,
        clock: &KernelClock,
    ) -> Option<EvidenceRef> {
        if let Some(i) = self.incidents.get(source)
            && i.window.start == window_start_ns
            && i.path.exists()
        {
            return Some(Self::reference(i));
        }
        let window = window_start_ns..window_start_ns.saturating_add(self.settings.window_ns);
        let (records, other) = self.held.take(source, window.clone());
        self.stats.expired += other as u64;
        self.stats.held = self.held.len() as u64;
        let path = self.create(label, clock)?;
        self.forget_oldest_incident();
        self.incidents.insert(
            *source,
            Incident {
                path,
                window,
                packets: 0,
                interfaces: Vec::new(),
                comment,
                samples: Vec::new(),
            },
        );
        let budget = self.settings.budget as usize;
        self.stats.overflow += records.len().saturating_sub(budget) as u64;
        self.append(source, &records[..records.len().min(budget)]);
        self.incidents.get(source).map(Self::reference)
    }

    /// What the evidence packets written for `source`'s incident show.
    pub fn samples(&self, source: &SourceKey) -> &[ProbeSample] {
        self.incidents.get(source).map_or(&[], |i| &i.samples)
    }

    fn reference(i: &Incident) -> EvidenceRef {
        EvidenceRef {
            file: i.path.display().to_string(),
            packets: i.packets,
        }
    }

    /// Creates the incident's file with its section header.
    fn create(&mut self, label: &str, clock: &KernelClock) -> Option<PathBuf> {
        let header = pcapng::section_header(concat!("scanwatch ", env!("CARGO_PKG_VERSION")));
        self.make_room(header.len() as u64);
        let wall = clock.to_wall(crate::model::kernel_now_ns());
        for attempt in 0..100 {
            let path = self
                .settings
                .directory
                .join(file_name(wall, label, attempt));
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(&path);
            match opened {
                Ok(mut f) => {
                    if let Err(e) = f.write_all(&header) {
                        self.write_failed(&path, &e);
                        let _ = std::fs::remove_file(&path);
                        return None;
                    }
                    self.stats.files_created += 1;
                    self.stats.directory_bytes += header.len() as u64;
                    self.files.push_back((path.clone(), header.len() as u64));
                    return Some(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    self.write_failed(&path, &e);
                    return None;
                }
            }
        }
        None
    }

    fn write_failed(&mut self, path: &Path, e: &std::io::Error) {
        self.stats.write_errors += 1;
        log::warn!(
            "cannot write evidence file {}: {}",
            path.display(),
            error_chain(e)
        );
    }

    /// Appends `records` (of one window) to `source`'s incident file.
    fn append(&mut self, source: &SourceKey, records: &[EvidenceRecord]) {
        if records.is_empty() {
            return;
        }
        let clock = KernelClock::now();
        let Some(incident) = self.incidents.get_mut(source) else {
            return;
        };
        let mut bytes = Vec::new();
        for r in records {
            let id = match incident.interfaces.iter().position(|i| *i == r.ifindex) {
                Some(id) => id,
                None => {
                    let name = self.settings.names.get(&r.ifindex).cloned();
                    bytes.extend(pcapng::interface(
                        &name.unwrap_or_else(|| format!("ifindex {}", r.ifindex)),
                    ));
                    incident.interfaces.push(r.ifindex);
                    incident.interfaces.len() - 1
                }
            };
            let captured = (r.captured as usize).min(r.bytes.len());
            bytes.extend(pcapng::packet(&pcapng::Packet {
                interface_id: id as u32,
                time_ns: wall_ns(&clock, r.time_ns),
                data: &r.bytes[..captured],
                original_len: r.frame_len,
                comment: &incident.comment,
            }));
        }
        let path = incident.path.clone();
        self.make_room(bytes.len() as u64);
        if !self.files.iter().rev().any(|(p, _)| *p == path) {
            // The cap removed the incident's own file.
            self.incidents.remove(source);
            return;
        }
        let written = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&bytes));
        match written {
            Ok(()) => {
                if let Some(i) = self.incidents.get_mut(source) {
                    i.packets += records.len() as u32;
                    i.samples.extend(records.iter().map(sample_of));
                }
                self.stats.packets_written += records.len() as u64;
                self.stats.directory_bytes += bytes.len() as u64;
                if let Some(entry) = self.files.iter_mut().rev().find(|(p, _)| *p == path) {
                    entry.1 += bytes.len() as u64;
                }
            }
            Err(e) => {
                self.write_failed(&path, &e);
                self.incidents.remove(source);
            }
        }
    }

    /// Removes the oldest files until `incoming` more bytes fit the cap.
    fn make_room(&mut self, incoming: u64) {
        let n = removals(
            self.files.iter().map(|(_, s)| *s),
            self.stats.directory_bytes,
            incoming,
            self.settings.max_bytes,
        );
        for _ in 0..n {
            let Some((path, size)) = self.files.pop_front() else {
                break;
            };
            match std::fs::remove_file(&path) {
                Ok(()) => self.stats.files_removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    log::warn!(
                        "cannot remove evidence file {}: {}",
                        path.display(),
                        error_chain(&e)
                    );
                }
            }
            self.stats.directory_bytes = self.stats.directory_bytes.saturating_sub(size);
            self.incidents.retain(|_, i| i.path != path);
        }
    }

    fn forget_oldest_incident(&mut self) {
        if self.incidents.len() < MAX_INCIDENTS {
            return;
        }
        if let Some(key) = self
            .incidents
            .iter()
            .min_by_key(|(_, i)| i.window.end)
            .map(|(k, _)| *k)
        {
            self.incidents.remove(&key);
        }
    }

    /// Every second: held records past their time expire, and incidents
    /// whose window is over (at `kernel_now_ns`) are closed.
    pub fn tick(&mut self, now: Instant, kernel_now_ns: u64) {
        self.stats.expired += self.held.expire(now, HOLD_FOR) as u64;
        self.stats.held = self.held.len() as u64;
        self.incidents
            .retain(|_, i| i.window.end.saturating_add(HOLD_FOR.as_nanos() as u64) > kernel_now_ns);
    }
}

/// A kernel stamp as ns since the Unix epoch.
fn wall_ns(clock: &KernelClock, stamp_ns: u64) -> u64 {
    clock
        .to_wall(stamp_ns)
        .timestamp_nanos_opt()
        .and_then(|ns| u64::try_from(ns).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
