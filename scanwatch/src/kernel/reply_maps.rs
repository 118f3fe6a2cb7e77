//! Reply-aware detection, agent side: loads and attaches the TC egress
//! program (clsact / TCX egress, next to XDP on the same interfaces), reads
//! the per-source Threshold Random Walk state as alert evidence, and sweeps
//! first contacts left unanswered past the timeout (no-answer: a failure
//! for the test). See `scanwatch_common::trw` for the test itself.

use std::{
    collections::HashMap as StdHashMap,
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap, Map, MapData, MapError, PerCpuArray},
    programs::{
        SchedClassifier, TcAttachType,
        tc::{self, SchedClassifierLinkId, TcError},
    },
};
use scanwatch_common::{
    ScanEvent, SourceKey,
    trw::{
        CONTACTS_MAP, ContactKey, ContactValue, Decision, EGRESS_PROGRAM, REPLY_COUNTERS_MAP,
        REPLY_SOURCES_MAP, ReplyConfig, ReplyCounters, ReplyStats, outcome,
    },
    sketch::PORT_UDP,
    trigger,
};
use serde::Serialize;

use crate::{
    clock::boottime_ns,
    loader::{Interface, LoadError, error_chain},
    metrics::AgentSnapshot,
};

#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("map {0} missing from the object")]
    Missing(&'static str),
    #[error("map {name}: {detail}")]
    Map { name: &'static str, detail: String },
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> ReplyError {
    move |e| ReplyError::Map {
        name,
        detail: error_chain(&e),
    }
}

/// The egress program of a loaded object.
pub fn egress_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, LoadError> {
    let program = ebpf
        .program_mut(EGRESS_PROGRAM)
        .ok_or_else(|| LoadError::Load(format!("object has no program {EGRESS_PROGRAM}")))?;
    program
        .try_into()
        .map_err(|e: aya::programs::ProgramError| LoadError::Load(error_chain(&e)))
}

/// One egress attachment, detached on shutdown.
#[derive(Debug)]
pub struct EgressAttachment {
    pub iface: Interface,
    pub link: SchedClassifierLinkId,
}

/// Attaches the (loaded) egress program to `iface`. Adds a clsact qdisc
/// first, keeping one that exists (kernels before 6.6 attach through it;
/// newer kernels use a TCX link, which needs none). Other filters on the
/// interface are left alone, and the program passes every packet on to
/// them (`TC_ACT_UNSPEC`).
pub fn attach_egress(ebpf: &mut Ebpf, iface: &Interface) -> Result<EgressAttachment, LoadError> {
    match tc::qdisc_add_clsact(&iface.name) {
        Ok(()) => log::debug!("added a clsact qdisc to {}", iface.name),
        Err(TcError::AlreadyAttached) => {}
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        // TCX (kernel 6.6+) needs no qdisc: a real problem shows at attach.
        Err(e) => log::debug!("clsact qdisc on {}: {}", iface.name, error_chain(&e)),
    }
    let link = egress_program(ebpf)?
        .attach(&iface.name, TcAttachType::Egress)
        .map_err(|e| {
            LoadError::Load(format!(
                "cannot attach the egress program to {}: {}",
                iface.name,
                error_chain(&e)
            ))
        })?;
    Ok(EgressAttachment {
        iface: iface.clone(),
        link,
    })
}

/// Detaches one egress attachment (the qdisc stays: others may use it).
pub fn detach_egress(ebpf: &mut Ebpf, attachment: EgressAttachment) {
    let name = attachment.iface.name.clone();
    match egress_program(ebpf).and_then(|p| {
        p.detach(attachment.link)
            .map_err(|e| LoadError::Load(error_chain(&e)))
    }) {
        Ok(()) => log::info!("detached the egress program from {name}"),
        Err(e) => log::warn!("detaching the egress program from {name}: {e}"),
    }
}

/// The reply-aware detector's evidence for one source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyEvidence {
    pub successes: u64,
    pub failures: u64,
    pub no_answers: u64,
    /// Fixed-point log-likelihood ratio (`trw::SCALE`).
    pub llr: i64,
    /// Fixed-point upper boundary ln(β/α).
    pub upper: i64,
    /// At or above the upper boundary: a scanner.
    pub flagged: bool,
    /// Successes, and failures plus no-answers, at the last reported crossing.
    pub crossing_successes: u64,
    pub crossing_failures: u64,
}

impl ReplyEvidence {
    pub fn from_stats(s: &ReplyStats, cfg: &ReplyConfig) -> Self {
        Self {
            successes: s.successes,
            failures: s.failures,
            no_answers: s.no_answers,
            llr: s.llr,
            upper: cfg.upper,
            flagged: cfg.enabled != 0 && s.llr >= cfg.upper,
            crossing_successes: s.crossing_successes,
            crossing_failures: s.crossing_failures,
        }
    }

    /// Any first contact answered or timed out.
    pub const fn any(&self) -> bool {
        self.successes + self.failures + self.no_answers > 0
    }
}

/// The evidence as the alert shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplyAlert {
    /// First contacts answered with SYN-ACK or a UDP reply.
    pub successes: u64,
    /// First contacts answered with RST or ICMP unreachable.
    pub failures: u64,
    /// First contacts left unanswered past the timeout (failures for the test).
    pub no_answers: u64,
    /// ln(P[outcomes | scanner] / P[outcomes | benign]).
    pub log_likelihood: f64,
    /// The scanner boundary ln(β/α).
    pub threshold: f64,
    /// At the moment the test crossed the boundary (the verdict): successes,
    /// and failed plus unanswered first contacts. Absent before any crossing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub successes_at_verdict: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures_at_verdict: Option<u64>,
}

impl From<&ReplyEvidence> for ReplyAlert {
    fn from(e: &ReplyEvidence) -> Self {
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        Self {
            successes: e.successes,
            failures: e.failures,
            no_answers: e.no_answers,
            log_likelihood: round(ReplyConfig::to_f64(e.llr)),
            threshold: round(ReplyConfig::to_f64(e.upper)),
            successes_at_verdict: (e.crossing_failures > 0).then_some(e.crossing_successes),
            failures_at_verdict: (e.crossing_failures > 0).then_some(e.crossing_failures),
        }
    }
}

/// The reply maps (each handle owns its own file descriptor).
pub struct ReplyMaps {
    contacts: HashMap<MapData, ContactKey, ContactValue>,
    sources: HashMap<MapData, SourceKey, ReplyStats>,
    counters: PerCpuArray<MapData, ReplyCounters>,
    /// Spare descriptors of the three maps, for [`ReplyMaps::try_clone`].
    fds: [OwnedFd; 3],
    cfg: ReplyConfig,
}

/// `BPF_EXIST`: update only an existing entry.
const BPF_EXIST: u64 = 2;

fn dup(fd: BorrowedFd<'_>, name: &'static str) -> Result<OwnedFd, ReplyError> {
    fd.try_clone_to_owned().map_err(|e| ReplyError::Map {
        name,
        detail: format!("cannot duplicate the map fd: {e}"),
    })
}

fn map_fd(map: &Map, name: &'static str) -> Result<OwnedFd, ReplyError> {
    let data = match map {
        Map::HashMap(d) | Map::LruHashMap(d) | Map::PerCpuArray(d) => d,
        _ => {
            return Err(ReplyError::Map {
                name,
                detail: "unexpected map type".into(),
            });
        }
    };
    dup(data.fd().as_fd(), name)
}

impl ReplyMaps {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf, cfg: ReplyConfig) -> Result<Self, ReplyError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(ReplyError::Missing(name));
        let contacts = take(CONTACTS_MAP)?;
        let sources = take(REPLY_SOURCES_MAP)?;
        let counters = take(REPLY_COUNTERS_MAP)?;
        let fds = [
            map_fd(&contacts, CONTACTS_MAP)?,
            map_fd(&sources, REPLY_SOURCES_MAP)?,
            map_fd(&counters, REPLY_COUNTERS_MAP)?,
        ];
        Ok(Self {
            contacts: HashMap::try_from(contacts).map_err(map_err(CONTACTS_MAP))?,
            sources: HashMap::try_from(sources).map_err(map_err(REPLY_SOURCES_MAP))?,
            counters: PerCpuArray::try_from(counters).map_err(map_err(REPLY_COUNTERS_MAP))?,
            fds,
            cfg,
        })
    }

    /// Another set of handles on the same maps (for another thread).
    pub fn try_clone(&self) -> Result<Self, ReplyError> {
        let open = |i: usize, name: &'static str| {
            MapData::from_fd(dup(self.fds[i].as_fd(), name)?).map_err(map_err(name))
        };
        let contacts = open(0, CONTACTS_MAP)?;
        let sources = open(1, REPLY_SOURCES_MAP)?;
        let counters = open(2, REPLY_COUNTERS_MAP)?;
        Ok(Self {
            contacts: HashMap::try_from(Map::LruHashMap(contacts))
                .map_err(map_err(CONTACTS_MAP))?,
            sources: HashMap::try_from(Map::LruHashMap(sources))
                .map_err(map_err(REPLY_SOURCES_MAP))?,
            counters: PerCpuArray::try_from(Map::PerCpuArray(counters))
                .map_err(map_err(REPLY_COUNTERS_MAP))?,
            fds: [
                dup(self.fds[0].as_fd(), CONTACTS_MAP)?,
                dup(self.fds[1].as_fd(), REPLY_SOURCES_MAP)?,
                dup(self.fds[2].as_fd(), REPLY_COUNTERS_MAP)?,
            ],
            cfg: self.cfg,
        })
    }

    pub const fn config(&self) -> &ReplyConfig {
        &self.cfg
    }

    /// A source's test state, if it has one.
    pub fn stats(&self, key: &SourceKey) -> Result<Option<ReplyStats>, ReplyError> {
        match self.sources.get(key, 0) {
            Ok(s) => Ok(Some(s)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(REPLY_SOURCES_MAP)(e)),
        }
    }

    /// A source's evidence (zero when it has no state).
    pub fn evidence(&self, key: &SourceKey) -> ReplyEvidence {
        match self.stats(key) {
            Ok(Some(s)) => ReplyEvidence::from_stats(&s, &self.cfg),
            Ok(None) => ReplyEvidence::default(),
            Err(e) => {
                log::warn!("cannot read the reply state of {}: {e}", key.ip());
                ReplyEvidence::default()
            }
        }
    }

    /// A first contact's state.
    pub fn contact(&self, key: &ContactKey) -> Result<Option<ContactValue>, ReplyError> {
        match self.contacts.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(CONTACTS_MAP)(e)),
        }
    }

    /// The kernel's reply counters summed over CPUs.
    pub fn counters(&self) -> Result<ReplyCounters, ReplyError> {
        let mut total = ReplyCounters::ZERO;
        let per_cpu = self
            .counters
            .get(&0, 0)
            .map_err(map_err(REPLY_COUNTERS_MAP))?;
        for c in per_cpu.iter() {
            total.add(c);
        }
        Ok(total)
    }

    /// Marks first contacts pending for at least `timeout_ns` (at boot time
    /// `now_ns`) as no-answer and steps their sources' walks; returns the
    /// crossings to report. One walk of the contact map.
    ///
    /// The source state is read, changed and written back: an answer the
    /// kernel adds to the same source in between is lost (a narrow race; the
    /// kernel's own updates are atomic).
    pub fn sweep(&mut self, timeout_ns: u64, now_ns: u64) -> Result<SweepResult, ReplyError> {
        let mut result = SweepResult::default();
        let mut expired: Vec<(ContactKey, ContactValue)> = Vec::new();
        for item in self.contacts.iter() {
            let (k, v) = match item {
                Ok(kv) => kv,
                // An entry evicted during the walk: skip it.
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err(CONTACTS_MAP)(e)),
            };
            result.scanned += 1;
            if v.outcome == outcome::PENDING && now_ns.saturating_sub(v.first_ns) >= timeout_ns {
                expired.push((k, v));
            }
        }
        let mut per_source: StdHashMap<[u8; 16], u64> = StdHashMap::new();
        for (k, mut v) in expired {
            v.outcome = outcome::NO_ANSWER;
            // BPF_EXIST: an entry evicted meanwhile is not re-created.
            match self.contacts.insert(k, v, BPF_EXIST) {
                // UDP silence is no evidence (open or filtered): marked only.
                Ok(()) if k.port & PORT_UDP != 0 => result.udp_silent += 1,
                Ok(()) => *per_source.entry(k.remote).or_default() += 1,
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(map_err(CONTACTS_MAP)(e)),
            }
        }
        for (addr, n) in per_source {
            let key = SourceKey { addr };
            let mut s = self.stats(&key)?.unwrap_or_default();
            // The evidence at the first no-answer that crosses.
            let mut crossed: Option<(u64, u64)> = None;
            for i in 0..n {
                let (llr, d) = self.cfg.step(s.llr, false);
                s.llr = llr;
                match d {
                    Decision::Scanner => {
                        crossed =
                            crossed.or(Some((s.successes, s.failures + s.no_answers + i + 1)));
                    }
                    Decision::Benign => s.benign_resets += 1,
                    Decision::Pending => {}
                }
            }
            s.no_answers += n;
            result.no_answers += n;
            if let Some((successes, failures)) = crossed
                && (s.reported_ns == 0
                    || now_ns.saturating_sub(s.reported_ns) >= self.cfg.report_interval_ns)
            {
                s.reported_ns = now_ns;
                s.crossing_successes = successes;
                s.crossing_failures = failures;
                result.crossings.push(ScanEvent {
                    source: key,
                    time_ns: now_ns,
                    window_start_ns: 0,
                    ifindex: 0,
                    triggers: trigger::REPLY_SCAN,
                });
            }
            self.sources
                .insert(key, s, 0)
                .map_err(map_err(REPLY_SOURCES_MAP))?;
        }
        Ok(result)
    }
}

/// What one sweep did.
#[derive(Clone, Debug, Default)]
pub struct SweepResult {
    /// Contacts walked.
    pub scanned: u64,
    /// TCP contacts newly marked no-answer (failures for the test).
    pub no_answers: u64,
    /// UDP contacts newly marked no-answer (not counted).
    pub udp_silent: u64,
    /// Sources whose walk crossed the upper boundary (to report).
    pub crossings: Vec<ScanEvent>,
}

/// Sweeps every `interval` in a thread of its own (a full walk of the
/// contact map: kept off the detection path) until `stop` is set; sends
/// crossings to the agent's loop and refreshes the reply metrics.
pub fn spawn_sweeper(
    mut maps: ReplyMaps,
    timeout: Duration,
    interval: Duration,
    crossings: tokio::sync::mpsc::Sender<ScanEvent>,
    snapshot: Arc<Mutex<AgentSnapshot>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let mut next = Instant::now();
        let mut no_answers = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                next = Instant::now() + interval;
                let started = Instant::now();
                match maps.sweep(timeout_ns, boottime_ns()) {
                    Ok(r) => {
                        no_answers += r.no_answers;
                        log::debug!(
                            "reply sweep: {} contacts, {} no-answers, {} crossings in {:?}",
                            r.scanned,
                            r.no_answers,
                            r.crossings.len(),
                            started.elapsed()
                        );
                        for c in r.crossings {
                            if crossings.blocking_send(c).is_err() {
                                return; // the loop has stopped
                            }
                        }
                    }
                    Err(e) => log::warn!("reply sweep: {e}"),
                }
                let counters = maps.counters().unwrap_or(ReplyCounters::ZERO);
                let mut s = snapshot.lock().unwrap_or_else(PoisonError::into_inner);
                s.reply = Some((counters, no_answers));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}
