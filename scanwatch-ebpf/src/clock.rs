//! The kernel clock both programs stamp with: `bpf_ktime_get_coarse_ns`
//! (CLOCK_MONOTONIC as of the last timer tick, the clock the agent reads
//! back), called once per tick instead of once per packet.
//!
//! The coarse clock only moves at a tick, when `jiffies` moves too. So the
//! value is cached with the `jiffies` it was read at, in one global both
//! programs share, and a packet reads `jiffies` (which the verifier inlines
//! into one load: no helper call) and takes the cached value while it
//! matches. The helper call cost the tracked-SYN path 11-14 ns a packet
//! (docs/benchmarks.md).
//!
//! The kernel advances `jiffies` just before the timekeeper, so a refill
//! inside that window reads the previous tick's time: the cached value is
//! then a tick late until the next refill. It never goes back (a refill
//! stores only a later time), and every CPU reads the same cache, so one
//! CPU's stamps are never ahead of another's by more than a read in
//! flight, as with the helper.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::helpers::generated::{bpf_jiffies64, bpf_ktime_get_coarse_ns};

/// The cached time and the `jiffies` it was read at (`.bss`: zero at load,
/// so the first packet refills it).
#[repr(C)]
struct Cached {
    jiffies: u64,
    ns: u64,
}

static mut CLOCK: Cached = Cached { jiffies: 0, ns: 0 };

/// The coarse monotonic clock in ns, as `bpf_ktime_get_coarse_ns` gives
/// it, at most a tick late.
#[inline(always)]
pub fn now() -> u64 {
    let cached = &raw mut CLOCK;
    // SAFETY: a helper without preconditions (inlined by the verifier);
    // plain reads and writes of a global, whose torn or racing updates
    // leave a time at most a tick late (above).
    unsafe {
        let jiffies = bpf_jiffies64();
        // `jiffies` first: it is written last.
        let stamped = read_volatile(&raw const (*cached).jiffies);
        let ns = read_volatile(&raw const (*cached).ns);
        if stamped == jiffies {
            return ns;
        }
        let fresh = bpf_ktime_get_coarse_ns();
        if fresh > ns {
            write_volatile(&raw mut (*cached).ns, fresh);
            write_volatile(&raw mut (*cached).jiffies, jiffies);
        }
        fresh
    }
}
