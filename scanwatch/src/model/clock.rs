//! The kernel stamps probes with `bpf_ktime_get_boot_ns` (CLOCK_BOOTTIME,
//! which keeps counting across suspend); this converts those stamps to wall
//! time.

use chrono::{DateTime, SecondsFormat, Utc};
use std::time::{Duration, SystemTime};

/// Nanoseconds of CLOCK_BOOTTIME now.
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec; CLOCK_BOOTTIME exists on every supported kernel.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Converts kernel boot-time stamps to wall-clock time using one reading of
/// both clocks, so every converted stamp of one report is consistent.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    wall_now: SystemTime,
    boot_now_ns: u64,
}

impl BootClock {
    pub fn now() -> Self {
        Self {
            wall_now: SystemTime::now(),
            boot_now_ns: boottime_ns(),
        }
    }

    /// A clock fixed at the given readings (tests).
    pub fn at(wall_now: SystemTime, boot_now_ns: u64) -> Self {
        Self {
            wall_now,
            boot_now_ns,
        }
    }

    pub fn to_wall(&self, boot_ns: u64) -> DateTime<Utc> {
        let wall = if boot_ns <= self.boot_now_ns {
            self.wall_now - Duration::from_nanos(self.boot_now_ns - boot_ns)
        } else {
            self.wall_now + Duration::from_nanos(boot_ns - self.boot_now_ns)
        };
        DateTime::<Utc>::from(wall)
    }

    /// RFC 3339 with milliseconds, UTC (`2026-11-28T05:01:02.345Z`).
    pub fn rfc3339(&self, boot_ns: u64) -> String {
        self.to_wall(boot_ns)
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_past_stamps() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let clock = BootClock::at(wall, 10_000_000_000);
        assert_eq!(clock.rfc3339(10_000_000_000), "2027-01-15T08:00:00.000Z");
        assert_eq!(clock.rfc3339(8_500_000_000), "2027-01-15T07:59:58.500Z");
    }

    #[test]
    fn boottime_advances() {
        let a = boottime_ns();
        let b = boottime_ns();
        assert!(a > 0 && b >= a);
    }
}
