//! Web-layer sampling, kernel side (`scanwatch_common::web`): XDP hands the
//! agent the first payload segment of each HTTP/1.x request and TLS
//! ClientHello to a web port; the TC egress program the status code of
//! each HTTP/1.x response from one. Both through `WEB_SAMPLES`; a full
//! ring loses the record, counted, never the packet.

use aya_ebpf::{
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_xdp_load_bytes},
    macros::map,
    maps::{PerCpuArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use scanwatch_common::web::{
    MAX_WEB_PORTS, PREFIX_BYTES, STATUS_BYTES, WEB_COUNTER_SLOTS, WEB_RING_BYTES, WEB_SAMPLE_BYTES,
    WebConfig, WebCounter, WebCounters, WebHeader, WebRequestRecord, WebResponseRecord, record,
    starts_request, status_code,
};

use crate::packet::{IPPROTO_TCP, Ip, LINEAR_PART, Packet, ParseError, walk};

/// Web sampling settings, set by the agent at load time.
#[unsafe(no_mangle)]
static WEB_CONFIG: WebConfig = WebConfig::DISABLED;

/// Request samples and response status codes for the agent.
#[map]
static WEB_SAMPLES: RingBuf = RingBuf::with_byte_size(WEB_RING_BYTES, 0);

/// Per-CPU counters of the sampling (one entry).
#[map]
static WEB_COUNTERS: PerCpuArray<WebCounters> = PerCpuArray::with_max_entries(1, 0);

/// A TCP segment with payload to a web port (found by `parse`).
#[derive(Clone, Copy)]
pub struct Segment {
    pub ip: Ip,
    /// Offset of the payload.
    pub l7: usize,
    /// Payload bytes the IP header claims.
    pub len: usize,
    pub remote_port: u16,
    pub local_port: u16,
}

#[inline(always)]
fn enabled() -> bool {
    // SAFETY: a volatile read keeps LLVM from folding the load-time value.
    unsafe { core::ptr::read_volatile(&raw const WEB_CONFIG.enabled) != 0 }
}

/// `port` is a configured web port.
#[inline(always)]
fn web_port(port: u16) -> bool {
    WebConfig::is_web_port(
        |i| {
            // SAFETY: as in `enabled`; `i` < MAX_WEB_PORTS.
            unsafe { core::ptr::read_volatile(&raw const WEB_CONFIG.ports[i % MAX_WEB_PORTS]) }
        },
        port,
    )
}

/// The segment of a non-probe TCP packet whose header is `tcp`, when it
/// carries payload to a web port and sampling is on.
#[inline(always)]
pub fn segment(ip: Ip, tcp: &[u8; 20], data_offset: usize) -> Option<Segment> {
    if ip.l4_len <= data_offset || !enabled() {
        return None;
    }
    let local_port = u16::from_be_bytes([tcp[2], tcp[3]]);
    if !web_port(local_port) {
        return None;
    }
    Some(Segment {
        ip,
        l7: ip.l4 + data_offset,
        len: ip.l4_len - data_offset,
        remote_port: u16::from_be_bytes([tcp[0], tcp[1]]),
        local_port,
    })
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

/// Hands the agent the segment's first bytes when they start a request or
/// a ClientHello.
#[inline(always)]
pub fn sample(
    ctx: &XdpContext,
    pkt: Packet<'_, XdpContext>,
    seg: &Segment,
    ifindex: u32,
) -> Result<(), ParseError> {
    if seg.len < PREFIX_BYTES || !starts_request(pkt.bytes::<PREFIX_BYTES>(seg.l7)?) {
        return Ok(());
    }
    let remote = seg.ip.src_addr(pkt)?;
    let local = seg.ip.dst_addr(pkt)?;
    let Some(mut slot) = WEB_SAMPLES.reserve::<WebRequestRecord>(0) else {
        bump(WebCounter::RequestsDropped);
        return Ok(());
    };
    let rec = slot.as_mut_ptr();
    // SAFETY: `rec` points to the reserved record, ours until submitted;
    // the copy stays inside its `bytes`.
    unsafe {
        (*rec).head = WebHeader {
            kind: record::REQUEST,
            ifindex,
            // SAFETY: helper without preconditions.
            time_ns: bpf_ktime_get_coarse_ns(),
            remote,
            local,
            remote_port: seg.remote_port,
            local_port: seg.local_port,
            segment_len: seg.len as u32,
        };
        (*rec)._pad = 0;
        // A length the verifier sees in 1..=WEB_SAMPLE_BYTES (the segment
        // is not empty).
        let len = ((seg.len.min(WEB_SAMPLE_BYTES) as u32).wrapping_sub(1)
            & (WEB_SAMPLE_BYTES as u32 - 1))
            + 1;
        let copied = bpf_xdp_load_bytes(
            ctx.ctx.cast(),
            seg.l7 as u32,
            (&raw mut (*rec).bytes).cast(),
            len,
        ) == 0;
        (*rec).captured = if copied { len } else { 0 };
    }
    slot.submit(0);
    bump(WebCounter::RequestsSampled);
    Ok(())
}

/// TC egress: hands the agent the status code of an HTTP/1.x response from
/// a web port (the start of the segment's payload, linear or not).
#[inline(always)]
pub fn response(ctx: &TcContext, ifindex: u32) {
    if enabled() {
        let _ = try_response(ctx, ifindex);
    }
}

#[inline(always)]
fn try_response(ctx: &TcContext, ifindex: u32) -> Result<(), ParseError> {
    let pkt = Packet::new(ctx);
    let Some(ip) = walk::<LINEAR_PART, _>(pkt)? else {
        return Ok(());
    };
    if ip.proto != IPPROTO_TCP || ip.later_fragment() || !ip.l4_holds(20) {
        return Ok(());
    }
    let tcp = pkt.bytes::<20>(ip.l4)?;
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    let local_port = u16::from_be_bytes([tcp[0], tcp[1]]);
    if data_offset < 20 || ip.l4_len < data_offset + STATUS_BYTES || !web_port(local_port) {
        return Ok(());
    }
    let Ok(line) = ctx.load::<[u8; STATUS_BYTES]>(ip.l4 + data_offset) else {
        return Ok(());
    };
    let Some(status) = status_code(&line) else {
        return Ok(());
    };
    let record = WebResponseRecord {
        head: WebHeader {
            kind: record::RESPONSE,
            ifindex,
            // SAFETY: helper without preconditions.
            time_ns: unsafe { bpf_ktime_get_coarse_ns() },
            remote: ip.dst_addr(pkt)?,
            local: ip.src_addr(pkt)?,
            remote_port: u16::from_be_bytes([tcp[2], tcp[3]]),
            local_port,
            segment_len: (ip.l4_len - data_offset) as u32,
        },
        status,
        _pad: 0,
    };
    if WEB_SAMPLES.output::<WebResponseRecord>(&record, 0).is_ok() {
        bump(WebCounter::ResponsesSampled);
    } else {
        bump(WebCounter::ResponsesDropped);
    }
    Ok(())
}
