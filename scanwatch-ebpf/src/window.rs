//! Per-source window state in a `SOURCES` slot: counts, exact sets,
//! bitmaps and threshold crossings. Several CPUs can update one source at
//! once: counters use atomic adds (the set and bitmap counts of a probe in
//! one 64-bit add), set slots are claimed with 64-bit compare-and-swap and
//! bitmap bits with 64-bit fetch-or (the generic BPF cpu has no 32-bit
//! fetch operations; kernel 5.12+).

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_or, atomic_xadd};

use scanwatch_common::{
    DetectConfig, ProbeKind, SourceStats,
    classify::PROBE_KINDS,
    fingerprint::{settled, tally_of},
    maps::{SET_STRIDE, host_word, lens, port_word},
    sketch::{
        HOST_BITS, HOST_ICMP, HOST_SET, ICMP_BITS, PORT_BITS, PORT_SET, PORT_UDP, UDP_BITS,
        bit_index, host_hash, port_entry, port_hash,
    },
    tracking::{self, rate_bucket, record_kind, record_time, repeats},
    trigger,
};

/// Set in [`record`]'s result when the probe started a new window (the
/// caller refreshes what it keeps per window).
pub const NEW_WINDOW: u32 = 1 << 31;

/// A load-time setting, read with a volatile load (LLVM would otherwise
/// fold the global's initial value).
#[inline(always)]
pub fn setting<T: Copy>(field: *const T) -> T {
    // SAFETY: `field` points into the settings global.
    unsafe { core::ptr::read_volatile(field) }
}

/// Whether the window that started at `start` is over at `now`: a probe
/// then starts a new one (a start stamped later by another CPU is current).
#[inline(always)]
pub fn expired(start: u64, now: u64, window_ns: u64) -> bool {
    now.wrapping_sub(start) >= window_ns && now > start
}

/// One probe as the window code records it (passed by pointer to
/// [`scanwatch_window_record`]: no padding, every byte initialised).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Seen {
    /// When (kernel-clock ns).
    pub time: u64,
    /// Destination port entry (`sketch::port_entry`) of TCP/UDP probes, else 0.
    pub port: u32,
    /// Destination host fingerprint (`sketch::host_fingerprint`).
    pub host: u16,
    /// [`ProbeKind`] as `u8`.
    pub kind: u8,
    /// Explicit padding (zero).
    pub pad: u8,
}

const _: () = assert!(core::mem::size_of::<Seen>() == 16);

/// 32-bit atomic add; returns the value read right after it (at least this
/// CPU's sum: the generic BPF cpu cannot return the old value of an add).
#[inline(always)]
unsafe fn add32(p: *mut u32, v: u32) -> u32 {
    unsafe {
        atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(p, v);
        core::ptr::read_volatile(p)
    }
}

/// Sets bit `index` of `bits` (a `[u64; words]`); returns whether it was
/// newly set. A bit already set costs a read: the fetch-or (a
/// compare-and-swap loop in the x86 JIT) only runs for a new bit.
#[inline(always)]
unsafe fn set_bit(bits: *mut u64, words: u32, index: u32) -> bool {
    let word = index / 64;
    if word >= words {
        return false;
    }
    let mask = 1u64 << (index % 64);
    let word_p = unsafe { bits.add(word as usize) };
    if unsafe { core::ptr::read_volatile(word_p) } & mask != 0 {
        return false;
    }
    let old = unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(word_p, mask) };
    old & mask == 0
}

/// The first word of the slot's interleaved exact sets.
#[inline(always)]
pub fn sets(entry: *mut SourceStats) -> *mut u64 {
    // SAFETY: only the address of a field is taken.
    unsafe { (&raw mut (*entry).sets).cast::<u64>() }
}

/// Outcome of an exact-set insert.
enum Slot {
    /// Newly claimed slot.
    New(usize),
    /// Already present at this slot.
    Found(usize),
    /// The set is full and the value is not in it.
    Full,
}

/// Finds or claims `entry` (nonzero) in a set of `slots` entries of `LANE`
/// bits (32 or 16) stored `64 / LANE` per u64 word, the words
/// [`SET_STRIDE`] apart (the port and host sets are interleaved),
/// compared under `mask`. A slot is claimed with a 64-bit compare-and-swap
/// of its word; a lost race re-reads the word once.
#[inline(always)]
unsafe fn set_insert<const LANE: u32>(set: *mut u64, slots: usize, entry: u64, mask: u64) -> Slot {
    let per_word = (64 / LANE) as usize;
    let lane_mask = if LANE == 64 {
        u64::MAX
    } else {
        (1u64 << LANE) - 1
    };
    let mut w = 0;
    while w < slots / per_word {
        let word_p = unsafe { set.add(w * SET_STRIDE) };
        let mut tries = 0;
        while tries < 2 {
            let word = unsafe { core::ptr::read_volatile(word_p) };
            let mut free = per_word;
            let mut lane = 0;
            while lane < per_word {
                let v = (word >> (lane as u32 * LANE)) & lane_mask;
                if v == 0 {
                    if free == per_word {
                        free = lane;
                    }
                } else if v & mask == entry & mask {
                    return Slot::Found(w * per_word + lane);
                }
                lane += 1;
            }
            if free == per_word {
                break; // every lane holds another entry
            }
            let new = word | (entry << (free as u32 * LANE));
            let (_, claimed) = unsafe {
                atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                    word_p, word, new,
                )
            };
            if claimed {
                return Slot::New(w * per_word + free);
            }
            tries += 1;
        }
        w += 1;
    }
    Slot::Full
}

/// Clears the window's words of a slot (the counts, sets and bitmaps: from
/// `crossed` on), one by one (no memset on BPF).
#[inline(always)]
pub unsafe fn clear_window(entry: *mut SourceStats) {
    let words = entry.cast::<u64>();
    let mut i = SourceStats::WINDOW_WORDS_FROM;
    while i < SourceStats::WORDS {
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
}

/// A waiting probe (an admission record, `tracking::record`; 0: none) as
/// the window code records it (`time` 0: none), in a window that started
/// at `start`.
#[inline(always)]
fn seen_of(record: u64, start: u64, now: u64) -> Seen {
    match record_kind(record) {
        Some(kind) => Seen {
            kind,
            port: match tracking::record_port(record) {
                Some(p) => port_entry(p, kind == ProbeKind::Udp as u8),
                None => 0,
            },
            host: tracking::record_host(record),
            time: record_time(record, now).max(start),
            pad: 0,
        },
        None => Seen {
            kind: 0,
            port: 0,
            host: 0,
            time: 0,
            pad: 0,
        },
    }
}

/// Seeds a slot being set up (nobody else writes it yet) with the probes
/// that waited for admission (their records, decoded one at a time: no
/// copy of both on the stack): counts, exact sets and bitmaps, plain
/// writes. At most two, so the sets need no search: the second is
/// compared with the first. Crossings are left to the probe recorded next.
#[inline(always)]
pub unsafe fn seed(entry: *mut SourceStats, waiting: &[u64; 2], start: u64, now: u64) {
    let mut ports = [0u32; 2];
    let mut hosts = [0u16; 2];
    let mut i = 0;
    while i < 2 {
        let seen = seen_of(waiting[i], start, now);
        let idx = usize::from(seen.kind);
        if seen.time == 0 || idx >= PROBE_KINDS {
            i += 1;
            continue;
        }
        // SAFETY: the caller owns the slot; every pointer stays inside it.
        unsafe {
            let probes = (&raw mut (*entry).probes).cast::<u32>().add(idx);
            *probes += 1;
            if seen.port != 0 && (i == 0 || ports[0] != seen.port) {
                let udp = seen.port & PORT_UDP != 0;
                let n = lens::get((*entry).lens, lens::PORTS) as usize;
                if n < PORT_SET {
                    let word = sets(entry).add(port_word(n / 2));
                    *word |= u64::from(seen.port) << (32 * (n % 2));
                    (*entry).lens += (1 << lens::PORTS) | if udp { 1 << lens::UDP } else { 0 };
                }
                let h = port_hash(seen.port);
                if seed_bit(
                    (&raw mut (*entry).port_bits).cast(),
                    bit_index(h, PORT_BITS),
                ) {
                    (*entry).bits += 1 << lens::PORTS;
                }
                if udp && seed_bit((&raw mut (*entry).udp_bits).cast(), bit_index(h, UDP_BITS)) {
                    (*entry).bits += 1 << lens::UDP;
                }
                ports[i] = seen.port;
            }
            let icmp =
                idx == ProbeKind::IcmpEcho as usize || idx == ProbeKind::IcmpOtherProbe as usize;
            let host = seen.host & !HOST_ICMP;
            let known = i == 1 && hosts[0] == host;
            let n = lens::get((*entry).lens, lens::HOSTS) as usize;
            let lane = if known { n.saturating_sub(1) } else { n };
            if lane < HOST_SET {
                let word = sets(entry).add(host_word(lane / 4));
                let flag = if icmp { HOST_ICMP } else { 0 };
                let had_icmp = known && *word & (u64::from(HOST_ICMP) << (16 * (lane % 4))) != 0;
                *word |= u64::from(host | flag) << (16 * (lane % 4));
                if !known {
                    (*entry).lens += 1 << lens::HOSTS;
                }
                if icmp && !had_icmp {
                    (*entry).lens += 1 << lens::ICMP;
                }
            }
            let h = host_hash(host);
            if seed_bit(
                (&raw mut (*entry).host_bits).cast(),
                bit_index(h, HOST_BITS),
            ) {
                (*entry).bits += 1 << lens::HOSTS;
            }
            if icmp
                && seed_bit(
                    (&raw mut (*entry).icmp_bits).cast(),
                    bit_index(h, ICMP_BITS),
                )
            {
                (*entry).bits += 1 << lens::ICMP;
            }
            if idx == ProbeKind::Syn as usize {
                seed_syn_rate(entry, rate_bucket(seen.time), 1, 1);
            }
            hosts[i] = host;
        }
        i += 1;
    }
}

/// Seeds a slot being set up with the repeats of a waiting SYN (an
/// admission slot's repeats word, [`scanwatch_common::tracking::repeats`]):
/// the window's SYN count, and the rate bucket's when it is `now`'s.
#[inline(always)]
pub unsafe fn seed_repeats(entry: *mut SourceStats, word: u64, now: u64) {
    let total = repeats::total(word);
    if total == 0 {
        return;
    }
    let bucket = rate_bucket(now);
    // SAFETY: the caller owns the slot; every pointer stays inside it.
    unsafe {
        (*entry).probes[ProbeKind::Syn as usize] += total;
        seed_syn_rate(entry, bucket, total, repeats::in_bucket(word, bucket));
    }
}

/// The window's SYN count before the first SYN of the rate bucket: the
/// high half of `crossed` (a `u32` of its own, so that it is written
/// without an atomic operation; the reported bits in the low half are
/// set by fetch-or, which keeps a store to the other half).
#[inline(always)]
fn rate_base(entry: *mut SourceStats) -> *mut u32 {
    const _: () = assert!(
        cfg!(target_endian = "little"),
        "the high half is the second u32"
    );
    // SAFETY: only the address of a field's second half is taken.
    unsafe { (&raw mut (*entry).crossed).cast::<u32>().add(1) }
}

/// Accounts for `added` SYNs just added to the window's SYN count of a
/// slot being set up (plain writes), `in_bucket` of them in rate bucket
/// `bucket`: a bucket other than the slot's restarts the rate, as
/// [`syn_rate`] does for a live slot; the others are no part of it.
#[inline(always)]
unsafe fn seed_syn_rate(entry: *mut SourceStats, bucket: u16, added: u32, in_bucket: u32) {
    // SAFETY: the caller owns the slot.
    unsafe {
        let base = rate_base(entry);
        if (*entry).rate_bucket != bucket {
            (*entry).rate_bucket = bucket;
            *base = (*entry).probes[ProbeKind::Syn as usize].wrapping_sub(in_bucket);
        } else {
            *base = (*base).wrapping_add(added - in_bucket);
        }
    }
}

/// Sets bit `index` (below 128) of a slot being set up; whether it was new.
#[inline(always)]
unsafe fn seed_bit(bits: *mut u64, index: u32) -> bool {
    let mask = 1u64 << (index % 64);
    // SAFETY: the caller's bitmap has at least index / 64 + 1 words.
    unsafe {
        let word = bits.add((index / 64) as usize & 1);
        let new = *word & mask == 0;
        *word |= mask;
        new
    }
}

/// Records one probe in the source's slot. Returns the trigger bits that
/// crossed their threshold with this probe and were not yet reported in
/// this window (the caller sends them to the agent), with [`NEW_WINDOW`]
/// set when the probe started a window; tallies the probe's scanner-tool
/// signatures (`sigs`, `fingerprint::FINGERPRINTED` and the bits) in the
/// same fetch-or, unless the window's tally is settled.
///
/// A global BPF function (external linkage): the verifier checks it once,
/// on its own, instead of once for each way the caller reaches it. It
/// sees `entry` and `seen` as memory of their types' sizes that may be
/// null, hence the checks.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn scanwatch_window_record(
    entry: *mut SourceStats,
    seen: *const Seen,
    ifindex: u32,
    sigs: u32,
) -> u32 {
    if entry.is_null() || seen.is_null() {
        return 0;
    }
    let cfg = &raw const crate::DETECT_CONFIG;
    let sigs = sigs as u8;
    // Through a volatile read: LLVM knows the kind is < 6 only from the
    // enum and would drop the bounds check the verifier needs.
    // SAFETY: `seen` is not null (checked above) and points to a `Seen`.
    let (idx, now, port, host) = unsafe {
        (
            usize::from(core::ptr::read_volatile(&raw const (*seen).kind)),
            (*seen).time,
            (*seen).port,
            (*seen).host,
        )
    };
    if idx >= PROBE_KINDS {
        return 0;
    }
    // SAFETY: `entry` points to a live map value for the duration of this
    // program run; every pointer below stays inside it.
    unsafe {
        // A new window when the current one has expired; one CPU wins the reset.
        let mut new_window = 0;
        let start_p = &raw mut (*entry).window_start_ns;
        let start = core::ptr::read_volatile(start_p);
        if expired(start, now, setting(&raw const (*cfg).window_ns)) {
            let (_, won) =
                atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                    start_p, start, now,
                );
            if won {
                clear_window(entry);
                new_window = NEW_WINDOW;
            }
        }
        let window_kind = add32((&raw mut (*entry).probes).cast::<u32>().add(idx), 1);
        if now > core::ptr::read_volatile(&raw const (*entry).last_seen_ns) {
            core::ptr::write_volatile(&raw mut (*entry).last_seen_ns, now);
        }
        core::ptr::write_volatile(&raw mut (*entry).last_ifindex, ifindex);
        // The sets and bitmaps, each followed by what it adds to the
        // counts in one atomic add (the costliest instructions of the path
        // on some machines). One add for both would carry a value across the host
        // set's search, which the verifier then checks once per value.
        if port != 0 {
            add_counts(entry, record_port(entry, port));
        }
        let icmp = idx == ProbeKind::IcmpEcho as usize || idx == ProbeKind::IcmpOtherProbe as usize;
        add_counts(entry, record_host(entry, host, icmp));
        let rate_syn = if idx == ProbeKind::Syn as usize {
            syn_rate(entry, now, window_kind)
        } else {
            0
        };
        let mut crossed = crossings(entry, cfg, rate_syn);
        if idx == ProbeKind::Stealth as usize && window_kind >= setting(&raw const (*cfg).stealth) {
            crossed |= trigger::STEALTH;
        }
        // Fresh crossings and the probe's signature bits, in one fetch-or,
        // only when they add a bit (a tool keeps its fields: its probes
        // after the first of a window add none). A settled tally takes no
        // more bits (`fingerprint::settled`: they would change nothing the
        // agent reads), so a probe whose signatures the fast path skipped
        // (`sources::WindowHead::tally_settled`) leaves the state a read
        // one leaves.
        let crossed_p = &raw mut (*entry).crossed;
        let current = core::ptr::read_volatile(crossed_p);
        let fresh = u64::from(crossed) & !current & 0xffff_ffff;
        let tally = if settled(current) { 0 } else { tally_of(sigs) };
        let adds = fresh | (tally & !current);
        if adds == 0 {
            return new_window;
        }
        let old = atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(crossed_p, adds);
        (fresh & !old) as u32 | new_window
    }
}

/// What a probe adds to the `lens` and `bits` counts (one 64-bit word:
/// `lens` low, `bits` high; every lane stays below 256, so no lane carries
/// into the next), added in one atomic operation by [`add_counts`].
#[inline(always)]
const fn counts(lens: u32, bits: u32) -> u64 {
    lens as u64 | (bits as u64) << 32
}

/// Adds `counts` ([`counts`]) to the slot's `lens` and `bits` at once.
#[inline(always)]
unsafe fn add_counts(entry: *mut SourceStats, counts: u64) {
    const {
        assert!(core::mem::offset_of!(SourceStats, lens) % 8 == 0);
        assert!(
            core::mem::offset_of!(SourceStats, bits)
                == core::mem::offset_of!(SourceStats, lens) + 4
        );
        assert!(cfg!(target_endian = "little"), "lens is the low half");
    }
    if counts != 0 {
        // SAFETY: `lens` and `bits` are one aligned u64 of a live map value.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                (&raw mut (*entry).lens).cast::<u64>(),
                counts,
            );
        }
    }
}

/// Destination ports (TCP and UDP probes): the exact set, then the
/// bitmaps. Returns what it adds to the counts ([`counts`]).
#[inline(always)]
unsafe fn record_port(entry: *mut SourceStats, port: u32) -> u64 {
    let udp = port & PORT_UDP != 0;
    let mut adds = 0;
    unsafe {
        match set_insert::<32>(
            sets(entry).add(port_word(0)),
            PORT_SET,
            u64::from(port),
            u64::from(u32::MAX),
        ) {
            Slot::New(_) => {
                adds |= if udp {
                    counts((1 << lens::PORTS) | (1 << lens::UDP), 0)
                } else {
                    counts(1 << lens::PORTS, 0)
                };
            }
            // A port of the exact set has its bitmap bits: whoever added it
            // set them (or is about to). A repeat reads no bitmap.
            Slot::Found(_) => return 0,
            Slot::Full => {}
        }
        let h = port_hash(port);
        if set_bit(
            (&raw mut (*entry).port_bits).cast(),
            PORT_BITS / 64,
            bit_index(h, PORT_BITS),
        ) {
            adds += counts(0, 1 << lens::PORTS);
        }
        if udp
            && set_bit(
                (&raw mut (*entry).udp_bits).cast(),
                UDP_BITS / 64,
                bit_index(h, UDP_BITS),
            )
        {
            adds += counts(0, 1 << lens::UDP);
        }
    }
    adds
}

/// Destination hosts (every probe), and those sent ICMP probes. Returns
/// what it adds to the counts ([`counts`]).
#[inline(always)]
unsafe fn record_host(entry: *mut SourceStats, host: u16, icmp: bool) -> u64 {
    let mut adds = 0;
    unsafe {
        let host_set = sets(entry).add(host_word(0));
        let (slot, new_host) = match set_insert::<16>(
            host_set,
            HOST_SET,
            u64::from(host & !HOST_ICMP),
            u64::from(!HOST_ICMP),
        ) {
            Slot::New(i) => {
                adds += counts(1 << lens::HOSTS, 0);
                (Some(i), true)
            }
            Slot::Found(i) => (Some(i), false),
            Slot::Full => (None, false),
        };
        let h = host_hash(host & !HOST_ICMP);
        if icmp {
            if let Some(i) = slot
                && i < HOST_SET
            {
                let flag = u64::from(HOST_ICMP) << (16 * (i % 4));
                let word = host_set.add(i / 4 * SET_STRIDE);
                if core::ptr::read_volatile(word) & flag == 0 {
                    let old = atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(word, flag);
                    if old & flag == 0 {
                        adds += counts(1 << lens::ICMP, 0);
                    }
                }
            }
            if set_bit(
                (&raw mut (*entry).icmp_bits).cast(),
                ICMP_BITS / 64,
                bit_index(h, ICMP_BITS),
            ) {
                adds += counts(0, 1 << lens::ICMP);
            }
        }
        // As for ports: a host found in the exact set has its bit.
        if !matches!(slot, Some(i) if !new_host && i < HOST_SET)
            && set_bit(
                (&raw mut (*entry).host_bits).cast(),
                HOST_BITS / 64,
                bit_index(h, HOST_BITS),
            )
        {
            adds += counts(0, 1 << lens::HOSTS);
        }
    }
    adds
}

/// The SYNs of `now`'s ~1 s rate bucket, this one included, from the
/// window's SYN count with this SYN added (`syns`, [`add32`]'s result):
/// `syns` less the count before the bucket's first SYN ([`rate_base`]),
/// which the first SYN of a bucket sets. No atomic operation beyond the
/// count's own (the costliest instructions of the path on some machines,
/// docs/benchmarks.md). CPUs that start a bucket at once each set the
/// base: the last one's stands, which leaves out at most the SYNs the
/// others counted in between. (A SYN racing its window's reset, between
/// its count and the base, reads the cleared base: as with the other
/// counts, a probe racing the reset may be judged on the window before.)
#[inline(always)]
unsafe fn syn_rate(entry: *mut SourceStats, now: u64, syns: u32) -> u64 {
    let bucket = rate_bucket(now);
    unsafe {
        let bucket_p = &raw mut (*entry).rate_bucket;
        let base_p = rate_base(entry);
        if core::ptr::read_volatile(bucket_p) != bucket {
            // The base before the bucket: a CPU that reads the new bucket
            // reads this base (or a later one) with it.
            core::ptr::write_volatile(base_p, syns.wrapping_sub(1));
            core::ptr::write_volatile(bucket_p, bucket);
        }
        // A base set by a CPU whose count read later than ours is above
        // `syns`: none of ours in the bucket then.
        u64::from(syns.saturating_sub(core::ptr::read_volatile(base_p)))
    }
}

/// The count thresholds crossed (all but stealth, which depends on the probe).
#[inline(always)]
unsafe fn crossings(entry: *mut SourceStats, cfg: *const DetectConfig, rate_syn: u64) -> u32 {
    // SAFETY: plain reads of a live map value and of the settings.
    let (l, b, c) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*entry).lens),
            core::ptr::read_volatile(&raw const (*entry).bits),
            |f: *const u32| setting(f),
        )
    };
    let over = |lane: u32, exact: u32, bits: u32| {
        lens::get(l, lane) >= exact || lens::get(b, lane) >= bits
    };
    let mut crossed = 0;
    // SAFETY: `cfg` points to the load-time settings.
    unsafe {
        if over(
            lens::PORTS,
            c(&raw const (*cfg).ports_exact),
            c(&raw const (*cfg).ports_bits),
        ) {
            crossed |= trigger::PORTS;
        }
        if over(
            lens::UDP,
            c(&raw const (*cfg).udp_exact),
            c(&raw const (*cfg).udp_bits),
        ) {
            crossed |= trigger::UDP_PORTS;
        }
        if over(
            lens::HOSTS,
            c(&raw const (*cfg).hosts_exact),
            c(&raw const (*cfg).hosts_bits),
        ) {
            crossed |= trigger::HOSTS;
        }
        if over(
            lens::ICMP,
            c(&raw const (*cfg).icmp_exact),
            c(&raw const (*cfg).icmp_bits),
        ) {
            crossed |= trigger::ICMP_HOSTS;
        }
        if rate_syn >= u64::from(c(&raw const (*cfg).syn_rate)) {
            crossed |= trigger::SYN_RATE;
        }
    }
    crossed
}
