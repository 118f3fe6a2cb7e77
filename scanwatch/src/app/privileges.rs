//! Capability checks, so that a missing privilege is one clear line rather
//! than an EPERM from deep inside a syscall.

use std::fmt;

/// Linux capabilities scanwatch needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    NetAdmin = 12,
    SysAdmin = 21,
    Perfmon = 38,
    Bpf = 39,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NetAdmin => "CAP_NET_ADMIN",
            Self::SysAdmin => "CAP_SYS_ADMIN",
            Self::Perfmon => "CAP_PERFMON",
            Self::Bpf => "CAP_BPF",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "{action} needs {missing} (effective capabilities); run as root or grant them, e.g. `sudo scanwatch ...`"
    )]
    Missing { action: String, missing: String },
    #[error("cannot read effective capabilities from /proc/self/status: {0}")]
    Unreadable(String),
}

/// The effective capability mask of this process.
pub fn effective_capabilities() -> Result<u64, PrivilegeError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| PrivilegeError::Unreadable(e.to_string()))?;
    parse_cap_eff(&status).ok_or_else(|| PrivilegeError::Unreadable("no CapEff line".into()))
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Fails unless every capability in `needed` is effective. CAP_SYS_ADMIN
/// stands in for CAP_BPF and CAP_PERFMON (kernels before 5.8 and the kernel's
/// own fallback).
pub fn require(action: &str, needed: &[Capability]) -> Result<(), PrivilegeError> {
    let mask = effective_capabilities()?;
    let missing = missing_from(mask, needed);
    if missing.is_empty() {
        return Ok(());
    }
    Err(PrivilegeError::Missing {
        action: action.to_string(),
        missing: missing
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
    })
}

fn missing_from(mask: u64, needed: &[Capability]) -> Vec<Capability> {
    let has = |c: Capability| mask & (1u64 << c as u32) != 0;
    needed
        .iter()
        .copied()
        .filter(|c| {
            !(has(*c)
                || (matches!(c, Capability::Bpf | Capability::Perfmon)
                    && has(Capability::SysAdmin)))
        })
        .collect()
}

/// Lifts RLIMIT_MEMLOCK for kernels that still charge BPF maps to it (before
/// 5.11); harmless on newer ones. Failure is logged, not fatal.
pub fn raise_memlock_rlimit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if ret != 0 {
        log::debug!(
            "cannot lift RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_capeff() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(s), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn missing_capabilities() {
        let root = 0x1ff_ffff_ffffu64;
        assert!(missing_from(root, &[Capability::Bpf, Capability::NetAdmin]).is_empty());
        assert_eq!(
            missing_from(0, &[Capability::Bpf, Capability::NetAdmin]),
            vec![Capability::Bpf, Capability::NetAdmin]
        );
        // CAP_SYS_ADMIN covers CAP_BPF but not CAP_NET_ADMIN.
        let sys_admin = 1u64 << 21;
        assert_eq!(
            missing_from(sys_admin, &[Capability::Bpf, Capability::NetAdmin]),
            vec![Capability::NetAdmin]
        );
    }
}
