//! The kernel stamps probes with `bpf_ktime_get_coarse_ns`
//! (CLOCK_MONOTONIC as of the last timer tick: no clock-source read, about
//! 25 ns a probe cheaper than an exact reading); the agent reads
//! CLOCK_MONOTONIC, which is never behind a stamp made earlier, and this
//! converts stamps to wall time. Block expiries the agent writes are on the
//! same clock; neither counts time spent suspended.

use chrono::{DateTime, SecondsFormat, Utc};
use std::time::{Duration, SystemTime};

/// Nanoseconds of CLOCK_MONOTONIC now: the kernel's clock (see the module
/// comment), at least every stamp the kernel made before.
pub fn kernel_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec; CLOCK_MONOTONIC exists on every kernel.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Converts kernel stamps to wall-clock time using one reading of
/// both clocks, so every converted stamp of one report is consistent.
#[derive(Clone, Copy, Debug)]
pub struct KernelClock {
    wall_now: SystemTime,
    stamp_now_ns: u64,
}

impl KernelClock {
    pub fn now() -> Self {
        Self {
            wall_now: SystemTime::now(),
            stamp_now_ns: kernel_now_ns(),
        }
    }

    /// A clock fixed at the given readings (tests).
    pub fn at(wall_now: SystemTime, stamp_now_ns: u64) -> Self {
        Self {
            wall_now,
            stamp_now_ns,
        }
    }

    pub fn to_wall(&self, stamp_ns: u64) -> DateTime<Utc> {
        let wall = if stamp_ns <= self.stamp_now_ns {
            self.wall_now - Duration::from_nanos(self.stamp_now_ns - stamp_ns)
        } else {
            self.wall_now + Duration::from_nanos(stamp_ns - self.stamp_now_ns)
        };
        DateTime::<Utc>::from(wall)
    }

    /// RFC 3339 with milliseconds, UTC (`2026-11-28T05:01:02.345Z`).
    pub fn rfc3339(&self, stamp_ns: u64) -> String {
        self.to_wall(stamp_ns)
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_past_stamps() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let clock = KernelClock::at(wall, 10_000_000_000);
        assert_eq!(clock.rfc3339(10_000_000_000), "2027-01-15T08:00:00.000Z");
        assert_eq!(clock.rfc3339(8_500_000_000), "2027-01-15T07:59:58.500Z");
    }

    #[test]
    fn kernel_clock_advances() {
        let a = kernel_now_ns();
        let b = kernel_now_ns();
        assert!(a > 0 && b >= a);
    }
}
