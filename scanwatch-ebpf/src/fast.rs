//! The fast paths of the XDP program: packets recognised with one bounds
//! check and fixed offsets, before the general walk (`packet::walk`,
//! `parse::parse`), reaching the same verdict and leaving the same state
//! the general path would. Anything else takes the general path.
//!
//! - [`benign`]: the most common packet an edge host gets, an untagged
//!   IPv4 TCP segment with a 20-byte IP header, not a fragment, whose flags
//!   make it no probe (an ACK of an established connection): passed and
//!   counted as not a probe, unless the general path has more to do for it
//!   (a source the mitigation prefilter does not rule out, a request's
//!   first segment to a web port).
//! - [`new_source_syn`]: a plain SYN from a source that is not tracked,
//!   its first (it starts waiting for admission) or a repeat of its
//!   waiting one: a random-source SYN flood's every packet; or from a
//!   tracked source, with no first contact to record ([`tracked_syn`]).

use aya_ebpf::programs::XdpContext;
use scanwatch_common::{
    Counter, IfaceCounters, ProbeKind, SourceKey, SourceStats,
    fingerprint::TcpProbe,
    is_tcp_probe, is_tcp_syn,
    maps::{v4_key_words, v6_key_words},
    prefilter,
    sketch::{host_fingerprint, host_fingerprint_v4, port_entry},
    web::{PREFIX_BYTES, starts_request},
};

use crate::{
    DETECT_CONFIG, bump_counter, clock, evidence, iface_counters, may_be_listed_v4, mitigation,
    parse::{Probe, tool_signatures, tool_signatures_on},
    prefilter_v4_word, prefilter_word,
    sources::{self, FirstSyn, WindowHead},
    web,
    window::setting,
};

/// Ethernet, IPv4 and TCP headers without options.
const HEADERS: usize = 14 + 20 + 20;

/// Whether the frame is a benign TCP segment as described above, with
/// nothing more to do for it than counting it as not a probe.
#[inline(always)]
pub fn benign(ctx: &XdpContext) -> bool {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + HEADERS > end {
        return false;
    }
    let p = start as *const u8;
    // Probes leave first.
    // SAFETY: inside the HEADERS bytes checked above.
    if is_tcp_probe(unsafe { *p.add(47) }) {
        return false;
    }
    // SAFETY: every read below lies within the HEADERS bytes checked above.
    let (head, total_len, frag, proto, data_offset, dst_port) = unsafe {
        (
            // Ethernet type (0x0800) and the IPv4 version and IHL (0x45).
            [*p.add(12), *p.add(13), *p.add(14)],
            usize::from(u16::from_be_bytes([*p.add(16), *p.add(17)])),
            u16::from_be_bytes([*p.add(20), *p.add(21)]),
            *p.add(23),
            usize::from(*p.add(46) >> 4) * 4,
            u16::from_be_bytes([*p.add(36), *p.add(37)]),
        )
    };
    // Not a fragment (no offset, no more-fragments flag); the TCP header
    // lies inside the datagram, the datagram inside the frame.
    if head != [0x08, 0x00, 0x45]
        || frag & 0x3fff != 0
        || proto != 6
        || data_offset < 20
        || total_len < 20 + data_offset
        || 14 + total_len > end - start
    {
        return false;
    }
    if web::enabled() && web::web_port(dst_port) && total_len - 20 - data_offset >= PREFIX_BYTES {
        let l7 = 34 + data_offset;
        if start + l7 + PREFIX_BYTES > ctx.data_end() {
            return false;
        }
        // SAFETY: the PREFIX_BYTES bytes at l7 lie inside the frame (checked above).
        let prefix = unsafe { &*((start + l7) as *const [u8; PREFIX_BYTES]) };
        if starts_request(prefix) {
            return false;
        }
    }
    let state = mitigation();
    let dropping = state.drops();
    if dropping {
        // SAFETY: inside the HEADERS bytes checked above.
        let source =
            unsafe { u32::from_be_bytes([*p.add(26), *p.add(27), *p.add(28), *p.add(29)]) };
        if may_be_listed_v4(source, state) {
            return false;
        }
    }
    // Counted as the general path would: a packet, not a probe.
    let Some(counters) = iface_counters(ctx.ingress_ifindex() as u32) else {
        return true;
    };
    bump_counter(counters, Counter::Packets);
    bump_counter(counters, Counter::NotProbe);
    true
}

/// Ethernet, IPv6 and TCP headers without options or extension headers.
const HEADERS_V6: usize = 14 + 40 + 20;

/// A new source's first SYN, or a waiting source's repeat of it: a plain
/// SYN (an untagged IPv4 frame with a 20-byte header, or IPv6 with no
/// extension header; not a fragment; the lengths as the general walk
/// wants them) from a source that is not tracked, nor possibly listed
/// (the mitigation prefilter). Every packet of a random-source SYN flood
/// is one. It starts waiting in its admission slot, or is counted as a
/// repeat there (`sources::first_syn`), with the counters the general
/// path would bump, and nothing else is done: no walk, no `Probe`, no
/// tool signatures (only a counted probe needs them). A SYN of a tracked
/// source goes on to [`tracked_syn`]. False, with nothing changed, for
/// anything else: the general path takes it.
///
/// The source key's words are built in registers
/// (`scanwatch_common::maps::v4_key_words`): as bytes on the stack, the
/// verifier's count of the program rose by 230,000.
#[inline(always)]
pub fn new_source_syn(ctx: &XdpContext, counters: *mut IfaceCounters) -> bool {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + HEADERS > end {
        return false;
    }
    let p = start as *const u8;
    let len = end - start;
    let state = mitigation();
    // SAFETY: every read lies within the HEADERS (IPv4) or HEADERS_V6
    // (IPv6) bytes checked.
    let (words, port, host, v6) = unsafe {
        let be16 = |at: usize| u16::from_be_bytes([*p.add(at), *p.add(at + 1)]);
        if [*p.add(12), *p.add(13), *p.add(14)] == [0x08, 0x00, 0x45] {
            let total_len = usize::from(be16(16));
            let data_offset = usize::from(*p.add(46) >> 4) * 4;
            // Not a fragment; TCP; the TCP header (with its options) inside
            // the datagram, the datagram inside the frame.
            if be16(20) & 0x3fff != 0
                || *p.add(23) != 6
                || data_offset < 20
                || total_len < 20 + data_offset
                || 14 + total_len > len
                || !is_tcp_syn(*p.add(47))
            {
                return false;
            }
            let source = [*p.add(26), *p.add(27), *p.add(28), *p.add(29)];
            if state.drops() && may_be_listed_v4(u32::from_be_bytes(source), state) {
                return false;
            }
            let v4_mask = setting(&raw const DETECT_CONFIG.v4_mask);
            (
                v4_key_words(source, v4_mask),
                be16(36),
                host_fingerprint_v4([*p.add(30), *p.add(31), *p.add(32), *p.add(33)]),
                false,
            )
        } else if [*p.add(12), *p.add(13)] == [0x86, 0xdd] {
            if start + HEADERS_V6 > end {
                return false;
            }
            let payload_len = usize::from(be16(18));
            let data_offset = usize::from(*p.add(66) >> 4) * 4;
            // Version 6; TCP with no extension header; not a jumbogram;
            // the TCP header inside the payload, the payload inside the frame.
            if *p.add(14) >> 4 != 6
                || *p.add(20) != 6
                || payload_len == 0
                || 54 + payload_len > len
                || data_offset < 20
                || payload_len < data_offset
                || !is_tcp_syn(*p.add(67))
            {
                return false;
            }
            let source = &*p.add(22).cast::<[u8; 16]>();
            if state.drops()
                && prefilter::may_match(
                    source,
                    state.prefilter_levels,
                    state.prefilter_mask,
                    prefilter_word,
                    prefilter_v4_word,
                )
            {
                return false;
            }
            let v6_mask =
                core::ptr::read_volatile((&raw const DETECT_CONFIG.v6_mask).cast::<[u64; 2]>());
            let addr = [
                core::ptr::read_unaligned(p.add(22).cast::<u64>()),
                core::ptr::read_unaligned(p.add(30).cast::<u64>()),
            ];
            (
                v6_key_words(addr, v6_mask),
                be16(56),
                host_fingerprint(&*p.add(38).cast::<[u8; 16]>()),
                true,
            )
        } else {
            return false;
        }
    };
    let port = port_entry(port, false);
    match sources::first_syn(words, port, host, counters) {
        FirstSyn::Done => true,
        FirstSyn::General => false,
        FirstSyn::Tracked(entry) => {
            let probe = Probe {
                kind: ProbeKind::Syn,
                source: SourceKey::from_words(words),
                host,
                port,
                sigs: 0,
            };
            tracked_syn(ctx, entry, probe, v6, counters)
        }
    }
}

/// A plain SYN (as [`new_source_syn`] reads it) of a tracked source (slot
/// `entry`) that has no first contact to record (a repeat of the only
/// destination of its window, a source the reply-aware test decided, the
/// detector off): its signatures read at fixed offsets (unless its
/// window's tally is settled: `sources::WindowHead::tally_settled`), then
/// counted as the general path counts it (`sources::count`). False, with
/// nothing changed, for a SYN with a first contact: the general path
/// records it. The window's start and `crossed` word are read once for
/// both tests (`sources::WindowHead`).
#[inline(always)]
fn tracked_syn(
    ctx: &XdpContext,
    entry: *mut SourceStats,
    mut probe: Probe,
    v6: bool,
    counters: *mut IfaceCounters,
) -> bool {
    let now = clock::now();
    let head = WindowHead::read(entry, now);
    if sources::tracked_records_contact(&probe, entry, head) {
        return false;
    }
    // Signatures only while they can change what the window's tally names.
    if tool_signatures_on() && !head.tally_settled() {
        let fields = if v6 {
            syn_fields::<54>(ctx)
        } else {
            syn_fields::<34>(ctx)
        };
        let Some(fields) = fields else {
            return false;
        };
        probe.sigs = tool_signatures(&fields);
    }
    bump_counter(counters, Counter::probe(ProbeKind::Syn));
    let at = evidence::At {
        ifindex: ctx.ingress_ifindex() as u32,
        now,
        counters,
    };
    sources::count(ctx, &probe, entry, &at, mitigation().tag_feeds != 0);
    true
}

/// The fields of a plain SYN the scanner-tool signatures read (as
/// `parse::tcp_fields` reads them), its TCP header at `TCP` (34: IPv4,
/// 54: IPv6; its options inside the datagram, as [`new_source_syn`]
/// checked).
#[inline(always)]
fn syn_fields<const TCP: usize>(ctx: &XdpContext) -> Option<TcpProbe> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + TCP + 20 > end {
        return None;
    }
    let p = start as *const u8;
    // SAFETY: every read lies within the bytes checked (the options' head
    // after a check of its own).
    unsafe {
        let data_offset = usize::from(*p.add(TCP + 12) >> 4) * 4;
        let options_head = if data_offset >= 24 {
            if start + TCP + 24 > end {
                return None;
            }
            *p.add(TCP + 20).cast::<[u8; 4]>()
        } else {
            [0; 4]
        };
        // The IPv4 header's IP ID and destination.
        let v4 = (TCP == 34).then(|| {
            (
                u16::from_be_bytes([*p.add(18), *p.add(19)]),
                u32::from_be_bytes([*p.add(30), *p.add(31), *p.add(32), *p.add(33)]),
            )
        });
        Some(TcpProbe::of_header(
            &*p.add(TCP).cast::<[u8; 20]>(),
            v4,
            options_head,
        ))
    }
}
