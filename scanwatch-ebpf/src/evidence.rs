//! Evidence packets, kernel side (`scanwatch_common::evidence`): the first
//! bytes of the probes of a tracked source that crossed a threshold in its
//! window (the probe that crossed it and the next ones), at most
//! `evidence_packets` a source and window, through a ring buffer. A full
//! ring loses the record, counted, never the packet.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    helpers::generated::bpf_xdp_load_bytes, macros::map, maps::RingBuf, programs::XdpContext,
};
use scanwatch_common::{
    Counter, IfaceCounters, SourceKey, SourceStats,
    evidence::{
        EVIDENCE_BYTES, EVIDENCE_RING_BYTES, EVIDENCE_SHIFT, EvidenceRecord, MAX_EVIDENCE_PACKETS,
        sent,
    },
    trigger,
};

use crate::{DETECT_CONFIG, bump_counter, window::setting};

/// Evidence packets for the agent.
#[map]
static EVIDENCE: RingBuf = RingBuf::with_byte_size(EVIDENCE_RING_BYTES, 0);

/// Where and when the probe arrived, and the interface's counters.
pub struct At {
    pub ifindex: u32,
    pub now: u64,
    pub counters: *mut IfaceCounters,
}

/// [`offer`]s the probe when its source has crossed a threshold in this
/// window and evidence packets are left (a read of a word the probe's
/// recording just wrote; the call only then).
#[inline(always)]
pub fn maybe_offer(ctx: &XdpContext, entry: *mut SourceStats, source: &SourceKey, at: &At) {
    let budget = setting(&raw const DETECT_CONFIG.evidence_packets).min(MAX_EVIDENCE_PACKETS);
    // SAFETY: `entry` is a live map value for this program run.
    let crossed = unsafe { core::ptr::read_volatile(&raw const (*entry).crossed) };
    if crossed as u32 & trigger::ALL != 0 && sent(crossed) < budget {
        offer(ctx, entry, source, at);
    }
}

/// Hands the agent this probe's frame (its first [`EVIDENCE_BYTES`]) when
/// its source (slot `entry`) crossed a threshold in this window, with this
/// probe or before, and has sent fewer than `evidence_packets`.
#[inline(always)]
fn offer(ctx: &XdpContext, entry: *mut SourceStats, source: &SourceKey, at: &At) {
    // SAFETY: `entry` is a live map value for this program run. CPUs racing here may overshoot the budget by one
    // each: the count's byte has room above MAX_EVIDENCE_PACKETS.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            &raw mut (*entry).crossed,
            1 << EVIDENCE_SHIFT,
        )
    };
    let Some(mut slot) = EVIDENCE.reserve::<EvidenceRecord>(0) else {
        bump_counter(at.counters, Counter::EvidenceDropped);
        return;
    };
    let frame_len = ctx.data_end() - ctx.data();
    let captured = frame_len.min(EVIDENCE_BYTES);
    let record = slot.as_mut_ptr();
    // SAFETY: `record` points to the reserved sample, ours until submitted;
    // the copy stays inside its `bytes`.
    unsafe {
        (*record).source = *source;
        (*record).time_ns = at.now;
        (*record).ifindex = at.ifindex;
        (*record).frame_len = frame_len as u32;
        (*record)._pad = 0;
        // A length the verifier sees in 1..=EVIDENCE_BYTES (a frame is
        // never empty; a zero-sized read is refused even on a dead path).
        let len = ((captured as u32).wrapping_sub(1) & (EVIDENCE_BYTES as u32 - 1)) + 1;
        let copied =
            bpf_xdp_load_bytes(ctx.ctx.cast(), 0, (&raw mut (*record).bytes).cast(), len) == 0;
        (*record).captured = if copied { len } else { 0 };
    }
    slot.submit(0);
    bump_counter(at.counters, Counter::EvidenceSent);
}
