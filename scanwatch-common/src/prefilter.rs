//! The mitigation prefilter: "could anything blocked or fed cover this
//! source?" answered with one bit test for an IPv4 source and one to three
//! for an IPv6 one, before the exact-match and trie lookups of the drop
//! path. All bits set: *maybe*, and the exact lookups decide as before; a
//! bit clear: no entry covers the source, the lookups are skipped. Results
//! never change, only which packets pay the lookups.
//!
//! **IPv4: one bit per /24** (`PREFILTER_V4`: one 2 MiB map value of
//! [`V4_WORDS`] words, memory-mapped by the agent). A network of length 24
//! or more sets the bit of its /24; a shorter one the bits of every /24 it
//! holds (a /16 is 256 bits, four words; an IPv4 /0 all of them). No hash,
//! no level: the test is one load at a fixed place, so a source costs the
//! same whatever is loaded (the benign ACK with 100,000 entries loaded
//! took 35 ns against 31 with the bitmap tests below, in
//! `--per-packet-only` runs of both builds in turn). An IPv4 source tests
//! *maybe* only when a network covers it or shares its /24.
//!
//! **IPv6: a Bloom-style bitmap** (the `PREFILTER` array of `u64` words,
//! sized at load time, a power of two) holds keys made of a *level* and a
//! fixed prefix of the addresses a blocked or fed network covers:
//!
//! | level | key |
//! |---|---|
//! | 3, 4, 5 | the /48, /32, /16 |
//!
//! (levels 0-2 were IPv4's /24, /16 and /8 before the bitmap above; level
//! bit 0 now says the IPv4 bitmap holds bits). An IPv6 source is tested at
//! each level that holds any key
//! ([`MitigationState::prefilter_levels`](crate::MitigationState)):
//! usually one or two tests. Each test hashes the key (one multiply) to one
//! word and one bit in each half of it (a blocked, partitioned Bloom
//! filter, k = 2): one memory read.
//!
//! A network of prefix length q goes to the finest level no longer than q
//! (one key: the whole level-prefix then tests *maybe*), or is expanded
//! into the keys of the next finer level when that takes at most
//! [`EXPAND_FINER`] keys (a /44 is 16 keys of level /48). Networks
//! wider than the coarsest level are expanded into it: up to 256 keys (a
//! /8 is 256 /16s). IPv6 networks shorter than /8 set the
//! [`V6_WIDE`] flag instead: every IPv6 source then takes the lookups. An
//! IPv6 network shorter than /96 that holds the IPv4-mapped range (::/0,
//! ::/64, ...) covers all of IPv4 too: it sets every bit of the IPv4 bitmap.
//!
//! False positives of the IPv6 bitmap: a source that no entry covers still
//! tests *maybe* when (a) it falls in the level-prefix of a network kept
//! coarser than its length (the rest of the /48 of a /49../128, of the /32
//! of a /33..43, of the /16 of a /17..27), or (b) its key hashes onto set
//! bits. With n keys in W words each word holds j ~ Poisson(n / W) keys,
//! and a level test of a key nothing set answers *maybe* with probability
//! sum_j P(j) (1 - (31/32)^j)^2 ([`Bitmap::false_positive_rate`] computes
//! it exactly from the words). The agent sizes the bitmap at 16 bits per
//! entry of capacity (blocklist plus feeds, rounded up to a power of two):
//! 2^17 words (1 MiB) at the default capacities, where 100,000 keys give
//! 0.13% per level test and the full 327,680 give 0.77%.

/// `MitigationState::prefilter_levels`: the agent keeps the prefilter (when
/// clear, every lookup is made).
pub const ENABLED: u32 = 1 << 31;
/// `MitigationState::prefilter_levels`: an IPv6 network shorter than /8 is
/// blocked or fed: every IPv6 source takes the lookups.
pub const V6_WIDE: u32 = 1 << 6;
/// Levels: bit `1 << level` of `MitigationState::prefilter_levels` says
/// the level holds keys (levels 3 to 5; bit 0 is [`V4`]).
pub const LEVELS: usize = 6;
/// `MitigationState::prefilter_levels`: the IPv4 bitmap holds bits.
pub const V4: u32 = 1;
/// Words of the IPv4 bitmap: one bit per /24 (2^24 bits, 2 MiB).
pub const V4_WORDS: usize = 1 << 18;
/// Prefix length of each level, within its region (IPv4 bits for 0..=2,
/// IPv6 bits for 3..=5).
pub const LEVEL_PREFIX: [u32; LEVELS] = [24, 16, 8, 48, 32, 16];
/// Most keys a network is expanded into at the next finer level (log2).
pub const EXPAND_FINER: u32 = 4;
/// Most keys a network wider than the coarsest level is expanded into (log2).
pub const EXPAND_COARSEST: u32 = 8;
/// Fewest and most words of the bitmap.
pub const MIN_WORDS: u32 = 1 << 10;
pub const MAX_WORDS: u32 = 1 << 21;

/// Words of the bitmap for a blocklist and feeds of these capacities: 16
/// bits per entry, rounded up to a power of two.
pub const fn words_for(blocklist_capacity: u32, feed_capacity: u32) -> u32 {
    let entries = blocklist_capacity as u64 + feed_capacity as u64;
    let words = (entries / 4).next_power_of_two();
    if words < MIN_WORDS as u64 {
        MIN_WORDS
    } else if words > MAX_WORDS as u64 {
        MAX_WORDS
    } else {
        words as u32
    }
}

/// The key of a level-prefix (`bits`: the prefix, right-aligned, at most
/// 48 bits).
#[inline(always)]
pub const fn level_key(level: u32, bits: u64) -> u64 {
    (bits << 3) | level as u64
}

/// Where a key lives: the word index (`mask` is the word count minus one,
/// at most [`MAX_WORDS`] - 1) and its two bits, one in each half of the
/// word. One multiply (Fibonacci hashing of the key folded onto itself);
/// the index from the product's top bits, the bits from the ones below.
#[inline(always)]
pub const fn slot(key: u64, mask: u32) -> (u32, u64) {
    let h = (key ^ (key >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let index = (h >> 43) as u32 & mask;
    let low = (h >> 37) & 31;
    let high = 32 + ((h >> 32) & 31);
    (index, (1u64 << low) | (1u64 << high))
}

/// The four big-endian 32-bit words of an address.
#[inline(always)]
const fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_be_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_be_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_be_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_be_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// One level test: the level holds keys and the key's bits are all set.
#[inline(always)]
fn test(levels: u32, mask: u32, level: u32, bits: u64, word: &impl Fn(u32) -> Option<u64>) -> bool {
    levels & (1 << level) != 0 && {
        let (index, want) = slot(level_key(level, bits), mask);
        word(index).is_none_or(|w| w & want == want)
    }
}

/// The IPv4 bitmap's word index and bit for an IPv4 address (host order
/// of the big-endian bytes): the bit of its /24.
#[inline(always)]
pub const fn v4_slot(v4: u32) -> (u32, u64) {
    (v4 >> 14, 1u64 << ((v4 >> 8) & 63))
}

/// [`may_match`] for an IPv4 source given as its address (host order of
/// the big-endian bytes). `v4_word(i)` reads word `i` of the IPv4 bitmap.
#[inline(always)]
pub fn may_match_v4(v4: u32, levels: u32, v4_word: impl Fn(u32) -> Option<u64>) -> bool {
    if levels & ENABLED == 0 {
        return true;
    }
    let (index, bit) = v4_slot(v4);
    v4_word(index).is_none_or(|w| w & bit != 0)
}

/// Could a blocked or fed network cover `addr` (16 bytes, IPv4-mapped for
/// IPv4)? `false` only when none does. `word(i)` reads word `i` of the
/// IPv6 bitmap, `v4_word(i)` of the IPv4 one (`None`: out of range,
/// answered *maybe*). Without [`ENABLED`], always *maybe*.
#[inline(always)]
pub fn may_match(
    addr: &[u8; 16],
    levels: u32,
    mask: u32,
    word: impl Fn(u32) -> Option<u64>,
    v4_word: impl Fn(u32) -> Option<u64>,
) -> bool {
    if levels & ENABLED == 0 {
        return true;
    }
    let [w0, w1, w2, w3] = words(addr);
    if w0 == 0 && w1 == 0 && w2 == 0xffff {
        return may_match_v4(w3, levels, v4_word);
    }
    let top48 = (u64::from(w0) << 16) | u64::from(w1 >> 16);
    levels & V6_WIDE != 0
        || test(levels, mask, 3, top48, &word)
        || test(levels, mask, 4, top48 >> 16, &word)
        || test(levels, mask, 5, top48 >> 32, &word)
}

#[cfg(not(target_arch = "bpf"))]
pub use host::{Bitmap, Slots, network_keys, v4_range, v4_words};

#[cfg(not(target_arch = "bpf"))]
mod host {
    use super::{
        ENABLED, EXPAND_COARSEST, EXPAND_FINER, LEVEL_PREFIX, V4, V4_WORDS, V6_WIDE, level_key,
        may_match, slot, words,
    };

    /// The keys of one region's network: `region` 3 (IPv6, its top 48
    /// bits; region 0, IPv4's levels, has the IPv4 bitmap now), `q` its
    /// prefix length within the region (at most the region's width),
    /// `value` its masked, right-aligned bits.
    fn region_keys(region: u32, q: u32, value: u64, out: &mut Vec<(u32, u64)>) -> u32 {
        let width = if region == 0 { 32 } else { 48 };
        let levels = [region, region + 1, region + 2];
        let len = |i: usize| LEVEL_PREFIX[levels[i] as usize];
        let expand = |level: u32, q: u32, out: &mut Vec<(u32, u64)>| {
            let l = LEVEL_PREFIX[level as usize];
            let base = (value >> (width - l)) & !((1u64 << (l - q)) - 1);
            for k in 0..(1u64 << (l - q)) {
                out.push((level, level_key(level, base + k)));
            }
            1 << level
        };
        for i in 0..3 {
            if q >= len(i) {
                if i > 0 && len(i - 1) - q <= EXPAND_FINER {
                    return expand(levels[i - 1], q, out);
                }
                let l = len(i);
                out.push((levels[i], level_key(levels[i], value >> (width - l))));
                return 1 << levels[i];
            }
        }
        if len(2) - q <= EXPAND_COARSEST {
            return expand(levels[2], q, out);
        }
        // Only IPv6 gets here (shorter than /8).
        V6_WIDE
    }

    /// The keys (level, key) of a network given as an LPM key (`prefix` of
    /// 128 bits over `addr`, IPv4-mapped for IPv4) in the IPv6 bitmap,
    /// appended to `out`; returns the level bits (and [`V6_WIDE`], and
    /// [`V4`] when it covers IPv4 addresses: [`v4_range`]) it needs.
    pub fn network_keys(prefix: u32, addr: [u8; 16], out: &mut Vec<(u32, u64)>) -> u32 {
        let prefix = prefix.min(128);
        let masked = masked(prefix, addr);
        if prefix >= 96 && masked >> 32 == 0xffff {
            return V4;
        }
        let [w0, w1, _, _] = words(&masked.to_be_bytes());
        let top48 = (u64::from(w0) << 16) | u64::from(w1 >> 16);
        let levels = region_keys(3, prefix.min(48), top48, out);
        if v4_range(prefix, addr).is_some() {
            levels | V4
        } else {
            levels
        }
    }

    /// `addr` masked to its first `prefix` bits.
    fn masked(prefix: u32, addr: [u8; 16]) -> u128 {
        if prefix == 0 {
            0
        } else {
            u128::from_be_bytes(addr) & (u128::MAX << (128 - prefix.min(128)))
        }
    }

    /// The IPv4 /24s a network (an LPM key) covers or shares: the first
    /// and how many (a power of two, aligned to it); `None` for a network
    /// holding no IPv4 address. An IPv6 network shorter than /96 that holds
    /// the IPv4-mapped range (::ffff:0:0/96) covers all 2^24.
    pub fn v4_range(prefix: u32, addr: [u8; 16]) -> Option<(u32, u32)> {
        // ::ffff:0:0/96, where IPv4 addresses live.
        const MAPPED: u128 = 0xffff << 32;
        let prefix = prefix.min(128);
        let masked = masked(prefix, addr);
        if prefix >= 96 {
            if masked >> 32 != 0xffff {
                return None;
            }
            let q = prefix - 96;
            let first = (masked as u32) >> 8;
            return Some(if q >= 24 {
                (first, 1)
            } else {
                (first, 1 << (24 - q))
            });
        }
        (prefix == 0 || (MAPPED ^ masked) >> (128 - prefix) == 0).then_some((0, 1 << 24))
    }

    /// The IPv4 bitmap's words and bits for `count` /24s from `first`
    /// (as [`v4_range`] gives them: a power of two, aligned).
    pub fn v4_words(first: u32, count: u32) -> Vec<(u32, u64)> {
        if count >= 64 {
            (first / 64..(first + count) / 64)
                .map(|index| (index, u64::MAX))
                .collect()
        } else {
            let bits = ((1u64 << count) - 1) << (first % 64);
            vec![(first / 64, bits)]
        }
    }

    /// Where a network's bits go: word index and bits in each bitmap, and
    /// the level bits it needs.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct Slots {
        /// In the IPv6 bitmap.
        pub words: Vec<(u32, u64)>,
        /// In the IPv4 bitmap.
        pub v4: Vec<(u32, u64)>,
        pub levels: u32,
    }

    /// Both bitmaps as the agent builds them: their words and the level
    /// bits in use.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Bitmap {
        /// The IPv6 bitmap.
        pub words: Vec<u64>,
        /// The IPv4 bitmap ([`V4_WORDS`] words).
        pub v4: Vec<u64>,
        /// Level bits (and [`V6_WIDE`], [`V4`]) of the networks added.
        pub levels: u32,
    }

    impl Bitmap {
        /// Empty bitmaps: the IPv6 one of `words` words (rounded down to a
        /// power of two, at least 1).
        pub fn new(words: u32) -> Self {
            let n = if words == 0 {
                1
            } else {
                1u32 << (31 - words.leading_zeros())
            };
            Self {
                words: vec![0; n as usize],
                v4: vec![0; V4_WORDS],
                levels: 0,
            }
        }

        /// The word mask the kernel uses for the IPv6 bitmap.
        pub fn mask(&self) -> u32 {
            u32::try_from(self.words.len() - 1).unwrap_or(u32::MAX)
        }

        /// `MitigationState::prefilter_levels` for this bitmap.
        pub const fn state_levels(&self) -> u32 {
            self.levels | ENABLED
        }

        /// Where the bits of a network given as an LPM key go.
        pub fn slots(&self, prefix: u32, addr: [u8; 16]) -> Slots {
            let mut keys = Vec::new();
            let levels = network_keys(prefix, addr, &mut keys);
            let mask = self.mask();
            Slots {
                words: keys.into_iter().map(|(_, key)| slot(key, mask)).collect(),
                v4: v4_range(prefix, addr)
                    .map(|(first, count)| v4_words(first, count))
                    .unwrap_or_default(),
                levels,
            }
        }

        /// Adds a network (an LPM key).
        pub fn add(&mut self, prefix: u32, addr: [u8; 16]) {
            let slots = self.slots(prefix, addr);
            self.levels |= slots.levels;
            for (index, bits) in slots.words {
                self.words[index as usize] |= bits;
            }
            for (index, bits) in slots.v4 {
                self.v4[index as usize] |= bits;
            }
        }

        /// What the kernel answers for `addr`.
        pub fn may_match(&self, addr: &[u8; 16]) -> bool {
            may_match(
                addr,
                self.state_levels(),
                self.mask(),
                |i| self.words.get(i as usize).copied(),
                |i| self.v4.get(i as usize).copied(),
            )
        }

        /// Bits set, in both bitmaps.
        pub fn bits_set(&self) -> u64 {
            self.words
                .iter()
                .chain(&self.v4)
                .map(|w| u64::from(w.count_ones()))
                .sum()
        }

        /// The chance that one level test of an IPv6 key no network added
        /// hashes onto set bits: the mean over words of P(a random bit of
        /// each half is set) = (low / 32) (high / 32), low and high the set
        /// bits of the word's halves.
        pub fn false_positive_rate(&self) -> f64 {
            let sum: f64 = self
                .words
                .iter()
                .map(|w| {
                    let low = f64::from((*w as u32).count_ones());
                    let high = f64::from(((*w >> 32) as u32).count_ones());
                    low * high / 1024.0
                })
                .sum();
            sum / self.words.len() as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        crate::SourceKey::v4(a).addr
    }

    /// A deterministic xorshift generator.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn covers(prefix: u32, net: [u8; 16], addr: [u8; 16]) -> bool {
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix.min(128))
        };
        u128::from_be_bytes(net) & mask == u128::from_be_bytes(addr) & mask
    }

    /// An address of the network (prefix, net) with random host bits.
    fn inside(rng: &mut Rng, prefix: u32, net: [u8; 16]) -> [u8; 16] {
        let host = if prefix >= 128 {
            0
        } else {
            (u128::from(rng.next()) << 64 | u128::from(rng.next())) & (u128::MAX >> prefix)
        };
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix)
        };
        ((u128::from_be_bytes(net) & mask) | host).to_be_bytes()
    }

    #[test]
    fn every_covered_address_tests_maybe() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Every IPv4 length, every IPv6 length, across the mapped range.
        let mut nets: Vec<(u32, [u8; 16])> = Vec::new();
        for q in 0..=32 {
            nets.push((96 + q, v4([198, 18, 200, 77])));
            nets.push((96 + q, v4([10, 1, 2, 3])));
        }
        for p in 0..=128 {
            nets.push((
                p,
                [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0b, 0xad, 0xb0, 0, 0, 9],
            ));
            nets.push((
                p,
                [
                    0x20, 1, 0xd, 0xb8, 0x12, 0x34, 0x56, 0x78, 1, 2, 3, 4, 5, 6, 7, 8,
                ],
            ));
            // Inside the IPv4-mapped range, given as IPv6 (::ffff:198.18.9.9).
            nets.push((p, v4([198, 18, 9, 9])));
            nets.push((p, [0; 16]));
        }
        for (prefix, net) in nets {
            let mut b = Bitmap::new(1024);
            b.add(prefix, net);
            for _ in 0..200 {
                let a = inside(&mut rng, prefix, net);
                assert!(covers(prefix, net, a));
                assert!(b.may_match(&a), "{prefix} {net:?}: {a:?} tests no");
            }
            // IPv4 addresses inside a network holding the mapped range.
            if prefix < 96 && covers(prefix, net, v4([0, 0, 0, 0])) {
                let a = v4((rng.next() as u32).to_be_bytes());
                assert!(b.may_match(&a), "{prefix} {net:?}: IPv4 {a:?}");
            }
        }
    }

    #[test]
    fn uncovered_addresses_mostly_test_no() {
        let mut rng = Rng(7);
        let mut b = Bitmap::new(words_for(65_536, 262_144));
        assert_eq!(b.words.len(), 1 << 17);
        for _ in 0..100_000 {
            // Blocks within 10.0.0.0/8, hosts and /24s: the IPv4 bitmap.
            let r = rng.next();
            let a = v4([10, (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8]);
            b.add(if r & 1 == 0 { 128 } else { 120 }, a);
        }
        assert_eq!(b.levels, V4);
        assert_eq!(b.false_positive_rate(), 0.0, "the IPv6 bitmap is empty");
        // Exact for IPv4: no source outside 10.0.0.0/8 shares a /24.
        for _ in 0..100_000 {
            let r = rng.next() as u32;
            let a = v4([11 + (r % 200) as u8, (r >> 8) as u8, (r >> 16) as u8, 1]);
            assert!(!b.may_match(&a), "{a:?}");
        }
        // Nothing IPv6 was added: IPv6 sources test no.
        assert!(!b.may_match(&[0xfd; 16]));
        // IPv6 blocks within 2001:db8::/32, /64s and /128s: hashed.
        for _ in 0..100_000 {
            let r = rng.next();
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            a[4..12].copy_from_slice(&r.to_be_bytes());
            b.add(if r & 1 == 0 { 128 } else { 64 }, a);
        }
        assert_eq!(b.levels & !V4, 1 << 3);
        let fp = b.false_positive_rate();
        assert!(fp > 0.0 && fp < 0.002, "{fp}");
        let mut hits = 0;
        for _ in 0..100_000 {
            let r = rng.next();
            let mut a = [0u8; 16];
            a[..2].copy_from_slice(&[0x2a, 0x02]);
            a[2..10].copy_from_slice(&r.to_be_bytes());
            hits += u32::from(b.may_match(&a));
        }
        // Measured rate near the computed one.
        let measured = f64::from(hits) / 100_000.0;
        assert!(measured < fp * 2.0 + 0.001, "{measured} against {fp}");
    }

    #[test]
    fn ipv4_networks_set_the_bits_of_their_24s() {
        let a = v4([198, 18, 0, 0]);
        let first = (198 << 16) | (18 << 8);
        assert_eq!(v4_range(128, a), Some((first, 1)));
        assert_eq!(v4_range(96 + 25, a), Some((first, 1)));
        assert_eq!(v4_range(96 + 24, a), Some((first, 1)));
        assert_eq!(v4_range(96 + 20, a), Some((first, 16)));
        assert_eq!(v4_range(96 + 16, a), Some((first, 256)));
        assert_eq!(v4_range(96 + 8, a), Some((198 << 16, 1 << 16)));
        assert_eq!(v4_range(96, a), Some((0, 1 << 24)));
        // A /20: 16 bits of one word; a /16: four whole words.
        assert_eq!(
            v4_words(first, 16),
            vec![(first / 64, 0xffff << (first % 64))]
        );
        assert_eq!(
            v4_words(first, 256),
            (first / 64..first / 64 + 4)
                .map(|i| (i, u64::MAX))
                .collect::<Vec<_>>()
        );
        assert_eq!(v4_words(0, 1 << 24).len(), V4_WORDS);
        // The kernel's slot of an address is the bit its /24's range sets.
        for addr in [
            [198, 18, 0, 77],
            [0, 0, 0, 0],
            [255, 255, 255, 255],
            [10, 1, 2, 3],
        ] {
            let v = u32::from_be_bytes(addr);
            let (first, count) = v4_range(128, v4(addr)).expect("IPv4");
            assert_eq!(v4_words(first, count), vec![v4_slot(v)]);
        }
        // IPv6 networks holding no IPv4 address set none.
        assert_eq!(
            v4_range(64, [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        let mut beside = [0u8; 16];
        beside[10] = 0xff;
        beside[11] = 0xfe;
        assert_eq!(v4_range(96, beside), None);
        assert_eq!(v4_range(95, beside), Some((0, 1 << 24)));
        assert_eq!(v4_range(0, [0; 16]), Some((0, 1 << 24)));
    }

    #[test]
    fn levels_and_expansion() {
        let keys = |prefix: u32, addr: [u8; 16]| {
            let mut out = Vec::new();
            let levels = network_keys(prefix, addr, &mut out);
            (levels, out.len())
        };
        // IPv4 networks: the IPv4 bitmap, no key.
        let a = v4([198, 18, 0, 0]);
        for q in [0, 4, 8, 12, 16, 20, 24, 32] {
            assert_eq!(keys(96 + q, a), (V4, 0));
        }
        let b = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(keys(128, b), (8, 1));
        assert_eq!(keys(64, b), (8, 1));
        assert_eq!(keys(44, b), (8, 16));
        assert_eq!(keys(33, b), (16, 1));
        assert_eq!(keys(28, b), (16, 16));
        assert_eq!(keys(16, b), (32, 1));
        assert_eq!(keys(8, b), (32, 256));
        assert_eq!(keys(7, b), (V6_WIDE, 0));
        // ::/0 and ::/64 hold the IPv4-mapped range: all of IPv4 as well.
        assert_eq!(keys(0, [0; 16]), (V6_WIDE | V4, 0));
        assert_eq!(keys(64, [0; 16]), (8 | V4, 1));
        // ::ffff:0:0/96 is IPv4 /0.
        assert_eq!(keys(96, v4([0; 4])), (V4, 0));
        // ::fffe:0:0/96 is beside the mapped range; ::fffe:0:0/95 holds it.
        let mut beside = [0u8; 16];
        beside[10] = 0xff;
        beside[11] = 0xfe;
        assert_eq!(keys(96, beside), (8, 1));
        assert_eq!(keys(95, beside), (8 | V4, 1));
        assert_eq!(words_for(65_536, 262_144), 1 << 17);
        assert_eq!(words_for(16, 16), MIN_WORDS);
        assert_eq!(words_for(u32::MAX, u32::MAX), MAX_WORDS);
    }

    #[test]
    fn slots_use_a_bit_of_each_half() {
        for key in 0..10_000u64 {
            let (index, bits) = slot(level_key(1, key), 1023);
            assert!(index < 1024);
            assert_eq!((bits as u32).count_ones(), 1);
            assert_eq!(((bits >> 32) as u32).count_ones(), 1);
        }
        // The largest bitmap's indices reach its top word.
        let top = (0..100_000u64)
            .map(|k| slot(level_key(0, k), MAX_WORDS - 1).0)
            .max();
        assert!(top > Some(MAX_WORDS - 100));
    }

    #[test]
    fn disabled_means_maybe() {
        let zero = |_| Some(0);
        assert!(may_match(&[0; 16], 0, 0, zero, zero));
        assert!(!may_match(&[0; 16], ENABLED, 0, zero, zero));
        assert!(may_match(&[0; 16], ENABLED | V6_WIDE, 0, zero, zero));
        assert!(may_match(&v4([1, 2, 3, 4]), ENABLED | V4, 0, zero, |_| {
            None
        }));
        assert!(!may_match(
            &v4([1, 2, 3, 4]),
            ENABLED | V4,
            0,
            |_| None,
            zero
        ));
        assert!(may_match(&v4([1, 2, 3, 4]), 0, 0, zero, zero));
    }
}
