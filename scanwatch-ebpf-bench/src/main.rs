//! Programs the benchmarks and tests compare scanwatch with, and the
//! benchmarks' packet generator. A separate object from the agent's: none
//! of these is ever loaded or attached by the agent.
//!
//! - `scanwatch_noop` / `scanwatch_egress_noop`: pass every packet, do
//!   nothing else (the XDP and TC baselines of every ratio);
//! - `scanwatch_floor_*`: the least a program doing one job can do (count,
//!   find a segment no probe as scanwatch's walk does and count it per
//!   interface, look up a blocklist, track a new source, count a tracked source's
//!   probe exactly, remember a new source in a bounded table): a target
//!   below a floor's
//!   ratio is below what any design can reach;
//! - `scanwatch_bench_tx`: sends every frame back out (with
//!   BPF_PROG_TEST_RUN's live-frames mode, a packet generator);
//! - `scanwatch_bench_flood`: the same, from a fresh pseudo-random source
//!   each time (a random-source flood).
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, TC_ACT_UNSPEC, xdp_action},
    helpers::generated::{bpf_get_prandom_u32, bpf_jiffies64},
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use scanwatch_common::{
    SourceKey, is_tcp_probe,
    tracking::{AdmitSlot, DEFAULT_ADMISSION_SLOTS, key_hash},
};

/// Slots of [`FLOOR_COUNTERS`]: 0 counts probes, 1 other packets.
const FLOOR_COUNTER_SLOTS: u32 = 2;

/// Per-CPU packet counters of `scanwatch_floor_count`.
#[map]
static FLOOR_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(FLOOR_COUNTER_SLOTS, 0);

/// Blocked IPv4 sources of `scanwatch_floor_blocklist` (filled by the benchmark).
#[map]
static FLOOR_HOSTS: HashMap<SourceKey, u32> = HashMap::with_max_entries(65_536, BPF_F_NO_PREALLOC);

/// Admission slots of `scanwatch_floor_admit` (as many as scanwatch's by
/// default).
#[map]
static FLOOR_ADMISSION: Array<AdmitSlot> = Array::with_max_entries(DEFAULT_ADMISSION_SLOTS, 0);

/// A tracked source's slot of `scanwatch_floor_tracked`: its key, its
/// probe count (exact: every CPU adds to it), the time of its latest probe.
#[repr(C)]
struct TrackedSlot {
    key: [u64; 2],
    probes: u64,
    last_seen: u64,
}

const _: () = assert!(core::mem::size_of::<TrackedSlot>() == 32);

/// Slots of [`FLOOR_TRACKED`].
const TRACKED_SLOTS: u32 = 65_536;

/// The source table of `scanwatch_floor_tracked`.
#[map]
static FLOOR_TRACKED: Array<TrackedSlot> = Array::with_max_entries(TRACKED_SLOTS, 0);

/// Lines of [`FLOOR_SPAN`] (32 MiB of 64-byte lines).
const SPAN_LINES: u32 = 1 << 19;

/// The table of `scanwatch_floor_span`.
#[map]
static FLOOR_SPAN: Array<[u64; 8]> = Array::with_max_entries(SPAN_LINES, 0);

/// Passes every packet and does nothing else: the baseline the benchmarks
/// compare scanwatch with.
#[xdp]
pub fn scanwatch_noop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Does nothing: the baseline the benchmarks compare the egress program with.
#[classifier]
pub fn scanwatch_egress_noop(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// The least a counting detector can do: one bounds check, the Ethernet
/// type, IPv4 header byte, protocol and TCP flags read in place, one per-CPU
/// counter. The benchmarks compare the benign path with it.
#[xdp]
pub fn scanwatch_floor_count(ctx: XdpContext) -> u32 {
    if let Some(slot) = floor_slot(&ctx) {
        bump_counter(slot);
    }
    xdp_action::XDP_PASS
}

/// `scanwatch_floor_count` with its counter bumped in a function of its
/// own (a BPF-to-BPF call): the difference between the two is what one
/// such call costs on the machine (scanwatch's programs make one for the
/// window update of every tracked source's probe).
#[xdp]
pub fn scanwatch_floor_call(ctx: XdpContext) -> u32 {
    if let Some(slot) = floor_slot(&ctx) {
        bump_floor_counter(slot);
    }
    xdp_action::XDP_PASS
}

/// Counters of [`FLOOR_IFACE_COUNTERS`]: one per interface, by ifindex
/// modulo this (the least a per-interface count can do: no slot table).
const FLOOR_IFACES: u32 = 256;

/// Per-interface, per-CPU packet counters of `scanwatch_floor_validated`.
#[map]
static FLOOR_IFACE_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(FLOOR_IFACES, 0);

/// The least a detector can do that finds a benign segment no probe as
/// scanwatch's general walk finds it and counts it per interface: one
/// bounds check; the Ethernet type, the IPv4 version and header length,
/// the fragment field, the protocol, the TCP header's length inside the
/// datagram and the datagram inside the frame checked; the flags no probe
/// (`is_tcp_probe`); one per-CPU counter of the packet's interface (its
/// ingress ifindex, one add). No web sampling and no blocklist test (the
/// benign rows measure those apart). The benchmarks compare scanwatch's
/// benign path with it besides `scanwatch_floor_count`.
#[xdp]
pub fn scanwatch_floor_validated(ctx: XdpContext) -> u32 {
    if validated_not_probe(&ctx)
        && let Some(counter) =
            FLOOR_IFACE_COUNTERS.get_ptr_mut(ctx.ingress_ifindex() as u32 % FLOOR_IFACES)
    {
        // SAFETY: this CPU's value of a live per-CPU map entry.
        unsafe { *counter += 1 };
    }
    xdp_action::XDP_PASS
}

/// Whether the frame is an untagged IPv4 TCP segment with a 20-byte IP
/// header, not a fragment, its lengths consistent, whose flags make it no
/// probe (what scanwatch's `fast::benign` checks before its own tests).
#[inline(always)]
fn validated_not_probe(ctx: &XdpContext) -> bool {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 54 > end {
        return false;
    }
    let p = start as *const u8;
    // SAFETY: every read lies within the 54 bytes checked above.
    let (head, total_len, frag, proto, data_offset, flags) = unsafe {
        (
            [*p.add(12), *p.add(13), *p.add(14)],
            usize::from(u16::from_be_bytes([*p.add(16), *p.add(17)])),
            u16::from_be_bytes([*p.add(20), *p.add(21)]),
            *p.add(23),
            usize::from(*p.add(46) >> 4) * 4,
            *p.add(47),
        )
    };
    !is_tcp_probe(flags)
        && head == [0x08, 0x00, 0x45]
        && frag & 0x3fff == 0
        && proto == 6
        && data_offset >= 20
        && total_len >= 20 + data_offset
        && 14 + total_len <= end - start
}

/// The counter of the floors' frame: 1 for a plain IPv4 TCP segment that
/// is no SYN, else 0; None for a frame shorter than the headers read.
#[inline(always)]
fn floor_slot(ctx: &XdpContext) -> Option<u32> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 54 > end {
        return None;
    }
    let p = start as *const u8;
    // SAFETY: the 54 bytes read from lie inside the packet (checked above).
    let (ethertype, version_ihl, protocol, flags) =
        unsafe { ([*p.add(12), *p.add(13)], *p.add(14), *p.add(23), *p.add(47)) };
    let plain_tcp = ethertype == [0x08, 0x00] && version_ihl == 0x45 && protocol == 6;
    Some(u32::from(plain_tcp && flags & 0x02 == 0))
}

/// Bumps `FLOOR_COUNTERS[slot]`.
#[inline(always)]
fn bump_counter(slot: u32) {
    if let Some(counter) = FLOOR_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: this CPU's value of a live per-CPU map entry.
        unsafe { *counter += 1 };
    }
}

/// [`bump_counter`] in a function of its own, never inlined.
#[inline(never)]
#[unsafe(no_mangle)]
fn bump_floor_counter(slot: u32) -> u32 {
    bump_counter(slot);
    0
}

/// The least an exact-match blocklist can do: one bounds check, the IPv4
/// source read in place, one hash lookup. The benchmarks compare the drop
/// path with it.
#[xdp]
pub fn scanwatch_floor_blocklist(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 34 > end {
        return xdp_action::XDP_PASS;
    }
    let p = start as *const u8;
    // SAFETY: the 34 bytes read from lie inside the packet (checked above).
    let (ethertype, source) = unsafe {
        (
            [*p.add(12), *p.add(13)],
            [*p.add(26), *p.add(27), *p.add(28), *p.add(29)],
        )
    };
    if ethertype == [0x08, 0x00] && FLOOR_HOSTS.get_ptr(SourceKey::v4(source)).is_some() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// The least a detector that counts every new source in a bounded table
/// can do: one bounds check, the source (IPv4 or IPv6) read in place and
/// hashed, its slot of a table the size of scanwatch's admission table
/// read and written back (the source's count, or a new source's first),
/// stamped with the clock read as `jiffies` (one load once the verifier
/// inlines it; scanwatch's own clock reads `jiffies` and a cached time).
/// Counting needs the read: a blind store (this program before) cannot
/// tell a source's second probe from its first, and costs less because a
/// store does not wait for its line (docs/benchmarks.md). The benchmarks
/// compare scanwatch's new-source path with it (TEST_RUN and the flood).
#[xdp]
pub fn scanwatch_floor_admit(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 54 > end {
        return xdp_action::XDP_PASS;
    }
    let p = start as *const u8;
    // SAFETY: the 54 bytes read from lie inside the packet (checked above).
    let key = unsafe {
        match [*p.add(12), *p.add(13)] {
            [0x08, 0x00] => [
                u64::from(core::ptr::read_unaligned(p.add(26).cast::<u32>())),
                0,
            ],
            [0x86, 0xdd] => [
                core::ptr::read_unaligned(p.add(22).cast::<u64>()),
                core::ptr::read_unaligned(p.add(30).cast::<u64>()),
            ],
            _ => return xdp_action::XDP_PASS,
        }
    };
    let hash = key_hash(key);
    if let Some(slot) = FLOOR_ADMISSION.get_ptr_mut((hash as u32) & (DEFAULT_ADMISSION_SLOTS - 1)) {
        // SAFETY: helper without preconditions; a live map value.
        unsafe {
            let now = bpf_jiffies64();
            let tag = hash & !0xffff_ffff;
            let head = core::ptr::read_volatile(&raw const (*slot).head);
            let counted = if head & !0xffff_ffff == tag {
                head.wrapping_add(1)
            } else {
                tag | 1
            };
            core::ptr::write_volatile(&raw mut (*slot).head, counted);
            core::ptr::write_volatile(&raw mut (*slot).first, now);
        }
    }
    xdp_action::XDP_PASS
}

/// The least a detector that counts every probe of a tracked source
/// exactly, in one slot that all CPUs update, can do for a SYN: one
/// bounds check, the frame read at fixed offsets (an untagged IPv4 or
/// IPv6 TCP SYN: the Ethernet type, the protocol, the flags), the source
/// hashed, its slot's key compared, one atomic add to its count (the one
/// operation exactness across CPUs needs), the time of the probe (`jiffies`)
/// stored. A source not in its slot takes it (plain stores: the
/// benchmark's first run). No window, no distinct-destination sets, no
/// first contacts, no signatures. The benchmarks compare the tracked
/// source's SYN with it.
#[xdp]
pub fn scanwatch_floor_tracked(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 54 > end {
        return xdp_action::XDP_PASS;
    }
    let p = start as *const u8;
    // SAFETY: the 54 bytes read from lie inside the packet (checked above),
    // and the 74 an IPv6 SYN is read from (checked in its arm).
    let (key, syn) = unsafe {
        match [*p.add(12), *p.add(13)] {
            [0x08, 0x00] if *p.add(23) == 6 => (
                [
                    u64::from(core::ptr::read_unaligned(p.add(26).cast::<u32>())),
                    0,
                ],
                *p.add(47) & 0x02 != 0,
            ),
            [0x86, 0xdd] if start + 74 <= end && *p.add(20) == 6 => (
                [
                    core::ptr::read_unaligned(p.add(22).cast::<u64>()),
                    core::ptr::read_unaligned(p.add(30).cast::<u64>()),
                ],
                *p.add(67) & 0x02 != 0,
            ),
            _ => return xdp_action::XDP_PASS,
        }
    };
    if !syn {
        return xdp_action::XDP_PASS;
    }
    let hash = key_hash(key);
    if let Some(slot) = FLOOR_TRACKED.get_ptr_mut((hash as u32) & (TRACKED_SLOTS - 1)) {
        // SAFETY: helper without preconditions; a live map value.
        unsafe {
            let now = bpf_jiffies64();
            if core::ptr::read_volatile(&raw const (*slot).key) == key {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*slot).probes, 1);
            } else {
                core::ptr::write_volatile(&raw mut (*slot).key, key);
                core::ptr::write_volatile(&raw mut (*slot).probes, 1);
            }
            core::ptr::write_volatile(&raw mut (*slot).last_seen, now);
        }
    }
    xdp_action::XDP_PASS
}

/// What one line of a table costs a packet, by the table's size: reads and
/// writes back one 64-byte line of [`FLOOR_SPAN`], chosen by a hash of the
/// IPv4 source among 2^b lines spaced 2^s lines apart, b being the high
/// byte of the TCP destination port and s its low byte (2^(b + s) at most
/// 2^19 lines: 32 MiB). The benchmark runs it with a fresh source each
/// run: the line a new source costs, for tables of 64 KiB to 32 MiB
/// (s = 0), and for one line on each of many pages (s = 6: a 4 KiB page
/// a line), which tells the cache from the TLB (docs/benchmarks.md "A new
/// source").
#[xdp]
pub fn scanwatch_floor_span(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 54 > end {
        return xdp_action::XDP_PASS;
    }
    let p = start as *const u8;
    // SAFETY: the 54 bytes read from lie inside the packet (checked above).
    let (source, bits, spacing) = unsafe {
        (
            u64::from(core::ptr::read_unaligned(p.add(26).cast::<u32>())),
            u32::from(*p.add(36)).min(19),
            u32::from(*p.add(37)).min(19),
        )
    };
    let line =
        (((key_hash([source, 0]) as u32) & ((1u32 << bits) - 1)) << spacing) & (SPAN_LINES - 1);
    if let Some(slot) = FLOOR_SPAN.get_ptr_mut(line) {
        // SAFETY: a live map value.
        unsafe {
            let v = core::ptr::read_volatile(&raw const (*slot)[0]);
            core::ptr::write_volatile(&raw mut (*slot)[0], v.wrapping_add(1));
        }
    }
    xdp_action::XDP_PASS
}

/// Sends every frame back out of the interface it came in on: with
/// BPF_PROG_TEST_RUN's live-frames mode this is the benchmarks' packet
/// generator.
#[xdp]
pub fn scanwatch_bench_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// Frame offset of the IPv4 header's identification field (untagged
/// Ethernet, 14 bytes).
const IPV4_ID: usize = 18;
/// Frame offset of the low 16 bits of the IPv4 source address.
const IPV4_SOURCE_LOW: usize = 28;
/// Frame offset of bytes 4..8 of the IPv6 source address (the second 32
/// bits of its /64 prefix).
const IPV6_SOURCE_NET: usize = 26;

/// Sends every frame back out like [`scanwatch_bench_tx`], first giving it
/// a fresh pseudo-random source (`bpf_get_prandom_u32`): with live frames,
/// a random-source flood, every packet (nearly) a new source. By the
/// frame's EtherType (untagged Ethernet only; other frames go out as they
/// are):
///
/// - IPv4: r in the source address's low 16 bits and !r in the IP ID. The
///   two words always add up to 0xffff (one's-complement zero), so the
///   header checksum of a frame built with ID + source low word = 0xffff
///   stays valid whatever r is; the sources cover the /16 of the frame's
///   source;
/// - IPv6: r in bytes 4..8 of the source address, a fresh /64 each time
///   inside the frame's /32 (IPv6 has no header checksum; the TCP checksum,
///   which XDP never validates, goes stale and the receiving stack drops
///   the frame, which a flood does not mind).
///
/// The writes are stateless: live-frames mode does not restore a recycled
/// frame's data, and none is needed.
#[xdp]
pub fn scanwatch_bench_flood(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    // Both families' writes end by byte 30 (IPv6 source bytes 4..8 at 26..30).
    if start + IPV6_SOURCE_NET + 4 > end {
        return xdp_action::XDP_TX;
    }
    let p = start as *mut u8;
    // SAFETY: bytes 12 and 13 lie inside the packet (checked above).
    let ethertype = unsafe { [*p.add(12), *p.add(13)] };
    // SAFETY: a helper without arguments.
    let r = unsafe { bpf_get_prandom_u32() };
    match ethertype {
        [0x08, 0x00] => {
            let low = (r as u16).to_be_bytes();
            let id = (!(r as u16)).to_be_bytes();
            // SAFETY: bytes 18..20 and 28..30 lie inside the packet (checked above).
            unsafe {
                *p.add(IPV4_ID) = id[0];
                *p.add(IPV4_ID + 1) = id[1];
                *p.add(IPV4_SOURCE_LOW) = low[0];
                *p.add(IPV4_SOURCE_LOW + 1) = low[1];
            }
        }
        [0x86, 0xdd] => {
            let net = r.to_ne_bytes();
            // SAFETY: bytes 26..30 lie inside the packet (checked above).
            unsafe {
                *p.add(IPV6_SOURCE_NET) = net[0];
                *p.add(IPV6_SOURCE_NET + 1) = net[1];
                *p.add(IPV6_SOURCE_NET + 2) = net[2];
                *p.add(IPV6_SOURCE_NET + 3) = net[3];
            }
        }
        _ => {}
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
