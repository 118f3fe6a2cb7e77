//! Types shared between the scanwatch XDP program (`scanwatch-ebpf`) and the
//! agent (`scanwatch`), plus the packet classification logic.
//!
//! Everything here builds `no_std` for the bpf target and with std on the
//! host, where it is unit-tested.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

pub mod classify;
pub mod contact_table;
pub mod evidence;
pub mod fingerprint;
mod layout;
pub mod maps;
pub mod prefilter;
pub mod sketch;
pub mod tracking;
pub mod trw;
pub mod web;

pub use classify::{
    ProbeKind, classify_icmp, classify_icmpv6, classify_tcp, is_tcp_probe, is_tcp_syn,
};
pub use maps::{
    BlockValue, Counter, DetectConfig, FeedValue, IfaceCounters, IfaceName, LpmData,
    MitigationState, Name32, ScanEvent, SourceKey, SourceStats, block_origin, feed_action, trigger,
};
