//! scanwatch XDP program: classifies every ingress packet, counts probes per
//! source in a bounded LRU map and per interface in per-CPU counters. It never
//! drops: every packet, parseable or not, gets `XDP_PASS`.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod parse;
mod window;

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::generated::bpf_ktime_get_boot_ns,
    macros::{map, xdp},
    maps::{HashMap, LruHashMap, PerCpuHashMap, RingBuf},
    programs::XdpContext,
};
use scanwatch_common::{
    Counter, DetectConfig, IfaceCounters, IfaceName, ScanEvent, SourceKey, SourceStats,
    maps::{COUNTER_SLOTS, DEFAULT_SOURCE_MAP_SIZE, EVENTS_BYTES, MAX_INTERFACES},
};

use crate::parse::{Outcome, ParseError, Probe, parse};

/// Detection settings, set by the agent at load time.
#[unsafe(no_mangle)]
static DETECT_CONFIG: DetectConfig = DetectConfig::DISABLED;

/// Threshold crossings for the agent: at most one per source, trigger and window.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

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

/// Initial map values, inserted from globals: too large for the BPF stack.
static EMPTY_SOURCE: SourceStats = SourceStats::ZERO;
static ZERO_COUNTERS: IfaceCounters = IfaceCounters::ZERO;

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
            track_source(&probe, ifindex, counters);
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
    #[allow(
        clippy::needless_borrows_for_generic_args,
        reason = "by reference: a copy would not fit the BPF stack"
    )]
    let _ = IFACE_COUNTERS.insert(ifindex, &ZERO_COUNTERS, u64::from(BPF_NOEXIST));
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
fn track_source(probe: &Probe, ifindex: u32, counters: *mut IfaceCounters) {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: a volatile read keeps LLVM from folding the load-time value.
    let cfg = unsafe { core::ptr::read_volatile(&raw const DETECT_CONFIG) };
    let entry = match SOURCES.get_ptr_mut(probe.source) {
        Some(entry) => entry,
        None => {
            let mut created = false;
            #[allow(
                clippy::needless_borrows_for_generic_args,
                reason = "by reference: a copy would not fit the BPF stack"
            )]
            let inserted = SOURCES.insert(probe.source, &EMPTY_SOURCE, u64::from(BPF_NOEXIST));
            match inserted {
                Ok(()) => {
                    created = true;
                    bump_counter(counters, Counter::SourcesCreated);
                }
                // Another CPU created it between our lookup and insert.
                Err(e) if e == -EEXIST => {}
                Err(_) => {
                    bump_counter(counters, Counter::SourceUpdateErrors);
                    return;
                }
            }
            match SOURCES.get_ptr_mut(probe.source) {
                Some(entry) => {
                    if created {
                        // SAFETY: entry is the live value this CPU just inserted.
                        unsafe {
                            (*entry).first_seen_ns = now;
                            (*entry).window_start_ns = now;
                        }
                    }
                    entry
                }
                None => {
                    bump_counter(counters, Counter::SourceUpdateErrors);
                    return;
                }
            }
        }
    };
    let fresh = window::record(entry, probe, now, ifindex, &cfg);
    if fresh != 0 {
        // SAFETY: entry is live; the window start is a plain read.
        let window_start_ns = unsafe { (*entry).window_start_ns };
        let event = ScanEvent {
            source: probe.source,
            time_ns: now,
            window_start_ns,
            ifindex,
            triggers: fresh,
        };
        match EVENTS.output::<ScanEvent>(&event, 0) {
            Ok(()) => bump_counter(counters, Counter::EventsSent),
            Err(_) => bump_counter(counters, Counter::EventsDropped),
        }
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
