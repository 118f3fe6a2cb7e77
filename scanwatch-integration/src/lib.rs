//! scanwatch's privileged tests and benchmarks live in `tests/` and
//! `benches/` of this crate: they load BPF programs, build network
//! namespaces and run real scanners, so they need root. The crate is not a
//! default workspace member: a plain `cargo test` leaves it out, and
//! `cargo xtask test` (as root) runs it. See DEVELOPING.md.
//!
//! The library holds what the tests and the benchmarks share: the
//! benchmark programs ([`bench_programs`]), mitigation over a test
//! harness and the programs' clock ([`coarse_ns`]).

pub mod bench_programs;

use ipnet::IpNet;
use scanwatch::{
    config::MitigationConfig,
    kernel::testrun::XdpHarness,
    output::mitigation::{BlockError, Mitigation},
};

/// Mitigation over a test harness's maps, as the agent builds it.
pub trait TakeMitigation {
    /// Takes the harness's mitigation maps (once) and sets the never-block networks.
    fn take_mitigation(
        &mut self,
        cfg: MitigationConfig,
        never_block: Vec<IpNet>,
    ) -> Result<Mitigation, BlockError>;
}

impl TakeMitigation for XdpHarness {
    fn take_mitigation(
        &mut self,
        cfg: MitigationConfig,
        never_block: Vec<IpNet>,
    ) -> Result<Mitigation, BlockError> {
        Mitigation::new(self.take_block_maps()?, cfg, never_block)
    }
}

/// CLOCK_MONOTONIC_COARSE in ns, the clock the programs stamp with (its
/// `>> 30` is their SYN rate bucket, `tracking::rate_bucket`).
pub fn coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC_COARSE)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
