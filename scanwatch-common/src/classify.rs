//! Which kind of probe a packet is, decided from header fields alone.
//!
//! The same functions run in the XDP program and in the host unit tests, so
//! the classification table below is the single source of truth.

/// The kind of reconnaissance probe a packet looks like.
///
/// The discriminants index [`crate::SourceStats::probes`] and, through
/// [`crate::Counter`], the per-interface counters.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// TCP SYN without ACK (connect/half-open scans, and every new TCP connection).
    Syn = 0,
    /// TCP flag sets a real stack never opens with: FIN-only, NULL, Xmas, SYN+FIN, SYN+RST, ...
    Stealth = 1,
    /// Any UDP datagram (UDP scans; legitimate UDP is told apart later by its pattern).
    Udp = 2,
    /// ICMP echo request or ICMPv6 echo request.
    IcmpEcho = 3,
    /// ICMP timestamp, information and address-mask requests; ICMPv6 node information queries.
    IcmpOtherProbe = 4,
    /// An IP fragment whose transport header cannot be read from it (non-first
    /// fragments, and first fragments too short to hold the header, as `nmap -f` sends).
    Fragment = 5,
}

/// Number of probe kinds (the length of [`crate::SourceStats::probes`]).
pub const PROBE_KINDS: usize = 6;

impl ProbeKind {
    /// All probe kinds in discriminant order.
    pub const ALL: [Self; PROBE_KINDS] = [
        Self::Syn,
        Self::Stealth,
        Self::Udp,
        Self::IcmpEcho,
        Self::IcmpOtherProbe,
        Self::Fragment,
    ];

    /// Index into per-kind arrays.
    #[inline(always)]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The stable name used in JSON, metrics and alerts.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Syn => "syn",
            Self::Stealth => "stealth",
            Self::Udp => "udp",
            Self::IcmpEcho => "icmp_echo",
            Self::IcmpOtherProbe => "icmp_other_probe",
            Self::Fragment => "fragment",
        }
    }
}

/// TCP flag bits (byte 13 of the TCP header).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// Classifies a TCP segment by its flags byte. `None` means "not a probe"
/// (ACK-bearing segments of established flows, plain RSTs).
///
/// ECE and CWR are ignored (they ride on SYNs when ECN is negotiated).
///
/// | flags (ignoring ECE/CWR)          | kind      |
/// |-----------------------------------|-----------|
/// | SYN (+PSH/URG), no ACK/FIN/RST    | `syn`     |
/// | none (NULL scan)                  | `stealth` |
/// | SYN together with FIN or RST      | `stealth` |
/// | FIN together with RST             | `stealth` |
/// | FIN, PSH or URG without ACK (FIN, Xmas scans) | `stealth` |
/// | RST alone                         | not a probe |
/// | anything with ACK and no SYN/RST conflict | not a probe |
#[inline(always)]
pub const fn classify_tcp(flags: u8) -> Option<ProbeKind> {
    use tcp_flags::{ACK, FIN, PSH, RST, SYN, URG};
    let f = flags & (FIN | SYN | RST | PSH | ACK | URG);
    if f == 0 {
        return Some(ProbeKind::Stealth);
    }
    let syn = f & SYN != 0;
    let fin = f & FIN != 0;
    let rst = f & RST != 0;
    let ack = f & ACK != 0;
    if syn && (fin || rst) {
        return Some(ProbeKind::Stealth);
    }
    if fin && rst {
        return Some(ProbeKind::Stealth);
    }
    if syn {
        return if ack { None } else { Some(ProbeKind::Syn) };
    }
    if ack || rst {
        return None;
    }
    // FIN / PSH / URG without ACK: FIN scan, Xmas scan and relatives.
    Some(ProbeKind::Stealth)
}

/// The flag bytes (their six low bits: `classify_tcp` ignores ECE and
/// CWR) of the segments [`classify_tcp`] finds no probe in, one bit each.
const NOT_A_PROBE: u64 = flag_set(false);

/// The flag bytes (six low bits) [`classify_tcp`] finds a SYN probe in.
const A_SYN: u64 = flag_set(true);

/// The six-bit flag values [`classify_tcp`] classifies as a SYN probe
/// (`syn`) or as no probe (not `syn`), as a 64-bit set.
const fn flag_set(syn: bool) -> u64 {
    let mut set = 0;
    let mut f = 0;
    while f < 64 {
        let member = match classify_tcp(f as u8) {
            None => !syn,
            Some(ProbeKind::Syn) => syn,
            Some(_) => false,
        };
        if member {
            set |= 1 << f;
        }
        f += 1;
    }
    set
}

/// Whether [`classify_tcp`] finds a probe in a segment with these flags:
/// one shift of a constant (the kernel's fast paths ask on every packet).
#[inline(always)]
pub const fn is_tcp_probe(flags: u8) -> bool {
    (NOT_A_PROBE >> (flags & 0x3f)) & 1 == 0
}

/// Whether [`classify_tcp`] classifies a segment with these flags as a
/// SYN probe, as [`is_tcp_probe`] answers.
#[inline(always)]
pub const fn is_tcp_syn(flags: u8) -> bool {
    (A_SYN >> (flags & 0x3f)) & 1 != 0
}

/// Classifies an ICMP (IPv4) message by type.
#[inline(always)]
pub const fn classify_icmp(icmp_type: u8) -> Option<ProbeKind> {
    match icmp_type {
        8 => Some(ProbeKind::IcmpEcho),
        // timestamp, information request, address mask request
        13 | 15 | 17 => Some(ProbeKind::IcmpOtherProbe),
        _ => None,
    }
}

/// Classifies an ICMPv6 message by type.
#[inline(always)]
pub const fn classify_icmpv6(icmp_type: u8) -> Option<ProbeKind> {
    match icmp_type {
        128 => Some(ProbeKind::IcmpEcho),
        // node information query (RFC 4620)
        139 => Some(ProbeKind::IcmpOtherProbe),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::tcp_flags::*;
    use super::*;

    /// The one-shift answers agree with `classify_tcp` on every flags byte.
    #[test]
    fn flag_sets_answer_as_the_classifier() {
        for flags in 0..=u8::MAX {
            let kind = classify_tcp(flags);
            assert_eq!(is_tcp_probe(flags), kind.is_some(), "{flags:#04x}");
            assert_eq!(
                is_tcp_syn(flags),
                kind == Some(ProbeKind::Syn),
                "{flags:#04x}"
            );
        }
    }

    const ECE: u8 = 0x40;
    const CWR: u8 = 0x80;

    #[test]
    fn nmap_scan_types() {
        assert_eq!(classify_tcp(SYN), Some(ProbeKind::Syn)); // -sS / -sT
        assert_eq!(classify_tcp(SYN | ECE | CWR), Some(ProbeKind::Syn)); // ECN SYN
        assert_eq!(classify_tcp(FIN), Some(ProbeKind::Stealth)); // -sF
        assert_eq!(classify_tcp(0), Some(ProbeKind::Stealth)); // -sN
        assert_eq!(classify_tcp(FIN | PSH | URG), Some(ProbeKind::Stealth)); // -sX
        assert_eq!(classify_tcp(SYN | FIN), Some(ProbeKind::Stealth));
        assert_eq!(classify_tcp(SYN | RST), Some(ProbeKind::Stealth));
        assert_eq!(classify_tcp(FIN | RST), Some(ProbeKind::Stealth));
        assert_eq!(classify_tcp(PSH), Some(ProbeKind::Stealth));
        assert_eq!(classify_tcp(URG), Some(ProbeKind::Stealth));
        assert_eq!(classify_tcp(ECE), Some(ProbeKind::Stealth)); // NULL apart from ECN bits
    }

    #[test]
    fn established_traffic_is_not_a_probe() {
        assert_eq!(classify_tcp(ACK), None);
        assert_eq!(classify_tcp(ACK | PSH), None);
        assert_eq!(classify_tcp(ACK | FIN), None);
        assert_eq!(classify_tcp(ACK | RST), None);
        assert_eq!(classify_tcp(RST), None);
        assert_eq!(classify_tcp(SYN | ACK), None);
        assert_eq!(classify_tcp(ACK | URG | PSH | FIN), None);
    }

    #[test]
    fn every_flag_combination_has_one_answer() {
        // Exhaustive: the function is total and SYN-only is the only `syn`.
        let syn_like: Vec<u8> = (0..=255u8)
            .filter(|f| classify_tcp(*f) == Some(ProbeKind::Syn))
            .map(|f| f & 0x3f)
            .collect();
        for f in syn_like {
            assert_eq!(f & (SYN | ACK | FIN | RST), SYN);
        }
    }

    #[test]
    fn icmp_types() {
        assert_eq!(classify_icmp(8), Some(ProbeKind::IcmpEcho));
        assert_eq!(classify_icmp(13), Some(ProbeKind::IcmpOtherProbe));
        assert_eq!(classify_icmp(15), Some(ProbeKind::IcmpOtherProbe));
        assert_eq!(classify_icmp(17), Some(ProbeKind::IcmpOtherProbe));
        for t in [0u8, 3, 5, 11, 14, 18] {
            assert_eq!(classify_icmp(t), None, "type {t}");
        }
        assert_eq!(classify_icmpv6(128), Some(ProbeKind::IcmpEcho));
        assert_eq!(classify_icmpv6(139), Some(ProbeKind::IcmpOtherProbe));
        for t in [1u8, 129, 133, 134, 135, 136, 143] {
            assert_eq!(classify_icmpv6(t), None, "type {t}");
        }
    }

    #[test]
    fn names_are_unique_and_indexed() {
        for (i, k) in ProbeKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
        let mut names: Vec<_> = ProbeKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PROBE_KINDS);
    }
}
