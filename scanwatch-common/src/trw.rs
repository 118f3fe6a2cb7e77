//! Reply-aware detection: first contacts, the host's answers to them, and
//! the Threshold Random Walk (TRW) sequential hypothesis test of Jung,
//! Paxson, Berger and Balakrishnan (IEEE S&P 2004).
//!
//! The XDP program records each first contact of a remote source with a
//! local (address, port) in [`CONTACTS_MAP`] (a direct-mapped table, no
//! insert: see [`crate::contact_table`]); the TC egress program sees
//! this host's answer (SYN-ACK: success; RST or ICMP unreachable: failure)
//! and steps the source's log-likelihood ratio in [`REPLY_SOURCES_MAP`];
//! the agent marks contacts left unanswered past a timeout (no-answer,
//! counted as a failure). The test runs in fixed point (integers only), so
//! the kernel and the agent run the very same [`ReplyConfig::step`].

use crate::layout::assert_layout;

/// Name of the first-contact table (an mmapable array of
/// `contact_table::ContactSlot`, indexed by a hash of the `ContactKey`).
pub const CONTACTS_MAP: &str = "CONTACTS";
/// Name of the per-source test state LRU map (`SourceKey` -> `ReplyStats`).
pub const REPLY_SOURCES_MAP: &str = "REPLY_SOURCES";
/// Name of the per-CPU reply counters (one-entry array of `ReplyCounters`).
pub const REPLY_COUNTERS_MAP: &str = "REPLY_COUNTERS";
/// Name of the load-time test settings (`ReplyConfig`) global.
pub const REPLY_CONFIG_GLOBAL: &str = "REPLY_CONFIG";
/// Name of the TC egress program in the object file.
pub const EGRESS_PROGRAM: &str = "scanwatch_egress";
/// Slots of the first-contact table (a power of two; fixed: the programs
/// mask with it).
pub const DEFAULT_CONTACTS_CAPACITY: u32 = 65_536;
/// Default capacity of the per-source test state map.
pub const DEFAULT_REPLY_SOURCES_CAPACITY: u32 = 65_536;

/// Fixed-point scale of log-likelihood ratios: 1.0 is `SCALE`.
pub const SCALE: i64 = 1 << 16;
/// The walk never goes above this (far beyond any boundary; keeps sums in range).
pub const LLR_CAP: i64 = 1 << 40;

/// A first contact: remote source, local address and local port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ContactKey {
    /// Remote (source) address, IPv4-mapped for IPv4.
    pub remote: [u8; 16],
    /// Local (destination) address, IPv4-mapped for IPv4.
    pub local: [u8; 16],
    /// Local port as a `sketch::port_entry` (carries the UDP flag).
    pub port: u32,
}

assert_layout!(ContactKey { remote, local, port }, size 36, align 4);

/// The marks-table key marking that `remote` already had a success credited
/// on `local` (port 0: no real contact has it, every port entry carries
/// `SLOT_USED`).
#[inline(always)]
pub const fn host_marker(remote: [u8; 16], local: [u8; 16]) -> ContactKey {
    ContactKey {
        remote,
        local,
        port: 0,
    }
}

/// Outcomes of a first contact ([`ContactValue::outcome`]).
pub mod outcome {
    /// No answer seen yet.
    pub const PENDING: u64 = 0;
    /// SYN-ACK, or a UDP reply.
    pub const SUCCESS: u64 = 1;
    /// RST, or ICMP/ICMPv6 port/host unreachable or administratively prohibited.
    pub const FAILURE: u64 = 2;
    /// Nothing within the timeout (marked by the agent; a failure for the
    /// test for TCP; UDP silence is no evidence, open or filtered).
    pub const NO_ANSWER: u64 = 3;
    /// Not a contact: this host sent UDP to the remote first (its own query,
    /// e.g. DNS), so the remote's datagrams to that port are answers, not probes.
    pub const OUTBOUND: u64 = 4;
}

/// State of one first contact.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContactValue {
    /// Kernel-clock ns of the first contact.
    pub first_ns: u64,
    /// One of [`outcome`]; set once, by compare-and-swap from `PENDING`.
    pub outcome: u64,
}

assert_layout!(ContactValue { first_ns, outcome }, size 16, align 8);

/// Per-source state of the sequential test.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyStats {
    /// Log-likelihood ratio ln(P[outcomes | scanner] / P[outcomes | benign]),
    /// fixed point ([`SCALE`]); reset to 0 when it reaches the lower boundary.
    pub llr: i64,
    pub successes: u64,
    pub failures: u64,
    pub no_answers: u64,
    /// Kernel-clock ns of the last reported crossing of the upper boundary (0: none).
    pub reported_ns: u64,
    /// Times the lower boundary was reached (walk reset: judged benign).
    pub benign_resets: u64,
    /// Successes, and failures plus no-answers, when the last reported
    /// crossing happened (the evidence at the moment of the verdict).
    pub crossing_successes: u64,
    pub crossing_failures: u64,
}

assert_layout!(
    ReplyStats {
        llr,
        successes,
        failures,
        no_answers,
        reported_ns,
        benign_resets,
        crossing_successes,
        crossing_failures,
    },
    size 64,
    align 8
);

/// Where a step of the walk leaves the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Between the boundaries: keep observing.
    Pending,
    /// At or above the upper boundary ln(β/α): a scanner.
    Scanner,
    /// At or below the lower boundary ln((1-β)/(1-α)): benign; the walk restarts at 0.
    Benign,
}

/// The test's settings in fixed point, set by the agent at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyConfig {
    /// 0: the kernel records no contacts and runs no test.
    pub enabled: u32,
    /// 0: a success moves the walk once per (source, local address) — the
    /// first open port found on a host; later open ports of that host are
    /// counted but do not move it (see [`host_marker`]). 1: every
    /// successful (address, port) first contact moves it.
    pub per_port_successes: u32,
    /// ln(θ1/θ0) (negative for θ1 < θ0).
    pub success_step: i64,
    /// ln((1-θ1)/(1-θ0)) (positive for θ1 < θ0).
    pub failure_step: i64,
    /// ln(β/α).
    pub upper: i64,
    /// ln((1-β)/(1-α)).
    pub lower: i64,
    /// A source's crossing is reported at most once per this interval.
    pub report_interval_ns: u64,
}

assert_layout!(
    ReplyConfig {
        enabled,
        per_port_successes,
        success_step,
        failure_step,
        upper,
        lower,
        report_interval_ns,
    },
    size 48,
    align 8
);

/// Why TRW parameters were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrwParamError {
    /// θ0, θ1, α, β must all lie strictly between 0 and 1.
    OutOfRange,
    /// θ1 (scanner success probability) must be below θ0 (benign).
    Theta1NotBelowTheta0,
    /// α (false positives) must be below β (detection).
    AlphaNotBelowBeta,
}

impl ReplyConfig {
    /// Records nothing, never decides.
    pub const DISABLED: Self = Self {
        enabled: 0,
        per_port_successes: 0,
        success_step: 0,
        failure_step: 0,
        upper: i64::MAX,
        lower: i64::MIN,
        report_interval_ns: u64::MAX,
    };

    /// One step of the walk from `llr` with a success or a failure
    /// (no-answers are failures): the new ratio and the decision.
    #[inline(always)]
    pub fn step(&self, llr: i64, success: bool) -> (i64, Decision) {
        let step = if success {
            self.success_step
        } else {
            self.failure_step
        };
        let mut new = llr + step;
        if new > LLR_CAP {
            new = LLR_CAP;
        }
        if new >= self.upper {
            (new, Decision::Scanner)
        } else if new <= self.lower {
            (0, Decision::Benign)
        } else {
            (new, Decision::Pending)
        }
    }
}

#[cfg(not(target_arch = "bpf"))]
impl ReplyConfig {
    /// The fixed-point test for θ0 (benign success probability), θ1
    /// (scanner success probability), α (false-positive bound) and β
    /// (detection probability).
    pub fn from_params(
        theta0: f64,
        theta1: f64,
        alpha: f64,
        beta: f64,
        report_interval_ns: u64,
    ) -> Result<Self, TrwParamError> {
        let unit = |v: f64| v.is_finite() && v > 0.0 && v < 1.0;
        if !(unit(theta0) && unit(theta1) && unit(alpha) && unit(beta)) {
            return Err(TrwParamError::OutOfRange);
        }
        if theta1 >= theta0 {
            return Err(TrwParamError::Theta1NotBelowTheta0);
        }
        if alpha >= beta {
            return Err(TrwParamError::AlphaNotBelowBeta);
        }
        let fixed = |v: f64| (v * SCALE as f64).round() as i64;
        Ok(Self {
            enabled: 1,
            per_port_successes: 0,
            success_step: fixed((theta1 / theta0).ln()),
            failure_step: fixed(((1.0 - theta1) / (1.0 - theta0)).ln()),
            upper: fixed((beta / alpha).ln()),
            lower: fixed(((1.0 - beta) / (1.0 - alpha)).ln()),
            report_interval_ns,
        })
    }

    /// A fixed-point ratio as a natural logarithm.
    pub fn to_f64(llr: i64) -> f64 {
        llr as f64 / SCALE as f64
    }

    /// Failures in a row from 0 that reach the upper boundary.
    pub fn failures_to_flag(&self) -> u64 {
        if self.failure_step <= 0 {
            return u64::MAX;
        }
        (self.upper as u64).div_ceil(self.failure_step as u64)
    }
}

/// Per-CPU counters of the reply path.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyCounter {
    /// First contacts recorded by XDP.
    Contacts = 0,
    /// First contacts not recorded because another CPU was writing their
    /// slot at that instant (should stay near zero).
    ContactErrors = 1,
    /// Answers that resolved a pending first contact as a success.
    Successes = 2,
    /// Answers that resolved a pending first contact as a failure.
    Failures = 3,
    /// Answers (SYN-ACK, RST, ICMP error, UDP) matching no pending first contact.
    Unmatched = 4,
    /// Packets seen by the egress program.
    EgressPackets = 5,
    /// Crossings sent to the agent.
    EventsSent = 6,
    /// Crossings lost because the ring buffer was full.
    EventsDropped = 7,
    /// Pending first contacts overwritten by a newer contact hashing to the
    /// same slot of the direct-mapped table (their answer then resolves
    /// nothing and they never time out).
    ContactsOverwritten = 8,
    /// First SYNs of sources not tracked whose first contact waits in
    /// their admission slot instead of the contact table
    /// (`tracking::RECORD_CONTACT_TAKEN`): resolved there by an answer, or
    /// written to the table by the source's next probe of another port of
    /// the same host.
    ContactsWaiting = 9,
    /// Answers to a source whose test decided it scans in its current
    /// window ([`crate::SourceStats::REPLY_DECIDED`]): not read (its first
    /// contacts are no longer recorded).
    AfterVerdict = 10,
}

/// Number of reply counter slots.
pub const REPLY_COUNTER_SLOTS: usize = 11;

impl ReplyCounter {
    pub const ALL: [Self; REPLY_COUNTER_SLOTS] = [
        Self::Contacts,
        Self::ContactErrors,
        Self::Successes,
        Self::Failures,
        Self::Unmatched,
        Self::EgressPackets,
        Self::EventsSent,
        Self::EventsDropped,
        Self::ContactsOverwritten,
        Self::ContactsWaiting,
        Self::AfterVerdict,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Contacts => "contacts",
            Self::ContactErrors => "contact_errors",
            Self::Successes => "successes",
            Self::Failures => "failures",
            Self::Unmatched => "unmatched",
            Self::EgressPackets => "egress_packets",
            Self::EventsSent => "events_sent",
            Self::EventsDropped => "events_dropped",
            Self::ContactsOverwritten => "contacts_overwritten",
            Self::ContactsWaiting => "contacts_waiting",
            Self::AfterVerdict => "after_verdict",
        }
    }
}

/// The reply counters, one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyCounters {
    pub counters: [u64; REPLY_COUNTER_SLOTS],
}

assert_layout!(ReplyCounters { counters }, size 88, align 8);

impl ReplyCounters {
    pub const ZERO: Self = Self {
        counters: [0; REPLY_COUNTER_SLOTS],
    };

    pub const fn get(&self, c: ReplyCounter) -> u64 {
        self.counters[c as usize]
    }

    /// Adds another copy (sums the per-CPU values).
    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.counters.iter_mut().zip(other.counters.iter()) {
            *a = a.wrapping_add(*b);
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are repr(C), Copy, without padding, valid for any bit pattern.
    unsafe impl aya::Pod for super::ContactKey {}
    unsafe impl aya::Pod for super::ContactValue {}
    unsafe impl aya::Pod for super::ReplyStats {}
    unsafe impl aya::Pod for super::ReplyConfig {}
    unsafe impl aya::Pod for super::ReplyCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> ReplyConfig {
        ReplyConfig::from_params(0.8, 0.2, 0.01, 0.99, 1).unwrap()
    }

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(core::mem::size_of::<ContactKey>(), 36);
        assert_eq!(core::mem::size_of::<ContactValue>(), 16);
        assert_eq!(core::mem::size_of::<ReplyStats>(), 64);
        assert_eq!(core::mem::size_of::<ReplyConfig>(), 48);
        assert_eq!(core::mem::size_of::<ReplyCounters>(), 88);
        for (i, c) in ReplyCounter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }

    #[test]
    fn exact_steps_and_boundaries() {
        let c = defaults();
        // ln(0.2/0.8) = -ln 4, ln(0.8/0.2) = ln 4, ln(0.99/0.01) = ln 99.
        let ln4 = (4.0f64.ln() * 65536.0).round() as i64;
        let ln99 = (99.0f64.ln() * 65536.0).round() as i64;
        assert_eq!(c.success_step, -ln4);
        assert_eq!(c.failure_step, ln4);
        assert_eq!(c.upper, ln99);
        assert_eq!(c.lower, -ln99);
        assert_eq!((ln4, ln99), (90_852, 301_146));
        assert!((ReplyConfig::to_f64(c.upper) - 99.0f64.ln()).abs() < 1e-4);
        assert_eq!(c.step(0, false), (ln4, Decision::Pending));
        assert_eq!(c.step(0, true), (-ln4, Decision::Pending));
    }

    #[test]
    fn four_failures_in_a_row_flag_a_scanner() {
        let c = defaults();
        assert_eq!(c.failures_to_flag(), 4);
        let mut llr = 0;
        for i in 1..=3 {
            let (new, d) = c.step(llr, false);
            assert_eq!(d, Decision::Pending, "failure {i}");
            llr = new;
        }
        let (llr, d) = c.step(llr, false);
        assert_eq!(d, Decision::Scanner);
        assert_eq!(llr, 4 * 90_852);
        // Further failures stay above the boundary.
        assert_eq!(c.step(llr, false).1, Decision::Scanner);
    }

    #[test]
    fn successes_reach_the_lower_boundary_and_reset() {
        let c = defaults();
        let mut llr = 0;
        for _ in 0..3 {
            let (new, d) = c.step(llr, true);
            assert_eq!(d, Decision::Pending);
            llr = new;
        }
        assert_eq!(llr, -3 * 90_852);
        // The fourth success crosses ln(0.01/0.99): benign, walk back at 0.
        assert_eq!(c.step(llr, true), (0, Decision::Benign));
    }

    #[test]
    fn successes_offset_failures() {
        let c = defaults();
        // Two successes, then 6 failures: net +4 steps after the sixth.
        let mut llr = 0;
        for _ in 0..2 {
            llr = c.step(llr, true).0;
        }
        let mut flagged_at = None;
        for i in 1..=6 {
            let (new, d) = c.step(llr, false);
            llr = new;
            if d == Decision::Scanner && flagged_at.is_none() {
                flagged_at = Some(i);
            }
        }
        assert_eq!(flagged_at, Some(6));
    }

    #[test]
    fn walk_is_capped() {
        let c = defaults();
        assert_eq!(c.step(LLR_CAP, false), (LLR_CAP, Decision::Scanner));
    }

    #[test]
    fn parameters_are_checked() {
        assert_eq!(
            ReplyConfig::from_params(0.2, 0.8, 0.01, 0.99, 1),
            Err(TrwParamError::Theta1NotBelowTheta0)
        );
        assert_eq!(
            ReplyConfig::from_params(0.8, 0.2, 0.99, 0.01, 1),
            Err(TrwParamError::AlphaNotBelowBeta)
        );
        for bad in [0.0, 1.0, f64::NAN, -0.5] {
            assert_eq!(
                ReplyConfig::from_params(bad, 0.2, 0.01, 0.99, 1),
                Err(TrwParamError::OutOfRange)
            );
        }
        // Stricter α: more failures needed.
        let strict = ReplyConfig::from_params(0.8, 0.2, 0.0001, 0.99, 1).unwrap();
        assert_eq!(strict.failures_to_flag(), 7);
        assert!(ReplyConfig::DISABLED.step(0, false).1 == Decision::Pending);
    }
}
