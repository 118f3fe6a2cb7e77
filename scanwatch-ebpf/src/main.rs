//! scanwatch XDP program: classifies every ingress packet, counts probes per
//! source (an address or a prefix) in bounded tables — first in the
//! admission table, then, from the source's `admit_after`-th probe in a
//! window, in its slot of the source table (see `scanwatch_common::tracking`)
//! — and per interface in per-CPU counters. It
//! drops only packets from blocked sources and `drop` feeds (never from
//! `never_block` networks); everything else, parseable or not, gets
//! `XDP_PASS`. The TC egress program of the reply-aware detector is in
//! `contacts.rs`.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod clock;
mod contacts;
mod evidence;
mod fast;
mod packet;
mod parse;
mod sources;
mod web;
mod window;

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, xdp_action},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use scanwatch_common::{
    BlockValue, Counter, DetectConfig, FeedValue, IfaceCounters, IfaceName, LpmData,
    MitigationState, Name32, SourceKey, SourceStats, feed_action,
    maps::{
        COUNTER_SLOTS, DEFAULT_BLOCKLIST_CAPACITY, DEFAULT_FEED_CAPACITY, DEFAULT_PREFILTER_WORDS,
        DEFAULT_SOURCE_MAP_SIZE, EVENTS_BYTES, IFINDEX_SLOTS, MAX_FEEDS, MAX_INTERFACES,
        NEVER_BLOCK_CAPACITY,
    },
    prefilter,
    tracking::{AdmitMore, AdmitSlot, DEFAULT_ADMISSION_SLOTS, tag_words},
};

use crate::{
    packet::{Ip, Packet, ParseError},
    parse::{Outcome, Probe, parse},
};

/// Detection settings, set by the agent at load time.
#[unsafe(no_mangle)]
pub(crate) static DETECT_CONFIG: DetectConfig = DetectConfig::DISABLED;

/// The key `addr` (of family `v6`) is counted under: masked to its prefix
/// (`[detection] ipv4_prefix`, `ipv6_prefix`).
#[inline(always)]
pub(crate) fn source_key(addr: [u8; 16], v6: bool) -> SourceKey {
    // SAFETY: volatile reads keep LLVM from folding the load-time values.
    let (v4_mask, v6_mask) = unsafe {
        (
            core::ptr::read_volatile(&raw const DETECT_CONFIG.v4_mask),
            core::ptr::read_volatile(&raw const DETECT_CONFIG.v6_mask),
        )
    };
    scanwatch_common::maps::masked_key(addr, v6, v4_mask, v6_mask)
}

/// Threshold crossings for the agent: at most one per source, trigger and window.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// The source table: one slot per tracked source (the key is in the slot),
/// two candidate slots per source. The agent sets the size at load time and
/// reads the table through mmap.
#[map]
pub(crate) static SOURCES: Array<SourceStats> =
    Array::with_max_entries(DEFAULT_SOURCE_MAP_SIZE, BPF_F_MMAPABLE);

/// The tag index of `SOURCES`: one word per bucket of two slots, the tags
/// of their sources (sized with `SOURCES` at load time).
#[map]
pub(crate) static SOURCE_TAGS: Array<u64> =
    Array::with_max_entries(tag_words(DEFAULT_SOURCE_MAP_SIZE), 0);

/// The admission table: where a source's first probes of a window wait.
#[map]
pub(crate) static ADMISSION: Array<AdmitSlot> = Array::with_max_entries(DEFAULT_ADMISSION_SLOTS, 0);

/// The rest of each admission slot, used by a source that comes back (its
/// second probe, its repeats): a new source never touches it.
#[map]
pub(crate) static ADMISSION_MORE: Array<AdmitMore> =
    Array::with_max_entries(DEFAULT_ADMISSION_SLOTS, 0);

/// Per-interface, per-CPU packet counters, by slot. Array lookups are
/// inlined by the verifier: no helper call on the path every packet takes.
#[map]
static IFACE_COUNTERS: PerCpuArray<IfaceCounters> =
    PerCpuArray::with_max_entries(MAX_INTERFACES, 0);

/// ifindex % IFINDEX_SLOTS -> counters slot, written by the agent for
/// other processes (`scanwatch top`). Unused in the kernel: it reads its
/// copy, `IFACE_SLOT_BYTES`.
#[map]
static IFACE_SLOTS: Array<u32> = Array::with_max_entries(IFINDEX_SLOTS, 0);

/// ifindex % IFINDEX_SLOTS -> counters slot (one byte each), written by the
/// agent: a global in a data section of its own (`IFACE_SLOT_BYTES_MAP`),
/// read in place. Every packet reads it: a byte load where a map lookup
/// needed its key on the stack (docs/benchmarks.md). Exported, so LLVM
/// never folds it to its initial value.
#[unsafe(link_section = ".data.iface_slots")]
#[unsafe(no_mangle)]
static mut IFACE_SLOT_BYTES: [u8; IFINDEX_SLOTS as usize] = [0; IFINDEX_SLOTS as usize];

/// ifindex -> name, written by the agent so that other processes (`scanwatch
/// top`) can name interfaces of another network namespace. Unused in the kernel.
#[map]
static IFACE_NAMES: HashMap<u32, IfaceName> = HashMap::with_max_entries(MAX_INTERFACES, 0);

/// The prefix lengths (IPv4, IPv6) sources are counted by, written by the
/// agent for other processes (`scanwatch top`). Unused in the kernel: the
/// masks are in `DETECT_CONFIG`.
#[map]
static SOURCE_PREFIXES: Array<u32> = Array::with_max_entries(2, 0);

/// Blocked sources and networks; entries carry their own expiry.
#[map]
static BLOCKS: LpmTrie<LpmData, BlockValue> =
    LpmTrie::with_max_entries(DEFAULT_BLOCKLIST_CAPACITY, 0);

/// Blocked single addresses (also in `BLOCKS`): one hash lookup on the drop
/// path instead of a trie walk. The agent sets the size at load time;
/// entries are allocated as blocks are made (a mostly empty blocklist costs
/// no memory, like the tries).
#[map]
static BLOCKED_HOSTS: HashMap<SourceKey, BlockValue> =
    HashMap::with_max_entries(DEFAULT_BLOCKLIST_CAPACITY, BPF_F_NO_PREALLOC);

/// Threat-intel feed entries (tag or drop).
#[map]
pub(crate) static FEEDS: LpmTrie<LpmData, FeedValue> =
    LpmTrie::with_max_entries(DEFAULT_FEED_CAPACITY, 0);

/// Networks never dropped, whatever else matches.
#[map]
static NEVER_BLOCK: LpmTrie<LpmData, u32> = LpmTrie::with_max_entries(NEVER_BLOCK_CAPACITY, 0);

/// Which of the lookups above can be skipped, kept by the agent: a global
/// in a data section of its own (a one-entry array map the agent writes,
/// `MITIGATION_MAP`), read in place. No map lookup on any packet's path:
/// as a map's entry it cost every packet about 1 ns (docs/benchmarks.md).
/// Exported, so LLVM never folds it to its initial value.
#[unsafe(link_section = ".data.mitigation")]
#[unsafe(no_mangle)]
static mut MITIGATION: MitigationState = MitigationState {
    net_blocks: 0,
    drop_feeds: 0,
    tag_feeds: 0,
    host_blocks: 0,
    prefilter_levels: 0,
    prefilter_mask: 0,
};

/// The mitigation state as the agent last wrote it.
#[inline(always)]
pub(crate) fn mitigation() -> &'static MitigationState {
    let state: *const MitigationState = &raw const MITIGATION;
    // SAFETY: only the agent writes the global (a map update copies the
    // value in; a torn read costs one packet a lookup or a skipped one, as
    // with the map entry before).
    unsafe { &*state }
}

/// The prefilter in front of `BLOCKED_HOSTS`, `BLOCKS` and `FEEDS`: a
/// bitmap of the prefixes their entries cover (`scanwatch_common::prefilter`).
/// The agent sets its size at load time and its bits before adding entries.
#[map]
static PREFILTER: Array<u64> = Array::with_max_entries(DEFAULT_PREFILTER_WORDS, 0);

/// The IPv4 prefilter: one bit per /24 (`scanwatch_common::prefilter`),
/// one map value the agent memory-maps and sets bits in before adding
/// entries. Read at a fixed place: no hash, no key on the stack.
#[map]
static PREFILTER_V4: Array<[u64; prefilter::V4_WORDS]> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Feed names for readers (`scanwatch top`); unused in the kernel.
#[map]
static FEED_NAMES: HashMap<u32, Name32> = HashMap::with_max_entries(MAX_FEEDS, 0);

// Inlined into the entry point the macro wraps it in: the program is large
// enough for LLVM to leave it a separate function otherwise, and every
// packet would pay a BPF-to-BPF call (8 ns a packet, measured).
#[xdp]
#[inline(always)]
pub fn scanwatch(ctx: XdpContext) -> u32 {
    // An established connection's segment: counted and passed without the
    // general walk (same verdict, same counters; `fast.rs`).
    if fast::benign(&ctx) {
        return xdp_action::XDP_PASS;
    }
    let ifindex = ctx.ingress_ifindex() as u32;
    // Map lookups before parsing: nothing parsed is live across these helper
    // calls (LLVM would spill the undefined payload of other enum variants,
    // which the verifier rejects).
    let Some(counters) = iface_counters(ifindex) else {
        return xdp_action::XDP_PASS;
    };
    bump_counter(counters, Counter::Packets);
    // A new source's first SYN, or a waiting source's repeat of it: it
    // waits in its admission slot, and nothing more is done (`fast.rs`).
    if fast::new_source_syn(&ctx, counters) {
        return xdp_action::XDP_PASS;
    }
    let state = mitigation();
    match try_scanwatch(&ctx, ifindex, counters, state) {
        Ok(action) => action,
        Err(err) => {
            // Unparseable packets are counted and passed, never aborted.
            bump_counter(counters, err.counter());
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn try_scanwatch(
    ctx: &XdpContext,
    ifindex: u32,
    counters: *mut IfaceCounters,
    state: &MitigationState,
) -> Result<u32, ParseError> {
    let dropping = state.drops();
    let pkt = Packet::new(ctx);
    match parse(pkt)? {
        Outcome::NotIp => bump_counter(counters, Counter::NotIp),
        Outcome::NotProbe(ip) => {
            // The fast path: nothing blocked or fed, or nothing covering
            // this source (the prefilter), nothing more to read.
            if dropping
                && may_be_listed(ip, pkt, state)?
                && let Some(dropped) = drop_reason(&ip.source(pkt)?, counters, state)
            {
                bump_counter(counters, dropped);
                return Ok(xdp_action::XDP_DROP);
            }
            bump_counter(counters, Counter::NotProbe);
            // A request's first segment to a web port: a sample for the
            // agent. The packet is counted already (the walk checked the
            // lengths sampling reads within): no second counter for it.
            let _ = web::sample(ctx, pkt, ip, ifindex);
        }
        Outcome::Probe(found) => {
            let address = found.ip.src_addr(pkt)?;
            if dropping
                && may_be_listed(found.ip, pkt, state)?
                && let Some(dropped) = drop_reason(&SourceKey { addr: address }, counters, state)
            {
                bump_counter(counters, dropped);
                return Ok(xdp_action::XDP_DROP);
            }
            // Counted, and its first contacts recorded, by its prefix.
            let probe = Probe {
                kind: found.kind,
                source: source_key(address, found.ip.v6),
                host: found.ip.dst_fingerprint(pkt)?,
                port: found.port,
                sigs: found.sigs,
            };
            bump_counter(counters, Counter::probe(probe.kind));
            // One clock read for both.
            let now = clock::now();
            let place = sources::Place::of(&probe);
            let tracked = sources::tracked(&probe, &place);
            // First contacts (SYN, UDP) for the reply-aware detector: not
            // a new source's first SYN (it waits in its admission slot),
            // nor its other first probes while admission is busy, nor a
            // repeat of a source's only destination.
            let plan = sources::contact_plan(&probe, &place, tracked, now);
            let at = evidence::At {
                ifindex,
                now,
                counters,
            };
            let tag_feeds = state.tag_feeds != 0;
            // A tracked source's first contact (a scan's new port: a random
            // line of the 4 MiB contact table) is read before the window
            // update and written after it, so that the line's miss overlaps
            // with that work.
            let (entry, key) = match tracked {
                Some(entry) => {
                    let key = contacts::own_contact(pkt, &found, &probe.source, plan)?;
                    contacts::touch_contact(key);
                    (Some(entry), key)
                }
                None => {
                    contacts::record_contact(pkt, &found, &probe.source, now, plan)?;
                    let admitted = sources::admit_source(&probe, &place, &at, tag_feeds);
                    (admitted, core::ptr::null_mut())
                }
            };
            if let Some(entry) = entry {
                sources::count(ctx, &probe, entry, &at, tag_feeds);
            }
            contacts::record_own_contact(key, now);
        }
    }
    Ok(xdp_action::XDP_PASS)
}

/// Word `index` of the prefilter (an array lookup the verifier inlines).
#[inline(always)]
pub(crate) fn prefilter_word(index: u32) -> Option<u64> {
    PREFILTER.get(index).copied()
}

/// Word `index` of the IPv4 prefilter (the index of a /24's bit is below
/// `V4_WORDS` by construction: no bounds check).
#[inline(always)]
pub(crate) fn prefilter_v4_word(index: u32) -> Option<u64> {
    let words = PREFILTER_V4.get_ptr(0)?;
    // SAFETY: a live map value, read in place (the agent sets bits in it
    // through its mapping; a racing read sees a word before or after).
    Some(unsafe { (*words)[(index as usize) & (prefilter::V4_WORDS - 1)] })
}

/// The prefilter for the packet's source, read in place from the IP
/// header (an IPv4 source as one word): `false` when no block or feed
/// entry covers it, and [`drop_reason`] can be skipped.
#[inline(always)]
fn may_be_listed<C: packet::Frame>(
    ip: Ip,
    pkt: Packet<'_, C>,
    state: &MitigationState,
) -> Result<bool, ParseError> {
    let (levels, mask) = (state.prefilter_levels, state.prefilter_mask);
    Ok(if ip.v6 {
        prefilter::may_match(
            pkt.bytes::<16>(ip.l3 + 8)?,
            levels,
            mask,
            prefilter_word,
            prefilter_v4_word,
        )
    } else {
        may_be_listed_v4(u32::from_be_bytes(*pkt.bytes::<4>(ip.l3 + 12)?), state)
    })
}

/// [`may_be_listed`] for an IPv4 source (host byte order): one bit test.
#[inline(always)]
pub(crate) fn may_be_listed_v4(v4: u32, state: &MitigationState) -> bool {
    prefilter::may_match_v4(v4, state.prefilter_levels, prefilter_v4_word)
}

/// Why a packet from `source` is dropped: an unexpired block or a `drop`
/// feed, unless the source is in `never_block` (checked last, only for a
/// packet about to be dropped). Lookups of empty maps are skipped; callers
/// skip it all when the prefilter rules the source out.
#[inline(always)]
fn drop_reason(
    source: &SourceKey,
    counters: *mut IfaceCounters,
    state: &MitigationState,
) -> Option<Counter> {
    let host_blocked = state.host_blocks != 0
        && BLOCKED_HOSTS
            .get_ptr(source)
            // SAFETY: a live map value, read under RCU; the agent may
            // rewrite it meanwhile (a torn expiry only delays a decision).
            .is_some_and(|block| live(unsafe { &*block }));
    let key = Key::new(128, source.addr);
    let reason = if host_blocked || (state.net_blocks != 0 && BLOCKS.get(&key).is_some_and(live)) {
        Counter::DroppedBlocklist
    } else if state.drop_feeds != 0
        && FEEDS
            .get(&key)
            .is_some_and(|feed| feed.action == feed_action::DROP)
    {
        Counter::DroppedFeed
    } else {
        return None;
    };
    if NEVER_BLOCK.get(&key).is_some() {
        bump_counter(counters, Counter::NeverBlockSpared);
        return None;
    }
    Some(reason)
}

/// A block in force: no expiry, or one still ahead (the clock is read only
/// for blocks with an expiry).
#[inline(always)]
fn live(block: &BlockValue) -> bool {
    let expires = block.expires_ns;
    expires == 0 || clock::now() < expires
}

/// This CPU's counters for `ifindex` (slot 0 when the agent assigned none).
#[inline(always)]
pub(crate) fn iface_counters(ifindex: u32) -> Option<*mut IfaceCounters> {
    let slots: *const u8 = (&raw const IFACE_SLOT_BYTES).cast();
    // SAFETY: the index is below IFINDEX_SLOTS, the global's length; only
    // the agent writes the global (a byte is read whole, before or after).
    let slot = unsafe { core::ptr::read_volatile(slots.add((ifindex % IFINDEX_SLOTS) as usize)) };
    IFACE_COUNTERS.get_ptr_mut(u32::from(slot))
}

#[inline(always)]
pub(crate) fn bump_counter(counters: *mut IfaceCounters, counter: Counter) {
    let slot = counter as usize;
    if slot < COUNTER_SLOTS {
        // SAFETY: `counters` points to this CPU's map value; slot is in bounds.
        unsafe { (*counters).counters[slot] += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
