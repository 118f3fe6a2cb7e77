//! The benign fast path of the XDP program: the most common packet an
//! edge host gets — an untagged IPv4 TCP segment with a 20-byte IP header,
//! not a fragment, whose flags make it no probe (an ACK of an established
//! connection) — is recognised with one bounds check and fixed offsets,
//! before the general walk (`packet::walk`, `parse::parse`). It reaches
//! the same verdict the general path would: not a probe, passed, counted
//! as such. Anything else, or a segment the general path has more to do
//! for (a source the mitigation prefilter does not rule out, a request's
//! first segment to a web port), takes the general path.

use aya_ebpf::programs::XdpContext;
use scanwatch_common::{Counter, classify_tcp, web::PREFIX_BYTES, web::starts_request};

use crate::{bump_counter, iface_counters, may_be_listed_v4, mitigation, web};

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
    if classify_tcp(unsafe { *p.add(47) }).is_some() {
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
