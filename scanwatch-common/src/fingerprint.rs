//! Scanner-tool signatures: the header fields a probing tool sets by
//! itself, tested on each TCP probe of a tracked source, the same in the
//! kernel (which keeps the per-source tally) and the agent (tests, and
//! decoding the tally).
//!
//! Each signature is a bit of [`signatures`]' result. The kernel keeps two
//! bytes per source and window in `SourceStats::crossed` ([`MATCHED_SHIFT`],
//! [`MISSED_SHIFT`]): the signatures some probe matched, and those some
//! probe did not. A tool is named when every fingerprinted probe of the
//! window matched its signature.
//!
//! What each tool sends (read from the tools' sources and checked against
//! captures of the Debian packages in the namespace lab):
//!
//! | tool | IP ID | TCP window | TCP options | other |
//! |---|---|---|---|---|
//! | masscan (1.3.2) | (destination ^ port ^ sequence) & 0xffff | 1024 | none | TTL 255 |
//! | ZMap (2.1.1) | 54321 | 65535 | none | TTL 255 |
//! | nmap -sS / -sF -sX -sN -sA | random | 1024 | MSS only (SYN), none (others) | TTL 37..59 |
//! | Mirai and variants | | | none | sequence = destination address |
//! | unicornscan | | 4128 | MSS only | TTL 255 |
//! | hping3 | | 512 | none | source port + 1 each probe |
//! | an OS stack (nmap -sT, curl, ZGrab) | | | MSS and more (SACK, timestamps, window scale) | |

/// masscan: the IP ID is the low 16 bits of destination ^ port ^ sequence (IPv4).
pub const MASSCAN: u8 = 1 << 0;
/// ZMap up to 4.0: IP ID 54321 and window 65535 (IPv4).
pub const ZMAP: u8 = 1 << 1;
/// nmap's raw-socket scans: window 1024, an MSS option alone on a SYN, no
/// options on the other probes.
pub const NMAP: u8 = 1 << 2;
/// Mirai: the sequence number is the destination IPv4 address, no options.
pub const MIRAI: u8 = 1 << 3;
/// unicornscan: window 4128, an MSS option alone.
pub const UNICORNSCAN: u8 = 1 << 4;
/// hping3: window 512, no options.
pub const HPING3: u8 = 1 << 5;
/// A SYN with an operating system's option layout (MSS and at least one of
/// SACK-permitted, timestamps, window scale): a real TCP stack.
pub const OS_STACK: u8 = 1 << 6;
/// Every signature.
pub const ALL: u8 = 0x7f;

/// Bit position in `SourceStats::crossed` of the signatures some probe of
/// the window matched (one byte).
pub const MATCHED_SHIFT: u32 = 8;
/// Bit position in `SourceStats::crossed` of the signatures some probe of
/// the window did not match (one byte).
pub const MISSED_SHIFT: u32 = 16;

/// The fields of one TCP probe the signatures read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpProbe {
    /// IPv4 (the IP ID and an IPv4 destination exist).
    pub v4: bool,
    /// IPv4 identification (0 for IPv6).
    pub ip_id: u16,
    /// Destination IPv4 address, host order of its big-endian bytes (0 for IPv6).
    pub dst_v4: u32,
    pub dst_port: u16,
    pub seq: u32,
    pub window: u16,
    /// The SYN flag is set.
    pub syn: bool,
    /// Bytes of TCP options (data offset * 4 - 20).
    pub options_len: u8,
    /// The first four bytes of the options (zero where there are fewer).
    pub options_head: [u8; 4],
}

impl TcpProbe {
    /// The fields of a probe whose TCP header is `tcp` (its first 20
    /// bytes, the data offset at least 5 words), the first four bytes of
    /// its options `options_head` (zero where there are fewer), in an IPv4
    /// datagram of IP ID and destination `v4`, or in IPv6 (`None`).
    #[inline(always)]
    pub fn of_header(tcp: &[u8; 20], v4: Option<(u16, u32)>, options_head: [u8; 4]) -> Self {
        let (ip_id, dst_v4) = v4.unwrap_or_default();
        Self {
            v4: v4.is_some(),
            ip_id,
            dst_v4,
            dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            window: u16::from_be_bytes([tcp[14], tcp[15]]),
            // The SYN flag.
            syn: tcp[13] & 0x02 != 0,
            // (No branch: the data offset is at least 5 words.)
            options_len: ((tcp[12] >> 4) * 4).wrapping_sub(20),
            options_head,
        }
    }
}

/// `x`, hidden from the compiler (on the bpf target an `asm!` moving the
/// register onto itself: one instruction; an empty one would leave two
/// line-info records at one offset, which the kernel refuses): it cannot know its range, so the arithmetic below stays
/// arithmetic (a comparison would become a branch on the bpf target, and
/// each branch doubles the paths the verifier walks).
#[inline(always)]
fn opaque(mut x: u64) -> u64 {
    #[cfg(target_arch = "bpf")]
    // SAFETY: `x = x`; the compiler only learns that `x` may have changed.
    unsafe {
        core::arch::asm!("{0} = {0}", inout(reg) x, options(pure, nomem, nostack));
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        x = core::hint::black_box(x);
    }
    x
}

/// 1 if `a == b`, else 0, without a branch (for values below 2^63).
#[inline(always)]
fn eq(a: u64, b: u64) -> u64 {
    opaque(a ^ b).wrapping_sub(1) >> 63
}

/// The signatures `p` matches (bits of this module), computed without a
/// branch: ten comparisons.
#[inline(always)]
pub fn signatures(p: &TcpProbe) -> u8 {
    let v4 = u64::from(p.v4);
    let syn = u64::from(p.syn);
    let window = u64::from(p.window);
    let options = u64::from(p.options_len);
    let no_options = eq(options, 0);
    let four = eq(options, 4);
    // An MSS option first (kind 2, length 4): the head is zero when the
    // options are shorter than 4 bytes.
    let head = u64::from(u16::from_be_bytes([p.options_head[0], p.options_head[1]]));
    let mss_first = eq(head, 0x0204);
    let mss_only = four & mss_first;
    // Option lengths are multiples of 4: neither 0 nor 4 is at least 8.
    let longer = (no_options | four) ^ 1;
    let expected_id = u64::from(p.dst_v4 ^ u32::from(p.dst_port) ^ p.seq) & 0xffff;
    let masscan = v4 & eq(u64::from(p.ip_id), expected_id);
    let zmap = v4 & eq(u64::from(p.ip_id), 54321) & eq(window, 65535);
    let nmap = eq(window, 1024) & ((syn & mss_only) | ((syn ^ 1) & no_options));
    let mirai = v4 & eq(u64::from(p.seq), u64::from(p.dst_v4)) & no_options;
    let unicornscan = eq(window, 4128) & mss_only;
    let hping3 = eq(window, 512) & no_options;
    let os_stack = syn & longer & mss_first;
    (masscan | zmap << 1 | nmap << 2 | mirai << 3 | unicornscan << 4 | hping3 << 5 | os_stack << 6)
        as u8
}

/// Set in a probe's signature byte when it was fingerprinted (a TCP probe
/// with a whole header); the low seven bits are then its [`signatures`].
pub const FINGERPRINTED: u8 = 0x80;

/// The `crossed` bits a probe's signature byte adds: its matches and
/// misses when it was fingerprinted, else none (without a branch).
#[inline(always)]
pub const fn tally_of(byte: u8) -> u64 {
    let all = 0u64.wrapping_sub((byte >> 7) as u64);
    tally_bits(byte & ALL) & all
}

/// The `crossed` bits that record a probe matching `sigs`: its matches and
/// its misses.
#[inline(always)]
pub const fn tally_bits(sigs: u8) -> u64 {
    ((sigs as u64) << MATCHED_SHIFT) | (((!sigs & ALL) as u64) << MISSED_SHIFT)
}

/// The signatures every fingerprinted probe of a window matched, from its
/// `crossed` word (0 when none was fingerprinted).
#[inline(always)]
pub const fn consistent(crossed: u64) -> u8 {
    let matched = (crossed >> MATCHED_SHIFT) as u8 & ALL;
    let missed = (crossed >> MISSED_SHIFT) as u8 & ALL;
    matched & !missed
}

/// Whether no later probe of the window can change what its tally names
/// ([`consistent`]): every signature has been missed by some probe. (A
/// fingerprinted probe sets, for each signature, its matched or its
/// missed bit: once none is held by all, every one has been missed, and
/// a probe can then only add matched bits, which [`consistent`] ignores.)
/// The kernel skips a settled window's probes' signatures.
#[inline(always)]
pub const fn settled(crossed: u64) -> bool {
    (crossed >> MISSED_SHIFT) as u8 & ALL == ALL
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> u32 {
        u32::from_be_bytes(a)
    }

    /// Fields of probes captured in the lab (tcpdump in the target
    /// namespace, 198.18.7.2), one per tool.
    #[test]
    fn captured_probes_match_their_tool_only() {
        let dst = v4([198, 18, 7, 2]);
        let mss = [2, 4, 5, 0xb4];
        let masscan = TcpProbe {
            v4: true,
            ip_id: 0xcce9,
            dst_v4: dst,
            dst_port: 17,
            seq: 2_737_294_330,
            window: 1024,
            syn: true,
            ..TcpProbe::default()
        };
        let zmap = TcpProbe {
            v4: true,
            ip_id: 54321,
            dst_v4: v4([198, 19, 7, 11]),
            dst_port: 80,
            seq: 819_614_587,
            window: 65535,
            syn: true,
            ..TcpProbe::default()
        };
        let nmap_syn = TcpProbe {
            v4: true,
            ip_id: 0xe61c,
            dst_v4: dst,
            dst_port: 23,
            seq: 790_032_456,
            window: 1024,
            syn: true,
            options_len: 4,
            options_head: mss,
        };
        let nmap_xmas = TcpProbe {
            syn: false,
            options_len: 0,
            options_head: [0; 4],
            ..nmap_syn
        };
        let hping = TcpProbe {
            v4: true,
            ip_id: 0xc69b,
            dst_v4: dst,
            dst_port: 80,
            seq: 584_461_140,
            window: 512,
            syn: true,
            ..TcpProbe::default()
        };
        let curl = TcpProbe {
            v4: true,
            ip_id: 0x7fa2,
            dst_v4: dst,
            dst_port: 81,
            seq: 581_866_074,
            window: 64240,
            syn: true,
            options_len: 20,
            options_head: mss,
        };
        let mirai = TcpProbe {
            v4: true,
            ip_id: 0x1234,
            dst_v4: dst,
            dst_port: 23,
            seq: dst,
            window: 14600,
            syn: true,
            ..TcpProbe::default()
        };
        let unicorn = TcpProbe {
            window: 4128,
            options_len: 4,
            options_head: mss,
            ..hping
        };
        assert_eq!(signatures(&masscan), MASSCAN);
        assert_eq!(signatures(&zmap), ZMAP);
        assert_eq!(signatures(&nmap_syn), NMAP);
        assert_eq!(signatures(&nmap_xmas), NMAP);
        assert_eq!(signatures(&hping), HPING3);
        assert_eq!(signatures(&curl), OS_STACK);
        assert_eq!(signatures(&mirai), MIRAI);
        assert_eq!(signatures(&unicorn), UNICORNSCAN);
        let ipv6_nmap = TcpProbe {
            v4: false,
            ip_id: 0,
            dst_v4: 0,
            ..nmap_syn
        };
        assert_eq!(signatures(&ipv6_nmap), NMAP);
    }

    #[test]
    fn the_branch_free_comparisons_compare() {
        for (a, b) in [
            (0u64, 0u64),
            (1, 0),
            (0, 1),
            (65535, 65535),
            (u64::from(u32::MAX), 7),
        ] {
            assert_eq!(eq(a, b), u64::from(a == b), "{a} {b}");
        }
        let bits = [MASSCAN, ZMAP, NMAP, MIRAI, UNICORNSCAN, HPING3, OS_STACK];
        assert_eq!(bits.iter().fold(0, |a, b| a | b), ALL);
        assert!(bits.iter().enumerate().all(|(i, b)| *b == 1 << i));
    }

    #[test]
    fn a_header_gives_its_fields() {
        // An nmap SYN to port 23: data offset 6 words, window 1024.
        let mut tcp = [0u8; 20];
        tcp[2..4].copy_from_slice(&23u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&790_032_456u32.to_be_bytes());
        tcp[12] = 6 << 4;
        tcp[13] = 0x02;
        tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
        let mss = [2, 4, 5, 0xb4];
        let p = TcpProbe::of_header(&tcp, Some((0xe61c, 0xc613_070b)), mss);
        assert_eq!(
            p,
            TcpProbe {
                v4: true,
                ip_id: 0xe61c,
                dst_v4: 0xc613_070b,
                dst_port: 23,
                seq: 790_032_456,
                window: 1024,
                syn: true,
                options_len: 4,
                options_head: mss,
            }
        );
        assert_eq!(signatures(&p), NMAP);
        tcp[13] = 0x10;
        let v6 = TcpProbe::of_header(&tcp, None, mss);
        assert_eq!((v6.v4, v6.ip_id, v6.dst_v4, v6.syn), (false, 0, 0, false));
    }

    #[test]
    fn the_tally_names_what_every_probe_matched() {
        let one = tally_bits(NMAP);
        assert_eq!(consistent(one), NMAP);
        // A second probe matching nothing: no signature holds for all.
        assert_eq!(consistent(one | tally_bits(0)), 0);
        // Trigger bits (low byte) and the SYN rate's base (high half) are apart.
        assert_eq!(tally_bits(ALL) & 0xff, 0);
        assert_eq!(tally_bits(0) >> 32, 0);
        assert_eq!(consistent(one | 0x3f | (9 << 32)), NMAP);
        assert_eq!(tally_of(FINGERPRINTED | NMAP), one);
        assert_eq!(tally_of(NMAP), 0);
        assert_eq!(tally_of(FINGERPRINTED), tally_bits(0));
    }

    /// Every tally: once settled, no probe changes what it names, and a
    /// tally that is not settled after a fingerprinted probe names a tool
    /// some later probe can still rule out.
    #[test]
    fn a_settled_tally_names_nothing_whatever_comes() {
        for matched in 0..=ALL {
            for missed in 0..=ALL {
                let crossed = tally_word(matched, missed);
                if settled(crossed) {
                    assert_eq!(consistent(crossed), 0);
                    for byte in 0..=u8::MAX {
                        let after = crossed | tally_of(byte);
                        assert_eq!(consistent(after), 0);
                        assert!(settled(after));
                    }
                } else if matched | missed == ALL {
                    let held = consistent(crossed);
                    assert_ne!(held, 0);
                    assert_eq!(consistent(crossed | tally_of(FINGERPRINTED)), 0);
                }
            }
        }
        assert!(!settled(0));
        assert!(settled(tally_bits(0)));
        assert!(!settled(tally_bits(NMAP)));
        assert!(settled(tally_bits(NMAP) | tally_bits(OS_STACK)));
    }

    fn tally_word(matched: u8, missed: u8) -> u64 {
        (u64::from(matched) << MATCHED_SHIFT) | (u64::from(missed) << MISSED_SHIFT)
    }
}
