//! Web-layer sampling, kernel side (`scanwatch_common::web`): XDP hands the
//! agent the first payload segment of each HTTP/1.x request and TLS
//! ClientHello to a web port; the TC egress program the status code of
//! each HTTP/1.x response from one. Both through `WEB_SAMPLES`; a full
//! ring loses the record, counted, never the packet.

use aya_ebpf::{
    helpers::generated::bpf_xdp_load_bytes,
    macros::map,
    maps::{PerCpuArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use scanwatch_common::web::{
    PORT_WORDS, PREFIX_BYTES, STATUS_BYTES, WEB_COUNTER_SLOTS, WEB_RING_BYTES, WEB_SAMPLE_BYTES,
    WebConfig, WebCounter, WebCounters, WebHeader, WebRequestRecord, WebResponseRecord, record,
    starts_request, status_code,
};

use crate::packet::{IPPROTO_TCP, Ip, Packet, ParseError};

/// Web sampling settings, set by the agent at load time.
#[unsafe(no_mangle)]
static WEB_CONFIG: WebConfig = WebConfig::DISABLED;

/// Request samples and response status codes for the agent.
#[map]
static WEB_SAMPLES: RingBuf = RingBuf::with_byte_size(WEB_RING_BYTES, 0);

/// Per-CPU counters of the sampling (one entry).
#[map]
static WEB_COUNTERS: PerCpuArray<WebCounters> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn enabled() -> bool {
    // SAFETY: a volatile read keeps LLVM from folding the load-time value.
    unsafe { core::ptr::read_volatile(&raw const WEB_CONFIG.enabled) != 0 }
}

/// `port` is a configured web port (one load of its bitmap word).
#[inline(always)]
pub fn web_port(port: u16) -> bool {
    WebConfig::is_web_port(
        |i| {
            // SAFETY: as in `enabled`; the index is masked into the array.
            unsafe {
                core::ptr::read_volatile(&raw const WEB_CONFIG.port_bits[i & (PORT_WORDS - 1)])
            }
        },
        port,
    )
}

#[inline(always)]
fn bump(c: WebCounter) {
    if let Some(counters) = WEB_COUNTERS.get_ptr_mut(0) {
        let slot = c as usize;
        if slot < WEB_COUNTER_SLOTS {
            // SAFETY: this CPU's copy of the one entry; slot in bounds.
            unsafe { (*counters).counters[slot] += 1 };
        }
    }
}

/// Hands the agent the first bytes of a non-probe TCP segment to a web
/// port when they start a request or a ClientHello. Sampling off: one
/// load and a branch; on: a segment without payload, or not to a web port,
/// leaves at the first test that fails.
#[inline(always)]
pub fn sample(
    ctx: &XdpContext,
    pkt: Packet<'_, XdpContext>,
    ip: Ip,
    ifindex: u32,
) -> Result<(), ParseError> {
    if !enabled() || ip.proto != IPPROTO_TCP || !ip.l4_holds(20 + PREFIX_BYTES) {
        return Ok(());
    }
    let tcp = pkt.bytes::<20>(ip.l4)?;
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    if ip.l4_len < data_offset + PREFIX_BYTES || !web_port(u16::from_be_bytes([tcp[2], tcp[3]])) {
        return Ok(());
    }
    let l7 = ip.l4 + data_offset;
    if !starts_request(pkt.bytes::<PREFIX_BYTES>(l7)?) {
        return Ok(());
    }
    let len = ip.l4_len - data_offset;
    let Some(mut slot) = WEB_SAMPLES.reserve::<WebRequestRecord>(0) else {
        bump(WebCounter::RequestsDropped);
        return Ok(());
    };
    let rec = slot.as_mut_ptr();
    // SAFETY: `rec` points to the reserved record, ours until submitted;
    // the copy stays inside its `bytes`.
    let filled = unsafe {
        (*rec).head.kind = record::REQUEST;
        (*rec).head.ifindex = ifindex;
        (*rec).head.time_ns = crate::clock::now();
        (*rec).head.remote_port = u16::from_be_bytes([tcp[0], tcp[1]]);
        (*rec).head.local_port = u16::from_be_bytes([tcp[2], tcp[3]]);
        (*rec).head.segment_len = len as u32;
        (*rec)._pad = 0;
        // A length the verifier sees in 1..=WEB_SAMPLE_BYTES (the segment
        // is not empty).
        let n = ((len.min(WEB_SAMPLE_BYTES) as u32).wrapping_sub(1)
            & (WEB_SAMPLE_BYTES as u32 - 1))
            + 1;
        let copied =
            bpf_xdp_load_bytes(ctx.ctx.cast(), l7 as u32, (&raw mut (*rec).bytes).cast(), n) == 0;
        (*rec).captured = if copied { n } else { 0 };
        addresses(pkt, ip, &raw mut (*rec).head)
    };
    if filled.is_ok() {
        slot.submit(0);
        bump(WebCounter::RequestsSampled);
    } else {
        slot.discard(0);
    }
    Ok(())
}

/// Writes the client's (source) and this host's (destination) addresses
/// into `head`, IPv4-mapped for IPv4.
///
/// # Safety
/// `head` points to a reserved ring record.
#[inline(always)]
unsafe fn addresses(
    pkt: Packet<'_, XdpContext>,
    ip: Ip,
    head: *mut WebHeader,
) -> Result<(), ParseError> {
    // SAFETY: the caller's.
    unsafe {
        if ip.v6 {
            (*head).remote = *pkt.bytes::<16>(ip.l3 + 8)?;
            (*head).local = *pkt.bytes::<16>(ip.l3 + 24)?;
        } else {
            let mapped = |a: &[u8; 4]| {
                [
                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
                ]
            };
            (*head).remote = mapped(pkt.bytes::<4>(ip.l3 + 12)?);
            (*head).local = mapped(pkt.bytes::<4>(ip.l3 + 16)?);
        }
    }
    Ok(())
}

/// TC egress: hands the agent the status code of an HTTP/1.x response from
/// a web port (the start of the segment's payload: read in place when it
/// lies in the linear part, else copied).
#[inline(always)]
pub fn response(ctx: &TcContext, pkt: Packet<'_, TcContext>, ip: Ip, ifindex: u32) {
    let _ = try_response(ctx, pkt, ip, ifindex);
}

#[inline(always)]
fn try_response(
    ctx: &TcContext,
    pkt: Packet<'_, TcContext>,
    ip: Ip,
    ifindex: u32,
) -> Result<(), ParseError> {
    if ip.proto != IPPROTO_TCP || ip.later_fragment() || !ip.l4_holds(20) {
        return Ok(());
    }
    let tcp = pkt.bytes::<20>(ip.l4)?;
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    let local_port = u16::from_be_bytes([tcp[0], tcp[1]]);
    if data_offset < 20 || ip.l4_len < data_offset + STATUS_BYTES || !web_port(local_port) {
        return Ok(());
    }
    let l7 = ip.l4 + data_offset;
    let line = match pkt.bytes::<STATUS_BYTES>(l7) {
        Ok(line) => *line,
        Err(_) => match ctx.load::<[u8; STATUS_BYTES]>(l7) {
            Ok(line) => line,
            Err(_) => return Ok(()),
        },
    };
    let Some(status) = status_code(&line) else {
        return Ok(());
    };
    let remote = ip.dst_addr(pkt)?;
    let local = ip.src_addr(pkt)?;
    let Some(mut slot) = WEB_SAMPLES.reserve::<WebResponseRecord>(0) else {
        bump(WebCounter::ResponsesDropped);
        return Ok(());
    };
    let rec = slot.as_mut_ptr();
    // SAFETY: `rec` points to the reserved record, ours until submitted.
    unsafe {
        (*rec).head = WebHeader {
            kind: record::RESPONSE,
            ifindex,
            time_ns: crate::clock::now(),
            remote,
            local,
            remote_port: u16::from_be_bytes([tcp[2], tcp[3]]),
            local_port,
            segment_len: (ip.l4_len - data_offset) as u32,
        };
        (*rec).status = status;
        (*rec)._pad = 0;
    }
    slot.submit(0);
    bump(WebCounter::ResponsesSampled);
    Ok(())
}
