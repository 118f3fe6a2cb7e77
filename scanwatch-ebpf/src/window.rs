//! Per-source window state: counts, exact sets, bitmaps and threshold
//! crossings. Several CPUs can update one source at once, so counters use
//! atomic adds, set slots are claimed with compare-and-swap and bitmap bits
//! with fetch-or (64-bit BPF atomics, kernel 5.12+).

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_or, atomic_xadd};

use scanwatch_common::{
    DetectConfig, ProbeKind, SourceStats, WindowState,
    classify::PROBE_KINDS,
    sketch::{
        HOST_BITS, HOST_ICMP, HOST_SET, ICMP_BITS, PORT_BITS, PORT_SET, PORT_UDP, UDP_BITS,
        bit_index, host_entry, port_hash,
    },
    trigger,
};

use crate::parse::Probe;

/// Atomic add; returns the value read right after it (at least this CPU's
/// sum; the generic BPF cpu cannot return the old value of an add).
#[inline(always)]
unsafe fn add(p: *mut u64, v: u64) -> u64 {
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v);
        core::ptr::read_volatile(p)
    }
}

/// Sets bit `index` of `bits` (a `[u64; N]`); returns whether it was newly set.
#[inline(always)]
unsafe fn set_bit(bits: *mut u64, words: u32, index: u32) -> bool {
    let word = index / 64;
    if word >= words {
        return false;
    }
    let mask = 1u64 << (index % 64);
    let old = unsafe {
        atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(bits.add(word as usize), mask)
    };
    old & mask == 0
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

/// Finds or claims `entry` in `set`, a set of `slots` u32 entries stored
/// two per u64 word (compared under `mask`). A slot is claimed with a 64-bit
/// compare-and-swap of its word; a lost race re-reads the word once.
#[inline(always)]
unsafe fn set_insert(set: *mut u64, slots: usize, entry: u32, mask: u32) -> Slot {
    let mut w = 0;
    while w < slots / 2 {
        let word_p = unsafe { set.add(w) };
        let mut tries = 0;
        while tries < 2 {
            let word = unsafe { core::ptr::read_volatile(word_p) };
            let lo = word as u32;
            let hi = (word >> 32) as u32;
            if lo != 0 && lo & mask == entry & mask {
                return Slot::Found(2 * w);
            }
            if hi != 0 && hi & mask == entry & mask {
                return Slot::Found(2 * w + 1);
            }
            let (new, slot) = if lo == 0 {
                (word | u64::from(entry), 2 * w)
            } else if hi == 0 {
                (word | (u64::from(entry) << 32), 2 * w + 1)
            } else {
                break; // both halves hold other entries
            };
            let (_, claimed) = unsafe {
                atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                    word_p, word, new,
                )
            };
            if claimed {
                return Slot::New(slot);
            }
            tries += 1;
        }
        w += 1;
    }
    Slot::Full
}

/// Zeroes the window state word by word (no memset on BPF).
#[inline(always)]
unsafe fn reset(w: *mut WindowState) {
    let words = w.cast::<u64>();
    let mut i = 0;
    while i < WindowState::WORDS {
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
}

/// Records one probe in the source's entry. Returns the trigger bits that
/// crossed their threshold with this probe and were not yet reported in
/// this window (the caller sends them to the agent).
#[inline(always)]
pub fn record(
    entry: *mut SourceStats,
    probe: &Probe,
    now: u64,
    ifindex: u32,
    cfg: &DetectConfig,
) -> u32 {
    // Through a volatile read: LLVM knows the enum is < 6 and would drop the
    // bounds check the verifier needs.
    let raw = probe.kind as u8;
    // SAFETY: reading a local.
    let idx = usize::from(unsafe { core::ptr::read_volatile(&raw) });
    if idx >= PROBE_KINDS {
        return 0;
    }
    // SAFETY: `entry` points to a live map value for the duration of this
    // program run; every pointer below stays inside it.
    unsafe {
        // A new window when the current one has expired; one CPU wins the reset.
        let start_p = core::ptr::addr_of_mut!((*entry).window_start_ns);
        let start = core::ptr::read_volatile(start_p);
        if now.wrapping_sub(start) >= cfg.window_ns && now > start {
            let (_, won) =
                atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                    start_p, start, now,
                );
            if won {
                reset(core::ptr::addr_of_mut!((*entry).window));
            }
        }
        let counter = core::ptr::addr_of_mut!((*entry).probes)
            .cast::<u64>()
            .add(idx);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, 1);
        (*entry).last_seen_ns = now;
        (*entry).last_ifindex = ifindex;

        let w = core::ptr::addr_of_mut!((*entry).window);
        let window_kind = add(
            core::ptr::addr_of_mut!((*w).probes).cast::<u64>().add(idx),
            1,
        );

        // Destination ports (TCP and UDP probes).
        if probe.port != 0 {
            let udp = probe.port & PORT_UDP != 0;
            if let Slot::New(_) = set_insert(
                core::ptr::addr_of_mut!((*w).port_set).cast(),
                PORT_SET,
                probe.port,
                u32::MAX,
            ) {
                add(core::ptr::addr_of_mut!((*w).port_set_len), 1);
                if udp {
                    add(core::ptr::addr_of_mut!((*w).udp_set_len), 1);
                }
            }
            let h = port_hash(probe.port);
            if set_bit(
                core::ptr::addr_of_mut!((*w).port_bits).cast(),
                PORT_BITS / 64,
                bit_index(h, PORT_BITS),
            ) {
                add(core::ptr::addr_of_mut!((*w).port_bits_set), 1);
            }
            if udp
                && set_bit(
                    core::ptr::addr_of_mut!((*w).udp_bits).cast(),
                    UDP_BITS / 64,
                    bit_index(h, UDP_BITS),
                )
            {
                add(core::ptr::addr_of_mut!((*w).udp_bits_set), 1);
            }
        }

        // Destination hosts (every probe), and those sent ICMP probes.
        let icmp = matches!(probe.kind, ProbeKind::IcmpEcho | ProbeKind::IcmpOtherProbe);
        let host = host_entry(probe.dst_hash);
        let host_set = core::ptr::addr_of_mut!((*w).host_set).cast::<u64>();
        let slot = match set_insert(host_set, HOST_SET, host, !HOST_ICMP) {
            Slot::New(i) => {
                add(core::ptr::addr_of_mut!((*w).host_set_len), 1);
                Some(i)
            }
            Slot::Found(i) => Some(i),
            Slot::Full => None,
        };
        if icmp {
            if let Some(i) = slot
                && i < HOST_SET
            {
                let flag = u64::from(HOST_ICMP) << (32 * (i % 2));
                let word = host_set.add(i / 2);
                if core::ptr::read_volatile(word) & flag == 0 {
                    let old = atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(word, flag);
                    if old & flag == 0 {
                        add(core::ptr::addr_of_mut!((*w).icmp_set_len), 1);
                    }
                }
            }
            if set_bit(
                core::ptr::addr_of_mut!((*w).icmp_bits).cast(),
                ICMP_BITS / 64,
                bit_index(probe.dst_hash, ICMP_BITS),
            ) {
                add(core::ptr::addr_of_mut!((*w).icmp_bits_set), 1);
            }
        }
        if set_bit(
            core::ptr::addr_of_mut!((*w).host_bits).cast(),
            HOST_BITS_WORDS,
            bit_index(probe.dst_hash, HOST_BITS),
        ) {
            add(core::ptr::addr_of_mut!((*w).host_bits_set), 1);
        }

        // SYN rate in ~1 s buckets.
        let mut rate_syn = 0;
        if matches!(probe.kind, ProbeKind::Syn) {
            let bucket = now >> 30;
            let bucket_p = core::ptr::addr_of_mut!((*w).rate_bucket);
            if core::ptr::read_volatile(bucket_p) != bucket {
                core::ptr::write_volatile(bucket_p, bucket);
                core::ptr::write_volatile(core::ptr::addr_of_mut!((*w).rate_syn), 0);
            }
            rate_syn = add(core::ptr::addr_of_mut!((*w).rate_syn), 1) + 1;
        }

        let mut crossed = 0;
        let v = |p: *const u64| core::ptr::read_volatile(p);
        if v(core::ptr::addr_of!((*w).port_set_len)) >= u64::from(cfg.ports_exact)
            || v(core::ptr::addr_of!((*w).port_bits_set)) >= u64::from(cfg.ports_bits)
        {
            crossed |= trigger::PORTS;
        }
        if v(core::ptr::addr_of!((*w).udp_set_len)) >= u64::from(cfg.udp_exact)
            || v(core::ptr::addr_of!((*w).udp_bits_set)) >= u64::from(cfg.udp_bits)
        {
            crossed |= trigger::UDP_PORTS;
        }
        if v(core::ptr::addr_of!((*w).host_set_len)) >= u64::from(cfg.hosts_exact)
            || v(core::ptr::addr_of!((*w).host_bits_set)) >= u64::from(cfg.hosts_bits)
        {
            crossed |= trigger::HOSTS;
        }
        if v(core::ptr::addr_of!((*w).icmp_set_len)) >= u64::from(cfg.icmp_exact)
            || v(core::ptr::addr_of!((*w).icmp_bits_set)) >= u64::from(cfg.icmp_bits)
        {
            crossed |= trigger::ICMP_HOSTS;
        }
        if matches!(probe.kind, ProbeKind::Stealth) && window_kind >= u64::from(cfg.stealth) {
            crossed |= trigger::STEALTH;
        }
        if rate_syn >= u64::from(cfg.syn_rate) {
            crossed |= trigger::SYN_RATE;
        }
        let reported_p = core::ptr::addr_of_mut!((*w).reported);
        let fresh = u64::from(crossed) & !core::ptr::read_volatile(reported_p);
        if fresh == 0 {
            return 0;
        }
        let old = atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(reported_p, fresh);
        (fresh & !old) as u32
    }
}

const HOST_BITS_WORDS: u32 = HOST_BITS / 64;
