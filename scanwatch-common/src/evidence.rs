//! Evidence packets: the kernel hands the agent the headers of the probes
//! of a source that has crossed a threshold in its window (the probe that
//! crossed it and the next ones), at most [`DetectConfig::evidence_packets`](crate::DetectConfig)
//! a source and window, through the `EVIDENCE` ring buffer. Never a packet
//! of a source below every threshold; a full ring loses the record, counted
//! (`Counter::EvidenceDropped`), never the packet.

use crate::SourceKey;

/// Name of the ring buffer.
pub const EVIDENCE_MAP: &str = "EVIDENCE";
/// Size of the ring buffer in bytes (a power of two, a multiple of the page size).
pub const EVIDENCE_RING_BYTES: u32 = 1 << 18;
/// Bytes of a frame a record keeps at most (its headers).
pub const EVIDENCE_BYTES: usize = 128;
/// Most evidence packets a source and window (the count lives in one byte
/// of `SourceStats::crossed`, which concurrent CPUs may overshoot).
pub const MAX_EVIDENCE_PACKETS: u32 = 64;
/// Bit position of that count in `SourceStats::crossed`.
pub const EVIDENCE_SHIFT: u32 = 24;

// Room in the count's byte for CPUs overshooting the budget at once.
const _: () = assert!(MAX_EVIDENCE_PACKETS + 128 < 256);

/// One evidence packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvidenceRecord {
    pub source: SourceKey,
    /// Kernel-clock ns when it arrived.
    pub time_ns: u64,
    pub ifindex: u32,
    /// The frame's length on the wire.
    pub frame_len: u32,
    /// Bytes of `bytes` that hold the frame's start.
    pub captured: u32,
    pub _pad: u32,
    pub bytes: [u8; EVIDENCE_BYTES],
}

crate::layout::assert_layout!(
    EvidenceRecord { source, time_ns, ifindex, frame_len, captured, _pad, bytes },
    size 168,
    align 8
);

/// Evidence packets already sent for the window of a `crossed` word.
#[inline(always)]
pub const fn sent(crossed: u64) -> u32 {
    ((crossed >> EVIDENCE_SHIFT) & 0xff) as u32
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, without padding, valid for any bit pattern.
unsafe impl aya::Pod for EvidenceRecord {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_sits_between_the_tally_and_the_syn_count() {
        assert_eq!(sent(7 << EVIDENCE_SHIFT | 0x7f_7f3f | 5 << 32), 7);
    }
}
