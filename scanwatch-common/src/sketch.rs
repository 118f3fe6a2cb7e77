//! Distinct destination ports and hosts per source, in bounded memory.
//!
//! Each dimension is an exact set of the first values seen in the window
//! (so counts are exact below the thresholds) plus a bitmap for linear
//! counting beyond it (Whang et al. 1990: n ≈ -m ln(z/m), z = zero bits).
//!
//! | dimension            | exact set            | bitmap   | used by |
//! |----------------------|----------------------|----------|---------|
//! | ports (TCP and UDP)  | 16 ports (`u32` each, tagged by protocol) | 128 bits | `port_scan` |
//! | UDP ports            | the UDP-tagged ports of the same set | 64 bits | `udp_scan` |
//! | hosts (any probe)    | 28 host fingerprints (`u16` each) | 128 bits | `host_sweep` |
//! | ICMP hosts           | the ICMP-flagged hosts of the same set | 64 bits | `ping_sweep` |
//!
//! A host fingerprint folds the destination address's eight 16-bit words
//! together by XOR into 15 bits (never 0): addresses that differ in the low
//! 14 bits of one 16-bit word only (a sweep of an aligned block of up to
//! 16,384 addresses, or of one host address across many subnets) never
//! share one; others share one with probability about 1 in 32,768 a pair.
//!
//! The hash functions live here so that the kernel, the agent and the
//! tests agree on them.

/// Slots in the exact port set.
pub const PORT_SET: usize = 16;
/// Slots in the exact host set.
pub const HOST_SET: usize = 28;
/// Bits in the port bitmap.
pub const PORT_BITS: u32 = 128;
/// Bits in the UDP port bitmap.
pub const UDP_BITS: u32 = 64;
/// Bits in the host bitmap.
pub const HOST_BITS: u32 = 128;
/// Bits in the ICMP host bitmap.
pub const ICMP_BITS: u32 = 64;

/// Marks a used slot (0 means empty).
pub const SLOT_USED: u32 = 0x8000_0000;
/// Port entries: this bit marks a UDP port.
pub const PORT_UDP: u32 = 0x0001_0000;
/// Host entries (`u16`): this bit marks a host that got an ICMP probe; the
/// other fifteen are the host's fingerprint.
pub const HOST_ICMP: u16 = 0x8000;

/// A 32-bit integer mixer (lowbias32, by Chris Wellons).
#[inline(always)]
pub const fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The 15-bit fingerprint of a destination address (IPv4-mapped or IPv6,
/// network order): its eight 16-bit words folded by XOR, never 0.
#[inline(always)]
pub const fn host_fingerprint(a: &[u8; 16]) -> u16 {
    let mut f = 0u16;
    let mut i = 0;
    while i < 16 {
        f ^= u16::from_be_bytes([a[i], a[i + 1]]);
        i += 2;
    }
    let f = (f ^ (f >> 15)) & 0x7fff;
    if f == 0 { 0x7fff } else { f }
}

/// [`host_fingerprint`] of the IPv4-mapped form of `a` (the `::ffff:`
/// prefix folds to 0xffff).
#[inline(always)]
pub const fn host_fingerprint_v4(a: [u8; 4]) -> u16 {
    let f = 0xffff ^ u16::from_be_bytes([a[0], a[1]]) ^ u16::from_be_bytes([a[2], a[3]]);
    let f = (f ^ (f >> 15)) & 0x7fff;
    if f == 0 { 0x7fff } else { f }
}

/// The exact-set entry of a destination port.
#[inline(always)]
pub const fn port_entry(port: u16, udp: bool) -> u32 {
    SLOT_USED | if udp { PORT_UDP } else { 0 } | port as u32
}

/// The port of an exact-set entry.
pub const fn entry_port(entry: u32) -> u16 {
    (entry & 0xffff) as u16
}

/// Hash of a port entry, for the bitmaps.
#[inline(always)]
pub const fn port_hash(entry: u32) -> u32 {
    mix32(entry)
}

/// Hash of a host fingerprint, for the bitmaps.
#[inline(always)]
pub const fn host_hash(fingerprint: u16) -> u32 {
    mix32(fingerprint as u32 | 0x0001_0000)
}

/// Bit index of a hash in a bitmap of `bits` bits (a power of two).
#[inline(always)]
pub const fn bit_index(hash: u32, bits: u32) -> u32 {
    hash >> (32 - bits.trailing_zeros())
}

#[cfg(not(target_arch = "bpf"))]
mod estimate {
    /// Linear-counting estimate from the number of set bits in a bitmap of `m` bits.
    pub fn linear_count(set_bits: u32, m: u32) -> f64 {
        let m = f64::from(m);
        let zero = m - f64::from(set_bits.min(m as u32));
        if zero < 1.0 {
            // Saturated: the estimate is at least this.
            return m * m.ln();
        }
        -m * (zero / m).ln()
    }

    /// Distinct values: exact while the exact set has room, otherwise the
    /// larger of the exact count and the bitmap estimate (rounded).
    pub fn distinct(exact: u32, set_full: bool, set_bits: u32, m: u32) -> u64 {
        if !set_full {
            return u64::from(exact);
        }
        (linear_count(set_bits, m).round() as u64).max(u64::from(exact))
    }

    /// The fewest set bits whose estimate reaches `threshold`: the kernel
    /// flags a crossing with this when the threshold exceeds the exact set.
    pub fn bits_for_threshold(threshold: u32, m: u32) -> u32 {
        (1..=m)
            .find(|k| linear_count(*k, m) >= f64::from(threshold) - 1e-9)
            .unwrap_or(m)
    }
}
#[cfg(not(target_arch = "bpf"))]
pub use estimate::{bits_for_threshold, distinct, linear_count};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_fingerprint_matches_the_mapped_address_fingerprint() {
        for a in [
            [0u8; 4],
            [198, 18, 0, 2],
            [255; 4],
            [10, 1, 2, 3],
            [0, 0, 0xff, 0xff],
        ] {
            let mut mapped = [0u8; 16];
            mapped[10] = 0xff;
            mapped[11] = 0xff;
            mapped[12..].copy_from_slice(&a);
            assert_eq!(host_fingerprint_v4(a), host_fingerprint(&mapped), "{a:?}");
            assert_ne!(host_fingerprint_v4(a), 0);
        }
    }

    #[test]
    fn sweeps_in_one_word_never_share_a_fingerprint() {
        // Every address of each /18 of 198.18.0.0/15, and ::1 of 1,000 subnets.
        for block in 0..8u32 {
            let mut seen = std::collections::BTreeSet::new();
            for i in 0..16_384u32 {
                let b = (0xc612_0000u32 + block * 16_384 + i).to_be_bytes();
                assert!(seen.insert(host_fingerprint_v4(b)), "{b:?}");
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in 0..1000u16 {
            let mut a = [0u8; 16];
            a[0] = 0xfd;
            a[6..8].copy_from_slice(&s.to_be_bytes());
            a[15] = 1;
            assert!(seen.insert(host_fingerprint(&a)));
        }
    }

    #[test]
    fn linear_counting_accuracy() {
        // Simulate inserting n distinct hashed ports into the port bitmap.
        for n in [16u32, 30, 50, 100, 200] {
            let mut bits = [false; PORT_BITS as usize];
            for p in 0..n {
                bits[bit_index(port_hash(port_entry(p as u16 * 7 + 1, false)), PORT_BITS)
                    as usize] = true;
            }
            let set = bits.iter().filter(|b| **b).count() as u32;
            let est = linear_count(set, PORT_BITS);
            let err = (est - f64::from(n)).abs() / f64::from(n);
            assert!(
                err <= 0.15,
                "n={n}: estimate {est:.1} is {:.1}% off",
                err * 100.0
            );
        }
    }

    #[test]
    fn thresholds_in_bits() {
        for t in [20u32, 25, 50, 100, 300] {
            let k = bits_for_threshold(t, 128);
            assert!(linear_count(k, 128) >= f64::from(t));
            assert!(linear_count(k - 1, 128) < f64::from(t));
        }
    }

    #[test]
    fn distinct_is_exact_until_the_set_is_full() {
        assert_eq!(distinct(7, false, 6, 512), 7);
        assert!(distinct(16, true, 200, 512) > 200);
        assert_eq!(
            distinct(16, true, 10, 512),
            16,
            "never below the exact count"
        );
    }

    #[test]
    fn entries() {
        let e = port_entry(443, true);
        assert_eq!(entry_port(e), 443);
        assert_ne!(e & PORT_UDP, 0);
        assert_ne!(port_entry(0, false), 0, "port 0 is not an empty slot");
        assert!(bit_index(u32::MAX, 128) < 128);
        assert!(bit_index(u32::MAX, 64) < 64);
        assert!(bit_index(host_hash(0x7fff), 128) < 128);
    }
}
