//! Attribution, kernel side: for the probes of tracked sources only (never
//! on the benign path, nor for a source waiting for admission), the
//! scanner-tool signatures each TCP probe matches, tallied in two bytes of
//! the source's `crossed` word (`scanwatch_common::fingerprint`), and the
//! evidence packets of sources that crossed a threshold in their window
//! (`scanwatch_common::evidence`).

use core::intrinsics::{AtomicOrdering, atomic_or, atomic_xadd};

use aya_ebpf::{
    helpers::generated::bpf_xdp_load_bytes, macros::map, maps::RingBuf, programs::XdpContext,
};
use scanwatch_common::{
    Counter, IfaceCounters, ProbeKind, SourceStats,
    evidence::{
        EVIDENCE_BYTES, EVIDENCE_RING_BYTES, EVIDENCE_SHIFT, EvidenceRecord, MAX_EVIDENCE_PACKETS,
        sent,
    },
    fingerprint::{TcpProbe, signatures, tally_bits},
    trigger,
};

use crate::{
    DETECT_CONFIG, bump_counter,
    packet::{Packet, ParseError},
    parse::{Found, Probe},
    window::setting,
};

/// Evidence packets for the agent (see `scanwatch_common::evidence`).
#[map]
static EVIDENCE: RingBuf = RingBuf::with_byte_size(EVIDENCE_RING_BYTES, 0);

const TCP_SYN: u8 = 0x02;

/// Where and when the probe arrived, and the interface's counters.
pub struct At {
    pub ifindex: u32,
    pub now: u64,
    pub counters: *mut IfaceCounters,
}

/// The attribution steps for a probe recorded in its source's slot
/// `entry`. Not inlined: a subprogram of its own keeps the verifier's walk
/// of the caller's paths from multiplying by its branches.
#[inline(never)]
pub fn attribute(ctx: &XdpContext, entry: *mut SourceStats, found: &Found, probe: &Probe, at: &At) {
    let pkt = Packet::new(ctx);
    // A header the parser read cannot be cut short here; nothing to count.
    let _ = tally(entry, pkt, found);
    offer(ctx, entry, probe, at);
}

/// Tallies the signatures of a TCP probe with a whole header (SYN and
/// stealth probes; not a tiny first fragment): one read of `crossed`, and
/// a fetch-or only when the probe adds a bit (the first probe of a window,
/// or a tool that changes its fields).
#[inline(always)]
fn tally(
    entry: *mut SourceStats,
    pkt: Packet<'_, XdpContext>,
    found: &Found,
) -> Result<(), ParseError> {
    if !matches!(found.kind, ProbeKind::Syn | ProbeKind::Stealth) || !found.ip.l4_holds(20) {
        return Ok(());
    }
    let ip = found.ip;
    let tcp = pkt.bytes::<20>(ip.l4)?;
    let options_len = (tcp[12] >> 4).saturating_mul(4).saturating_sub(20);
    let options_head = if options_len >= 4 && ip.l4_holds(24) {
        *pkt.bytes::<4>(ip.l4 + 20)?
    } else {
        [0; 4]
    };
    let (ip_id, dst_v4) = if ip.v6 {
        (0, 0)
    } else {
        let h = pkt.bytes::<20>(ip.l3)?;
        (
            u16::from_be_bytes([h[4], h[5]]),
            u32::from_be_bytes([h[16], h[17], h[18], h[19]]),
        )
    };
    let probe = TcpProbe {
        v4: !ip.v6,
        ip_id,
        dst_v4,
        dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        window: u16::from_be_bytes([tcp[14], tcp[15]]),
        syn: tcp[13] & TCP_SYN != 0,
        options_len,
        options_head,
    };
    let bits = tally_bits(signatures(&probe));
    // SAFETY: `entry` is a live map value for this program run.
    unsafe {
        let crossed_p = &raw mut (*entry).crossed;
        if core::ptr::read_volatile(crossed_p) & bits != bits {
            atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(crossed_p, bits);
        }
    }
    Ok(())
}

/// Hands the agent this probe's frame (its first [`EVIDENCE_BYTES`]) when
/// its source crossed a threshold in this window (with this probe or
/// before) and has sent fewer than `evidence_packets` of them; a full ring
/// loses the record, counted.
#[inline(always)]
fn offer(ctx: &XdpContext, entry: *mut SourceStats, probe: &Probe, at: &At) {
    let At {
        ifindex,
        now,
        counters,
    } = *at;
    let budget = setting(&raw const DETECT_CONFIG.evidence_packets).min(MAX_EVIDENCE_PACKETS);
    // SAFETY: `entry` is a live map value for this program run.
    let crossed_p = unsafe { &raw mut (*entry).crossed };
    // SAFETY: as above.
    let crossed = unsafe { core::ptr::read_volatile(crossed_p) };
    if crossed as u32 & trigger::ALL == 0 || sent(crossed) >= budget {
        return;
    }
    // SAFETY: as above (the count may overshoot by the CPUs racing here,
    // which the byte's room above MAX_EVIDENCE_PACKETS absorbs).
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(crossed_p, 1 << EVIDENCE_SHIFT) };
    let Some(mut slot) = EVIDENCE.reserve::<EvidenceRecord>(0) else {
        bump_counter(counters, Counter::EvidenceDropped);
        return;
    };
    let frame_len = ctx.data_end() - ctx.data();
    let captured = frame_len.min(EVIDENCE_BYTES);
    let record = slot.as_mut_ptr();
    // SAFETY: `record` points to the reserved sample, ours until submitted.
    unsafe {
        (*record).source = probe.source;
        (*record).time_ns = now;
        (*record).ifindex = ifindex;
        (*record).frame_len = frame_len as u32;
        (*record)._pad = 0;
        (*record).bytes = [0; EVIDENCE_BYTES];
        let copied = captured > 0
            && captured <= EVIDENCE_BYTES
            && bpf_xdp_load_bytes(
                ctx.ctx,
                0,
                (&raw mut (*record).bytes).cast(),
                captured as u32,
            ) == 0;
        (*record).captured = if copied { captured as u32 } else { 0 };
    }
    slot.submit(0);
    bump_counter(counters, Counter::EvidenceSent);
}
