//! Where a source's state lives, the same in the kernel and the agent.
//!
//! **Admission.** A source's first probes in a window wait in the
//! `ADMISSION` table, a direct-mapped array of [`AdmitSlot`]s indexed by a
//! hash of the source key: a tag, the window start, and the probes seen so
//! far (at most [`ADMIT_RECORDS`], packed into one word each by
//! [`record`]). A slot is two parts: the head and the first probe, which
//! every new source reads and writes (16 bytes), and the second probe and
//! the repeats ([`AdmitMore`], in `ADMISSION_MORE`), which only a source
//! that comes back touches; the head says whether that part is its
//! source's ([`HEAD_MORE`]), so a new source never clears it. The probe that makes [`DetectConfig::admit_after`](crate::DetectConfig)
//! gives the source a slot in the `SOURCES` table, seeded with the waiting
//! probes, so counts stay exact. A source that sends fewer probes in a
//! window never takes a `SOURCES` slot: a flood of one-probe sources costs
//! one admission-slot write per packet and cannot evict a tracked scanner.
//! A probe of another source hashing to the same admission slot overwrites
//! a waiting source (counted: `AdmissionOverwritten`); its next probes
//! start over. The waiting probes are what an overwrite loses. A SYN that
//! repeats a waiting SYN (same port and host) is only counted in the slot
//! ([`AdmitMore::repeats`]); it admits its source at the SYN rate
//! ([`REPEATS_ADMIT`]), and admission seeds the repeats too.
//!
//! **Tracking.** `SOURCES` is an array of [`SourceStats`](crate::SourceStats)
//! slots (the key is in the slot); a source may live in one of the two
//! slots of its bucket ([`slots`]), an admitted source takes a free one or
//! the one seen least recently (counted: `SourcesEvicted`). The tag index
//! (`SOURCE_TAGS`, [`SOURCE_TAGS_MAP`]) holds a 32-bit tag per slot, both
//! of a bucket in one word: a probe reads `SOURCES` only when a tag
//! matches, so a source that is not tracked costs one read of a table
//! 64 times smaller.

/// Name of the admission table (`Array<AdmitSlot>`).
pub const ADMISSION_MAP: &str = "ADMISSION";
/// Slots of the admission table by default (`[detection] admission_slots`,
/// a power of two set at load time): 65,536 slots, 1 MiB of heads and
/// first probes that every new source touches, and 1 MiB of the rest
/// ([`AdmitMore`]) that only returning sources touch. A larger table
/// keeps a waiting source's probes longer when many sources come and go
/// (under a flood: the spoofed scanners of the lab's flood test, one probe
/// every 38,400 flood frames, are admitted with 65,536 slots and not with
/// 8,192); a smaller one makes every new source's packet cheaper, since
/// its slot's line is more often in cache (docs/benchmarks.md "A new
/// source").
pub const DEFAULT_ADMISSION_SLOTS: u32 = 65_536;
/// Fewest admission slots.
pub const MIN_ADMISSION_SLOTS: u32 = 1_024;
/// Most admission slots (16 MiB of each part).
pub const MAX_ADMISSION_SLOTS: u32 = 1 << 20;

/// Whether `slots` is an admission table size the kernel accepts: a power
/// of two in [`MIN_ADMISSION_SLOTS`]..=[`MAX_ADMISSION_SLOTS`].
pub const fn valid_admission_slots(slots: u32) -> bool {
    slots.is_power_of_two() && slots >= MIN_ADMISSION_SLOTS && slots <= MAX_ADMISSION_SLOTS
}
/// Probes an admission slot keeps (admission needs at most one more).
pub const ADMIT_RECORDS: usize = 2;
/// Most probes in a window before admission (`admit_after` is 1 to this).
pub const MAX_ADMIT_AFTER: u32 = ADMIT_RECORDS as u32 + 1;

/// One admission slot, the part every new source reads and writes: 16
/// bytes (four to a cache line). The rest of the slot, which only a source
/// that comes back touches, is its [`AdmitMore`] of the same index in
/// [`ADMISSION_MORE_MAP`]: a random-source flood, whose every packet is a
/// new source, reads and writes lines of a table half the size (1 MiB at
/// the default 65,536 slots), more of it in cache (docs/benchmarks.md "A
/// new source").
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdmitSlot {
    /// The source's tag (high 32 bits, never 0), whether its [`AdmitMore`]
    /// is in use ([`HEAD_MORE`]) and the window's start in
    /// [`TIME_UNIT_SHIFT`] units (low 31 bits); 0: free.
    pub head: u64,
    /// The first probe seen ([`record`]).
    pub first: u64,
}

crate::layout::assert_layout!(AdmitSlot { head, first }, size 16, align 8);

/// The part of an admission slot a source that comes back uses: its second
/// waiting probe and its repeats. Valid only while its slot's head has
/// [`HEAD_MORE`] set: a source claiming the slot writes a head without it,
/// so it never reads (nor clears) what a source before it left here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdmitMore {
    /// The second probe seen (0: none yet).
    pub second: u64,
    /// SYNs repeating a waiting SYN's destination ([`is_repeat`]): how many
    /// in the window, and in the latest rate bucket ([`repeats`]).
    pub repeats: u64,
}

crate::layout::assert_layout!(AdmitMore { second, repeats }, size 16, align 8);

/// Name of the rest of the admission table (`Array<AdmitMore>`, as many
/// slots as [`ADMISSION_MAP`]).
pub const ADMISSION_MORE_MAP: &str = "ADMISSION_MORE";

/// The head bit that says the slot's [`AdmitMore`] belongs to its source.
pub const HEAD_MORE: u64 = 1 << 31;

/// SYNs of one ~1.07 s rate bucket (2^30 ns; the `syn_flood_source`
/// bucket) that admit a source repeating a waiting SYN's destination,
/// when the `syn_flood_source` threshold is higher (else that threshold,
/// less the probes that may wait besides).
///
/// A source that sends the same SYN over and over (one port of one host)
/// can cross no threshold but `syn_flood_source`, so its repeats do not
/// count toward `admit_after`: they are counted in its admission slot and
/// admit it only at this rate. A random-source SYN flood whose sources
/// repeat (spoofed addresses of a small prefix) then stays in the
/// admission table instead of filling the source table with one-port
/// sources. Every repeat is seeded into the source's counts when it is
/// admitted.
pub const REPEATS_ADMIT: u32 = 256;

/// The repeats that admit a source ([`REPEATS_ADMIT`]) for a
/// `syn_flood_source` threshold of `syn_rate` SYNs a bucket: low enough
/// that the threshold is never crossed before admission (the probes
/// waiting besides and the admitting one are counted too).
#[inline(always)]
pub const fn repeats_to_admit(syn_rate: u32) -> u32 {
    let cap = if syn_rate < REPEATS_ADMIT {
        syn_rate
    } else {
        REPEATS_ADMIT
    };
    let n = cap.saturating_sub(MAX_ADMIT_AFTER);
    if n == 0 { 1 } else { n }
}

/// Whether `probe` (a [`record`]) repeats `waiting` (a record or 0):
/// the same kind, port and host.
#[inline(always)]
pub const fn is_repeat(probe: u64, waiting: u64) -> bool {
    waiting != 0 && (probe ^ waiting) >> RECORD_HOST_SHIFT == 0
}

/// The rate bucket (low 16 bits of kernel-clock ns >> 30) of a time.
#[inline(always)]
pub const fn rate_bucket(now_ns: u64) -> u16 {
    (now_ns >> 30) as u16
}

/// An admission slot's repeats word: the window's count (low 32 bits), the
/// count in the latest rate bucket (bits 32..48) and that bucket (48..64).
pub mod repeats {
    /// Repeats in the window.
    #[inline(always)]
    pub const fn total(w: u64) -> u32 {
        w as u32
    }

    /// Repeats in rate bucket `bucket` (0 for an older one).
    #[inline(always)]
    pub const fn in_bucket(w: u64, bucket: u16) -> u32 {
        if (w >> 48) as u16 == bucket {
            (w >> 32) as u16 as u32
        } else {
            0
        }
    }

    /// The word after one more repeat in rate bucket `bucket`.
    #[inline(always)]
    pub const fn add(w: u64, bucket: u16) -> u64 {
        let n = in_bucket(w, bucket) as u64 + 1;
        let n = if n > 0xffff { 0xffff } else { n };
        ((bucket as u64) << 48) | (n << 32) | (total(w) as u64 + 1) & 0xffff_ffff
    }
}

/// How recent another source's waiting probes must be for a new source's
/// first probe to skip its first contact (2^33 ns, about 8.6 s, under the
/// default no-answer timeout): a slot taken that recently means sources
/// come faster than the table turns over (a random-source flood). A slot
/// whose source started waiting longer ago, though still in its window,
/// is no sign of a flood, and the new source's first contact is recorded:
/// on a host many benign sources reach, one SYN each, the table's slots
/// stay in their windows for minutes, and with the window as the test
/// most first probes (a distributed scan's only probes among them) would
/// go unrecorded.
pub const CONTENDED_NS: u64 = 1 << 33;

/// Times in admission slots count units of 2^20 ns (about 1.05 ms).
pub const TIME_UNIT_SHIFT: u32 = 20;

/// Mixes a source key into 64 bits (splitmix64's finaliser over both words).
#[inline(always)]
pub const fn key_hash(key: [u64; 2]) -> u64 {
    let mut x = key[0] ^ key[1].wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The two `SOURCES` slots a source may live in, for a table of `n` slots:
/// the two of one bucket (slots 2i and 2i + 1; an odd last slot is never
/// used), whose tags are two adjacent bytes of `SOURCE_TAGS` ([`bucket`],
/// [`tag_place`]).
#[inline(always)]
pub const fn slots(hash: u64, n: u32) -> (u32, u32) {
    let b = bucket(hash, n);
    (2 * b, 2 * b + 1)
}

/// Name of the tag index (`Array<u64>`): one byte per `SOURCES` slot, the
/// [`index_tag`] of its source (0: none), eight to a word (slot s is byte
/// s % 8 of word s / 8, so a bucket's two tags are one 16-bit half-word:
/// [`tag_place`]). A probe of a source no tag names is not tracked, found
/// without touching `SOURCES`: the index is 1 byte a slot (256 KiB at the
/// default size) where `SOURCES` is 256, small enough that a new source's
/// byte is mostly in cache (4 bytes a slot, 1 MiB, before). A source that
/// is not tracked matches one of its bucket's two tags by chance with
/// probability about 2/255, and then reads that slot's key in `SOURCES`.
pub const SOURCE_TAGS_MAP: &str = "SOURCE_TAGS";

/// A source's tag in the tag index: the top byte of its [`source_tag`]
/// (never 0).
#[inline(always)]
pub const fn index_tag(tag: u32) -> u8 {
    let t = (tag >> 24) as u8;
    if t == 0 { 1 } else { t }
}

/// Where a bucket's two tags are in the tag index: the word, and the
/// 16-bit half-word within it (the even slot's tag its low byte, the odd
/// one's its high byte).
#[inline(always)]
pub const fn tag_place(bucket: u32) -> (u32, u32) {
    (bucket / 4, bucket % 4)
}

/// Words of the tag index of a table of `n` slots.
pub const fn tag_words(n: u32) -> u32 {
    buckets(n).div_ceil(4)
}

/// The bucket of a source, for a table of `n` slots (`n / 2` buckets):
/// the low 32 bits of its hash (the tag is the high 32) scaled to the
/// buckets by a multiply and a shift (Lemire's range reduction), not a
/// 64-bit division (the table's size is set at load time), whose latency
/// sits before the read of the tag word: 10% of the program's `perf`
/// samples under the random-source flood landed on it (the flood's rate
/// did not move beyond the runs' noise without it).
#[inline(always)]
pub const fn bucket(hash: u64, n: u32) -> u32 {
    ((hash as u32 as u64 * buckets(n) as u64) >> 32) as u32
}

/// Buckets (tag-index words) of a table of `n` slots.
pub const fn buckets(n: u32) -> u32 {
    if n < 2 { 1 } else { n / 2 }
}

/// A source's tag in the tag index (never 0).
#[inline(always)]
pub const fn source_tag(hash: u64) -> u32 {
    (hash >> 32) as u32 | 1
}

/// The admission slot and tag of a source, in a table of `slots` slots (a
/// power of two).
#[inline(always)]
pub const fn admission(hash: u64, slots: u32) -> (u32, u32) {
    (
        ((hash >> 8) as u32) & slots.wrapping_sub(1),
        (hash >> 32) as u32 | 1,
    )
}

/// Bits of a head's window start (in units: about 26 days).
const HEAD_TIME_BITS: u32 = 31;

/// An admission slot's head: the tag and the window start ([`HEAD_MORE`]
/// clear).
#[inline(always)]
pub const fn head(tag: u32, start_ns: u64) -> u64 {
    ((tag as u64) << 32) | ((start_ns >> TIME_UNIT_SHIFT) & ((1 << HEAD_TIME_BITS) - 1))
}

/// Whether a head's source uses its [`AdmitMore`].
#[inline(always)]
pub const fn head_more(head: u64) -> bool {
    head & HEAD_MORE != 0
}

/// The tag of a head.
#[inline(always)]
pub const fn head_tag(head: u64) -> u32 {
    (head >> 32) as u32
}

/// The window start of a head, given the time now (both kernel-clock ns; the
/// stored start is the low 32 bits of its units).
#[inline(always)]
pub const fn head_start(head: u64, now_ns: u64) -> u64 {
    unwrap_units(head & ((1 << HEAD_TIME_BITS) - 1), HEAD_TIME_BITS, now_ns)
}

/// Whether the head `head` is a source's that started waiting less than
/// `window_ns` before `now_ns` (a free slot, 0, is not; nor one whose
/// window is over).
#[inline(always)]
pub const fn head_in_window(head: u64, now_ns: u64, window_ns: u64) -> bool {
    head != 0 && now_ns.wrapping_sub(head_start(head, now_ns)) < window_ns
}

/// Whether the head `head` holds the source of tag `tag`, waiting in its
/// window ([`head_in_window`]).
#[inline(always)]
pub const fn head_holds(head: u64, tag: u32, now_ns: u64, window_ns: u64) -> bool {
    head_tag(head) == tag && head_in_window(head, now_ns, window_ns)
}

/// The kernel-clock time of `low` (the low `bits` bits of a time in units), the
/// latest such time not after `now_ns`.
#[inline(always)]
const fn unwrap_units(low: u64, bits: u32, now_ns: u64) -> u64 {
    let now = now_ns >> TIME_UNIT_SHIFT;
    let mask = (1u64 << bits) - 1;
    let back = now.wrapping_sub(low) & mask;
    now.saturating_sub(back) << TIME_UNIT_SHIFT
}

/// Bits of a record's time (in units: about 39 hours, more than the
/// longest window, 24 hours).
const RECORD_TIME_BITS: u32 = 27;
/// Where a record's host fingerprint starts: above its time and
/// [`RECORD_CONTACT_TAKEN`].
const RECORD_HOST_SHIFT: u32 = 28;

/// The longest window (`[detection] window_seconds`): a record's time
/// holds it.
pub const MAX_WINDOW_SECONDS: u64 = 86_400;

const _: () =
    assert!((MAX_WINDOW_SECONDS * 1_000_000_000) >> TIME_UNIT_SHIFT < 1 << RECORD_TIME_BITS);

/// The record bit that says a waiting SYN's first contact left the slot.
///
/// **A first SYN's contact waits in its admission slot.** The first SYN
/// of a source that is not tracked is the reply-aware detector's first
/// contact, but it is not written to the contact table: its record in the
/// admission slot (port, host fingerprint, time) stands for it, so a new
/// source's packet touches one line fewer (docs/benchmarks.md "A new
/// source"). The contact leaves the slot once, whichever comes first, by
/// setting this bit with a compare-and-swap:
/// - this host's answer to it (SYN-ACK, RST, ICMP unreachable): the
///   egress program finds no contact in the contact table, finds the SYN
///   waiting in the remote's admission slot ([`waiting_contact`]), writes
///   the contact to the contact table already resolved (what the agent's
///   readers, the distributed-scan view among them, see) and steps the
///   remote's walk;
/// - the source's next probe of the same host (by fingerprint: its local
///   address is then known) that does not repeat it (another port),
///   answered or not yet: XDP writes the contact to the contact table,
///   pending, with the first SYN's time, so that the no-answer sweep
///   counts it if no answer comes. A repeat of the SYN leaves it waiting
///   (one destination can never cross the walk): a spoofed flood source
///   repeating its SYN writes nothing to the contact table.
///
/// A first SYN never answered whose source sends nothing more to that
/// host (or whose slot another source takes first) leaves no contact: a
/// source with one probe can never cross the walk, and the
/// distributed-scan view loses such a source's unanswered probe (an
/// answered one is written at its answer).
pub const RECORD_CONTACT_TAKEN: u64 = 1 << RECORD_TIME_BITS;

/// Whether a slot's first record `first` is a SYN whose first contact
/// still waits in the slot ([`RECORD_CONTACT_TAKEN`] clear), to a host of
/// fingerprint `host`; its port, if so.
#[inline(always)]
pub const fn waiting_contact(first: u64, host: u16) -> Option<u16> {
    match (record_kind(first), record_port(first)) {
        (Some(kind), Some(port))
            if kind == crate::ProbeKind::Syn as u8
                && first & RECORD_CONTACT_TAKEN == 0
                && record_host(first) == host =>
        {
            Some(port)
        }
        _ => None,
    }
}

/// A waiting probe in one word: kind + 1 (3 bits), whether it has a
/// destination port (1), the port (16), host fingerprint (16),
/// [`RECORD_CONTACT_TAKEN`] (1) and time in units (27 bits).
#[inline(always)]
pub const fn record(kind: u8, port: Option<u16>, host: u16, now_ns: u64) -> u64 {
    let port = match port {
        Some(p) => (1 << 16) | p as u64,
        None => 0,
    };
    ((kind as u64 + 1) << 61)
        | (port << 44)
        | ((host as u64) << RECORD_HOST_SHIFT)
        | ((now_ns >> TIME_UNIT_SHIFT) & ((1 << RECORD_TIME_BITS) - 1))
}

/// The probe kind of a record ([`crate::ProbeKind`] as `u8`); `None` for an empty one.
#[inline(always)]
pub const fn record_kind(r: u64) -> Option<u8> {
    match (r >> 61) as u8 {
        0 => None,
        k => Some(k - 1),
    }
}

/// The destination port of a record, if the probe had one.
#[inline(always)]
pub const fn record_port(r: u64) -> Option<u16> {
    if (r >> 60) & 1 == 1 {
        Some((r >> 44) as u16)
    } else {
        None
    }
}

/// The host fingerprint of a record.
#[inline(always)]
pub const fn record_host(r: u64) -> u16 {
    (r >> RECORD_HOST_SHIFT) as u16
}

/// The kernel-clock time of a record, given the time now.
#[inline(always)]
pub const fn record_time(r: u64, now_ns: u64) -> u64 {
    unwrap_units(r & ((1 << RECORD_TIME_BITS) - 1), RECORD_TIME_BITS, now_ns)
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, without padding, valid for any bit pattern.
unsafe impl aya::Pod for AdmitSlot {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let now = 123_456_789_000_000u64;
        let r = record(4, Some(443), 0x7abc, now);
        assert_eq!(record_kind(r), Some(4));
        assert_eq!(record_port(r), Some(443));
        assert_eq!(record_port(record(2, Some(0), 1, now)), Some(0));
        assert_eq!(record_port(record(3, None, 1, now)), None);
        assert_eq!(record_host(r), 0x7abc);
        let t = record_time(r, now + 5_000_000_000);
        assert!(now - t < 1 << TIME_UNIT_SHIFT, "{now} {t}");
        assert_eq!(record_kind(0), None);
        assert_ne!(record(0, None, 0, 0), 0, "never empty");
        let h = head(0xdead_beef, now);
        assert_eq!(head_tag(h), 0xdead_beef);
        assert!(now - head_start(h, now + 1_000_000) < 1 << TIME_UNIT_SHIFT);
        // The bit that claims the slot's second part changes neither.
        assert!(!head_more(h));
        let more = h | HEAD_MORE;
        assert!(head_more(more));
        assert_eq!(head_tag(more), 0xdead_beef);
        assert_eq!(
            head_start(more, now + 1_000_000),
            head_start(h, now + 1_000_000)
        );
    }

    #[test]
    fn a_head_holds_its_source_within_its_window_only() {
        let (now, window) = (123_456_789_000_000u64, 300_000_000_000u64);
        let h = head(0xdead_beef, now);
        assert!(head_holds(h, 0xdead_beef, now, window));
        assert!(head_holds(
            h | HEAD_MORE,
            0xdead_beef,
            now + 1_000_000,
            window
        ));
        assert!(!head_holds(h, 0xdead_beee, now, window), "another tag");
        assert!(head_in_window(
            h,
            now + window - (2 << TIME_UNIT_SHIFT),
            window
        ));
        assert!(
            !head_in_window(h, now + window + (1 << TIME_UNIT_SHIFT), window),
            "over"
        );
        assert!(!head_in_window(0, now, window), "free");
        assert!(!head_holds(0, 0, now, window), "free, even for tag 0");
    }

    #[test]
    fn slots_are_the_two_of_one_bucket_in_range() {
        for n in [1024u32, 262_144, 1_000_003] {
            for i in 0..1000u64 {
                let h = key_hash([i, i.wrapping_mul(7)]);
                let (a, b) = slots(h, n);
                assert!(a < n && b < n && b == a + 1 && a % 2 == 0);
                assert_eq!(a / 2, bucket(h, n));
                assert!(bucket(h, n) < buckets(n));
                assert_ne!(source_tag(h), 0);
                // One tag for both tables (the XDP program uses either).
                assert_eq!(admission(h, DEFAULT_ADMISSION_SLOTS).1, source_tag(h));
            }
        }
        for n in [
            MIN_ADMISSION_SLOTS,
            DEFAULT_ADMISSION_SLOTS,
            MAX_ADMISSION_SLOTS,
        ] {
            let (slot, tag) = admission(key_hash([1, 2]), n);
            assert!(slot < n && tag & 1 == 1);
        }
    }

    #[test]
    fn tag_index_holds_one_byte_per_slot() {
        for n in [1024u32, 262_144, 1_000_003] {
            let words = tag_words(n);
            assert!(words as usize * 8 >= n as usize, "{n}");
            assert!((words as usize - 1) * 8 < n as usize, "{n}: no spare word");
            for b in [0, 1, 2, 3, 4, buckets(n) - 1] {
                let (word, pair) = tag_place(b);
                assert!(word < words && pair < 4);
                // The bucket's slots 2b and 2b + 1 are bytes 2b % 8 and
                // 2b % 8 + 1 of word 2b / 8.
                assert_eq!(word, 2 * b / 8);
                assert_eq!(2 * pair, 2 * b % 8);
            }
        }
        for i in 0..10_000u64 {
            assert_ne!(index_tag(source_tag(key_hash([i, 0]))), 0);
        }
        assert_eq!(index_tag(0x00ff_ffff), 1);
        assert_eq!(index_tag(0xab00_0001), 0xab);
    }

    #[test]
    fn admission_table_sizes_are_powers_of_two_in_range() {
        assert!(valid_admission_slots(DEFAULT_ADMISSION_SLOTS));
        assert!(valid_admission_slots(MIN_ADMISSION_SLOTS));
        assert!(valid_admission_slots(MAX_ADMISSION_SLOTS));
        for bad in [0, 1, 512, 1_000, 8_191, 12_288, MAX_ADMISSION_SLOTS * 2] {
            assert!(!valid_admission_slots(bad), "{bad}");
        }
    }

    #[test]
    fn sources_spread_evenly_over_the_buckets() {
        // 64 sources a bucket on average, from consecutive IPv4 addresses:
        // every bucket used, none more than three times the mean (the
        // division this replaced spread them no better).
        for n in [2048u32, 2050, 262_144] {
            let b = buckets(n) as usize;
            let mut count = vec![0u32; b];
            for i in 0..(64 * b) as u64 {
                let key = [0, (0xffff_c612_0000u64 | i).to_be()];
                count[bucket(key_hash(key), n) as usize] += 1;
            }
            let (min, max) = (count.iter().min(), count.iter().max());
            assert!(min > Some(&0) && max < Some(&192), "{n}: {min:?} {max:?}");
        }
    }

    #[test]
    fn repeats_are_the_same_destination_at_any_time() {
        let now = 987_654_321_000_000u64;
        let syn = record(0, Some(80), 0x1234, now);
        assert!(is_repeat(
            record(0, Some(80), 0x1234, now + 9_000_000_000),
            syn
        ));
        assert!(!is_repeat(record(0, Some(81), 0x1234, now), syn));
        assert!(!is_repeat(record(0, Some(80), 0x1235, now), syn));
        assert!(
            !is_repeat(record(2, Some(80), 0x1234, now), syn),
            "another kind"
        );
        assert!(!is_repeat(record(0, None, 0x1234, now), syn));
        assert!(!is_repeat(syn, 0), "nothing waits");
    }

    #[test]
    fn repeats_count_by_window_and_by_rate_bucket() {
        let mut w = 0u64;
        for _ in 0..5 {
            w = repeats::add(w, 7);
        }
        assert_eq!((repeats::total(w), repeats::in_bucket(w, 7)), (5, 5));
        assert_eq!(repeats::in_bucket(w, 8), 0, "a new bucket starts at 0");
        w = repeats::add(w, 8);
        assert_eq!((repeats::total(w), repeats::in_bucket(w, 8)), (6, 1));
        assert_eq!(repeats::in_bucket(w, 7), 0);
        let full = ((7u64) << 48) | (0xffffu64 << 32) | 3;
        assert_eq!(
            repeats::in_bucket(repeats::add(full, 7), 7),
            0xffff,
            "saturates"
        );
    }

    #[test]
    fn repeats_admit_before_the_syn_rate_threshold() {
        // The default threshold (50,000 SYNs/s: 53,688 a bucket).
        assert_eq!(repeats_to_admit(53_688), REPEATS_ADMIT - MAX_ADMIT_AFTER);
        assert_eq!(repeats_to_admit(u32::MAX), REPEATS_ADMIT - MAX_ADMIT_AFTER);
        // Low thresholds: the repeats, the waiting probes and the admitting
        // one stay below it.
        for rate in 1..300u32 {
            let n = repeats_to_admit(rate);
            assert!(n >= 1);
            assert!(
                rate <= MAX_ADMIT_AFTER || n + MAX_ADMIT_AFTER <= rate,
                "{rate} {n}"
            );
        }
        assert_eq!(rate_bucket(3 << 30), 3);
    }
}
