//! Distinct destination ports and hosts per source, in bounded memory.
//!
//! Each dimension is an exact set of the first values seen in the window
//! (so counts are exact below the thresholds) plus a bitmap for linear
//! counting beyond it (Whang et al. 1990: n ≈ -m ln(z/m), z = zero bits).
//!
//! | dimension            | exact set            | bitmap   | used by |
//! |----------------------|----------------------|----------|---------|
//! | ports (TCP and UDP)  | 16 ports (`u32` each, tagged by protocol) | 512 bits | `port_scan` |
//! | UDP ports            | the UDP-tagged ports of the same set | 256 bits | `udp_scan` |
//! | hosts (any probe)    | 32 address hashes    | 512 bits | `host_sweep` |
//! | ICMP hosts           | the ICMP-flagged hosts of the same set | 256 bits | `ping_sweep` |
//!
//! The hash functions live here so that the kernel, the agent and the
//! tests agree on them.

/// Slots in the exact port set.
pub const PORT_SET: usize = 16;
/// Slots in the exact host set.
pub const HOST_SET: usize = 32;
/// Bits in the port bitmap.
pub const PORT_BITS: u32 = 512;
/// Bits in the UDP port bitmap.
pub const UDP_BITS: u32 = 256;
/// Bits in the host bitmap.
pub const HOST_BITS: u32 = 512;
/// Bits in the ICMP host bitmap.
pub const ICMP_BITS: u32 = 256;

/// Marks a used slot (0 means empty).
pub const SLOT_USED: u32 = 0x8000_0000;
/// Port entries: this bit marks a UDP port.
pub const PORT_UDP: u32 = 0x0001_0000;
/// Host entries: this bit marks a host that got an ICMP probe.
pub const HOST_ICMP: u32 = 0x0000_0001;

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

/// Hash of a destination address (IPv4-mapped or IPv6, network order).
#[inline(always)]
pub const fn addr_hash(a: &[u8; 16]) -> u32 {
    let w0 = u32::from_be_bytes([a[0], a[1], a[2], a[3]]);
    let w1 = u32::from_be_bytes([a[4], a[5], a[6], a[7]]);
    let w2 = u32::from_be_bytes([a[8], a[9], a[10], a[11]]);
    let w3 = u32::from_be_bytes([a[12], a[13], a[14], a[15]]);
    mix32(mix32(mix32(mix32(w0) ^ w1) ^ w2) ^ w3)
}

/// The hash state after the first twelve bytes of an IPv4-mapped address
/// (`::ffff:`): [`addr_hash_v4`] starts from it.
const V4_MAPPED_PREFIX: u32 = mix32(mix32(mix32(0)) ^ 0x0000_ffff);

/// [`addr_hash`] of the IPv4-mapped form of `a`, with one mixing round
/// instead of four (the prefix is constant).
#[inline(always)]
pub const fn addr_hash_v4(a: [u8; 4]) -> u32 {
    mix32(V4_MAPPED_PREFIX ^ u32::from_be_bytes(a))
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

/// The exact-set entry of a host hash (bit 0 is left for the ICMP flag).
#[inline(always)]
pub const fn host_entry(hash: u32) -> u32 {
    SLOT_USED | (hash & 0x7fff_fffe)
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
    fn v4_hash_matches_the_mapped_address_hash() {
        for a in [[0u8; 4], [198, 18, 0, 2], [255; 4], [10, 1, 2, 3]] {
            let mut mapped = [0u8; 16];
            mapped[10] = 0xff;
            mapped[11] = 0xff;
            mapped[12..].copy_from_slice(&a);
            assert_eq!(addr_hash_v4(a), addr_hash(&mapped), "{a:?}");
        }
    }

    #[test]
    fn linear_counting_accuracy() {
        // Simulate inserting n distinct hashed ports into the 512-bit map.
        for n in [16u32, 50, 100, 250, 500, 750, 1000] {
            let mut bits = [false; PORT_BITS as usize];
            for p in 0..n {
                bits[bit_index(port_hash(port_entry(p as u16 * 7 + 1, false)), PORT_BITS)
                    as usize] = true;
            }
            let set = bits.iter().filter(|b| **b).count() as u32;
            let est = linear_count(set, PORT_BITS);
            let err = (est - f64::from(n)).abs() / f64::from(n);
            assert!(
                err <= 0.10,
                "n={n}: estimate {est:.1} is {:.1}% off",
                err * 100.0
            );
        }
    }

    #[test]
    fn thresholds_in_bits() {
        for t in [20u32, 25, 50, 100, 1000] {
            let k = bits_for_threshold(t, 512);
            assert!(linear_count(k, 512) >= f64::from(t));
            assert!(linear_count(k - 1, 512) < f64::from(t));
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
        assert_eq!(host_entry(u32::MAX) & HOST_ICMP, 0);
        assert_ne!(host_entry(0), 0);
        assert!(bit_index(u32::MAX, 512) < 512);
        assert!(bit_index(u32::MAX, 256) < 256);
    }
}
