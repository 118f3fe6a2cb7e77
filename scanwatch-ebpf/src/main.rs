//! scanwatch XDP program: classifies every ingress packet, counts probes per
//! source in a bounded LRU map and per interface in per-CPU counters. It never
//! drops: every packet, parseable or not, gets `XDP_PASS`.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod parse;

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::generated::bpf_ktime_get_boot_ns,
    macros::{map, xdp},
    maps::{HashMap, LruHashMap, PerCpuHashMap},
    programs::XdpContext,
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use scanwatch_common::{
    Counter, IfaceCounters, IfaceName, ProbeKind, SourceKey, SourceStats,
    classify::PROBE_KINDS,
    maps::{COUNTER_SLOTS, DEFAULT_SOURCE_MAP_SIZE, MAX_INTERFACES},
};

use crate::parse::{Outcome, ParseError, parse};

/// Per-source probe counters. The agent sets the size at load time.
#[map]
static SOURCES: LruHashMap<SourceKey, SourceStats> =
    LruHashMap::with_max_entries(DEFAULT_SOURCE_MAP_SIZE, 0);

/// Per-interface, per-CPU packet counters, keyed by ifindex.
#[map]
static IFACE_COUNTERS: PerCpuHashMap<u32, IfaceCounters> =
    PerCpuHashMap::with_max_entries(MAX_INTERFACES, 0);

/// ifindex -> name, written by the agent so that other processes (`scanwatch
/// top`) can name interfaces of another network namespace. Unused in the kernel.
#[map]
static IFACE_NAMES: HashMap<u32, IfaceName> = HashMap::with_max_entries(MAX_INTERFACES, 0);

const EEXIST: i32 = 17;

#[xdp]
pub fn scanwatch(ctx: XdpContext) -> u32 {
    match try_scanwatch(&ctx) {
        Ok(action) => action,
        Err(err) => {
            // Unparseable packets are counted and passed, never aborted.
            if let Some(counters) = iface_counters(ctx.ingress_ifindex() as u32) {
                bump_counter(counters, Counter::Packets);
                bump_counter(counters, err.counter());
            }
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn try_scanwatch(ctx: &XdpContext) -> Result<u32, ParseError> {
    let outcome = parse(ctx)?;
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(counters) = iface_counters(ifindex) else {
        return Ok(xdp_action::XDP_PASS);
    };
    bump_counter(counters, Counter::Packets);
    match outcome {
        Outcome::NotIp => bump_counter(counters, Counter::NotIp),
        Outcome::NotProbe => bump_counter(counters, Counter::NotProbe),
        Outcome::Probe(probe) => {
            bump_counter(counters, Counter::probe(probe.kind));
            track_source(&probe.source, probe.kind, ifindex, counters);
        }
    }
    Ok(xdp_action::XDP_PASS)
}

/// This CPU's counters for `ifindex`, created on first use.
#[inline(always)]
fn iface_counters(ifindex: u32) -> Option<*mut IfaceCounters> {
    if let Some(p) = IFACE_COUNTERS.get_ptr_mut(ifindex) {
        return Some(p);
    }
    // Lost races and a full map both end in the lookup below failing or not.
    let _ = IFACE_COUNTERS.insert(ifindex, IfaceCounters::ZERO, u64::from(BPF_NOEXIST));
    IFACE_COUNTERS.get_ptr_mut(ifindex)
}

#[inline(always)]
fn bump_counter(counters: *mut IfaceCounters, counter: Counter) {
    let slot = counter as usize;
    if slot < COUNTER_SLOTS {
        // SAFETY: `counters` points to this CPU's map value; slot is in bounds.
        unsafe { (*counters).counters[slot] += 1 };
    }
}

#[inline(always)]
fn track_source(source: &SourceKey, kind: ProbeKind, ifindex: u32, counters: *mut IfaceCounters) {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if let Some(entry) = SOURCES.get_ptr_mut(source) {
        bump_source(entry, kind, now, ifindex);
        return;
    }
    let fresh = SourceStats::first(kind, now, ifindex);
    match SOURCES.insert(source, fresh, u64::from(BPF_NOEXIST)) {
        Ok(()) => bump_counter(counters, Counter::SourcesCreated),
        // Another CPU created it between our lookup and insert.
        Err(e) if e == -EEXIST => match SOURCES.get_ptr_mut(source) {
            Some(entry) => bump_source(entry, kind, now, ifindex),
            None => bump_counter(counters, Counter::SourceUpdateErrors),
        },
        Err(_) => bump_counter(counters, Counter::SourceUpdateErrors),
    }
}

#[inline(always)]
fn bump_source(entry: *mut SourceStats, kind: ProbeKind, now: u64, ifindex: u32) {
    let idx = kind.index();
    if idx >= PROBE_KINDS {
        return;
    }
    // SAFETY: `entry` is a live map value; the counter add is atomic because
    // several CPUs update the same source; the timestamps are plain stores
    // (a lost race leaves a timestamp a few ns older).
    unsafe {
        let counter = core::ptr::addr_of_mut!((*entry).probes)
            .cast::<u64>()
            .add(idx);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, 1);
        (*entry).last_seen_ns = now;
        (*entry).last_ifindex = ifindex;
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
