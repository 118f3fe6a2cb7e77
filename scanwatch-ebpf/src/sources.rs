//! The source table and the admission table, kernel side (the design is in
//! `scanwatch_common::tracking`). A probe's source is looked up in its two
//! candidate slots of `SOURCES`; a source not there waits in its
//! `ADMISSION` slot until its `admit_after`-th probe of the window, which
//! claims a `SOURCES` slot (a free one, or the one seen least recently)
//! and seeds it with the waiting probes. No map insert, no lock: a source
//! starts waiting with two plain stores (`start_waiting`), and the claims
//! of a slot are compare-and-swaps of one word.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_or, atomic_xadd};

use aya_ebpf::{maps::lpm_trie::Key, programs::XdpContext};
use scanwatch_common::{
    Counter, DetectConfig, IfaceCounters, ProbeKind, ScanEvent, SourceKey, SourceStats,
    fingerprint,
    maps::{host_word, lens, port_word},
    sketch::HOST_ICMP,
    tracking::{
        AdmitMore, AdmitSlot, CONTENDED_NS, HEAD_MORE, MAX_ADMIT_AFTER, admission, bucket, head,
        head_in_window, head_more, head_start, head_tag, index_tag, is_repeat, key_hash,
        rate_bucket, record, repeats, repeats_to_admit, source_tag, tag_place,
    },
    trw::ReplyCounter,
};

use crate::{
    ADMISSION, ADMISSION_MORE, DETECT_CONFIG, EVENTS, FEEDS, SOURCE_TAGS, SOURCES, bump_counter,
    clock,
    contacts::{self, ContactPlan},
    evidence,
    parse::Probe,
    window::{self, NEW_WINDOW, Seen, setting},
};

/// `first_seen_ns` of a slot being set up for a new source: no lookup
/// matches it (0 is a free slot, anything else a source's first probe).
const BUSY: u64 = 1;

/// Where a probe's source lives: its bucket of `SOURCES`, its tag there
/// and its `ADMISSION` slot with that slot's rest in `ADMISSION_MORE`
/// (null when admission is off: `admit_after` 1), computed once for
/// [`tracked`], [`contact_plan`] and [`admit_source`].
pub struct Place {
    bucket: u32,
    tag: u32,
    admit: *mut AdmitSlot,
    more: *mut AdmitMore,
}

impl Place {
    #[inline(always)]
    pub fn of(probe: &Probe) -> Self {
        let hash = key_hash(probe.source.words());
        let slots = setting(&raw const DETECT_CONFIG.source_slots);
        let (admit, more) = if setting(&raw const DETECT_CONFIG.admit_after) > 1 {
            let index = admission(hash, setting(&raw const DETECT_CONFIG.admission_slots)).0;
            match (
                ADMISSION.get_ptr_mut(index),
                ADMISSION_MORE.get_ptr_mut(index),
            ) {
                (Some(admit), Some(more)) => (admit, more),
                _ => (core::ptr::null_mut(), core::ptr::null_mut()),
            }
        } else {
            (core::ptr::null_mut(), core::ptr::null_mut())
        };
        Self {
            bucket: bucket(hash, slots),
            tag: source_tag(hash),
            admit,
            more,
        }
    }
}

/// What [`first_syn`] did with a plain SYN.
pub enum FirstSyn {
    /// Counted: it started waiting, or repeated its waiting SYN.
    Done,
    /// Nothing changed: the general path takes it.
    General,
    /// Nothing changed: its source is tracked, in this slot.
    Tracked(*mut SourceStats),
}

/// The first SYN (to port entry `port`, host fingerprint `host`) of the
/// source whose key words are `words`, if it is neither tracked (no tag
/// of its bucket matches) nor waiting in its admission slot: it starts
/// waiting there, as [`admit`] starts it, with its first contact waiting
/// with it (`ContactsWaiting`, with the reply-aware detector on), and its
/// probe counted; or, waiting already, it repeats its waiting SYN
/// ([`repeat_syn`]). A source that is tracked: its slot, for
/// `fast::tracked_syn`. Nothing changed otherwise (a tag that matches
/// another source's, a waiting source's other probe, admission off): the
/// general path then takes the probe (`fast::new_source_syn`).
#[inline(always)]
pub fn first_syn(words: [u64; 2], port: u32, host: u16, counters: *mut IfaceCounters) -> FirstSyn {
    if setting(&raw const DETECT_CONFIG.admit_after) <= 1 {
        return FirstSyn::General;
    }
    let hash = key_hash(words);
    let tag = source_tag(hash);
    let index = admission(hash, setting(&raw const DETECT_CONFIG.admission_slots)).0;
    let bucket = bucket(hash, setting(&raw const DETECT_CONFIG.source_slots));
    let (word, pair) = tag_place(bucket);
    let (Some(slot), Some(tags)) = (ADMISSION.get_ptr_mut(index), SOURCE_TAGS.get_ptr(word)) else {
        return FirstSyn::General;
    };
    let index_tag = index_tag(tag);
    // SAFETY: plain reads of live map values.
    unsafe {
        let current = core::ptr::read_volatile(&raw const (*slot).head);
        let tags = core::ptr::read_volatile(tags.cast::<u16>().add(pair as usize));
        if tags as u8 == index_tag || (tags >> 8) as u8 == index_tag {
            return find(words, bucket, tag).map_or(FirstSyn::General, FirstSyn::Tracked);
        }
        let now = clock::now();
        let in_window = head_in_window(current, now, setting(&raw const DETECT_CONFIG.window_ns));
        let this = waiting_record(ProbeKind::Syn as u8, port, host, now);
        if in_window && head_tag(current) == tag {
            return if repeat_syn(slot, index, (current, now), this, counters) {
                FirstSyn::Done
            } else {
                FirstSyn::General
            };
        }
        bump_counter(counters, Counter::probe(ProbeKind::Syn));
        if contacts::enabled() {
            contacts::bump(ReplyCounter::ContactsWaiting);
        }
        if in_window {
            bump_counter(counters, Counter::AdmissionOverwritten);
        }
        start_waiting(slot, tag, now, this);
    }
    FirstSyn::Done
}

/// Starts the source with tag `tag` waiting in admission slot `slot` at
/// `now`, its first probe `this` (a [`waiting_record`]), over whatever the
/// slot held: the head, then the first probe, with plain stores (the
/// head without [`HEAD_MORE`]: the slot's rest is not this source's).
/// No locked instruction: a compare-and-swap of the head, on the line the
/// probe has just missed on, cost a new source's SYN about 30 ns
/// (docs/benchmarks.md, "A new source starts waiting with plain
/// stores"). Two CPUs starting sources in one slot at once both store:
/// the later head and the later first probe stand. Of two probes of one
/// source (the same tag), one first probe stands, as a compare-and-swap
/// would have kept one. Of two sources, the slot can be left with one's
/// head and the other's first probe: that source's next probes see one
/// probe of the other as its first (seeded at admission: one port and one
/// host counted that it did not send), the error of a race between two
/// sources of one admission slot within a few nanoseconds, which only a
/// flood makes likely and which then overwrites the slot again.
#[inline(always)]
fn start_waiting(slot: *mut AdmitSlot, tag: u32, now: u64, this: u64) {
    // SAFETY: plain writes of a live map value.
    unsafe {
        core::ptr::write_volatile(&raw mut (*slot).head, head(tag, now));
        core::ptr::write_volatile(&raw mut (*slot).first, this);
    }
}

/// [`first_syn`] for a source waiting in its admission slot `slot` (of
/// `index`; its head `current` as read at `now`): a SYN that repeats its first waiting
/// SYN (`this`, its record) and does not admit it is counted as [`admit`]
/// counts it (a spoofed flood's source that comes back, a retransmit).
/// False, with nothing changed, for anything else (a new destination, the
/// repeat that admits).
#[inline(always)]
fn repeat_syn(
    slot: *mut AdmitSlot,
    index: u32,
    (current, now): (u64, u64),
    this: u64,
    counters: *mut IfaceCounters,
) -> bool {
    let Some(more) = ADMISSION_MORE.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: a plain read and a pointer inside a live map value.
    let (first, head_p) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*slot).first),
            &raw mut (*slot).head,
        )
    };
    if !is_repeat(this, first) {
        return false;
    }
    let rest = Rest {
        head_p,
        current,
        more,
    };
    let (_, repeats) = rest.read();
    if repeat_admits(repeats, now, &raw const DETECT_CONFIG) {
        return false;
    }
    bump_counter(counters, Counter::probe(ProbeKind::Syn));
    count_repeat(&rest, repeats, now, counters);
    true
}

/// The slot of the probe's source if it is tracked, for [`contact_plan`]
/// and the counting after it (one lookup for both).
#[inline(always)]
pub fn tracked(probe: &Probe, place: &Place) -> Option<*mut SourceStats> {
    // The admission slot is read first (its head, read again by
    // `contact_plan` and `admit`): both addresses come from the hash alone,
    // so the CPU fetches the slot's line and the tag word below at once
    // instead of one after the other. A source that is not tracked (every
    // packet of a random-source flood) needs both: the IPv6 flood stream
    // took 182-233 ns a packet with this read, 235-246 without it
    // (`--flood-only` runs of both builds in turn; docs/benchmarks.md).
    if !place.admit.is_null() {
        // SAFETY: a plain read of a live map value.
        let _ = unsafe { core::ptr::read_volatile(&raw const (*place.admit).head) };
    }
    find(probe.source.words(), place.bucket, place.tag)
}

/// What the reply-aware detector does with a probe's first contact:
/// - a source that is not tracked, whose probe starts waiting in its
///   admission slot (a free slot, one whose window is over, or another
///   source's): a SYN's first contact waits in the slot with it
///   (`tracking::RECORD_CONTACT_TAKEN`: the contact table's line is not
///   touched); another probe's contact is recorded unless the slot holds
///   another source that started waiting within [`CONTENDED_NS`] (a table
///   that turns over faster than that: a random-source flood, whose
///   one-probe sources can never cross the reply-aware test);
/// - a source that is not tracked, waiting in its slot: its first SYN's
///   contact, if still waiting there and to this probe's host, is moved to
///   the contact table (`ContactPlan::moved`); the probe's own contact is
///   recorded unless it is a SYN repeating a SYN it waits with ([`admit`]
///   counts the repeat);
/// - a tracked source: recorded unless the probe repeats the only
///   destination the source has probed in the current window (one port
///   and one host in its exact sets, both this probe's): no first
///   contact, and one destination can never cross the test; a
///   single-destination SYN flood, retransmits and a client reconnecting
///   to one service then do not read the contact table. Nor when the test
///   decided in this window that the source scans
///   ([`SourceStats::REPLY_DECIDED`]): the rest of a scan writes nothing.
///
/// Nothing when the detector is off. Reads the words [`count`]
/// reads next.
#[inline(always)]
pub fn contact_plan(
    probe: &Probe,
    place: &Place,
    tracked: Option<*mut SourceStats>,
    now: u64,
) -> ContactPlan {
    match tracked {
        Some(entry) => ContactPlan::new(
            tracked_records_contact(probe, entry, WindowHead::read(entry, now)),
            0,
        ),
        None if contacts::enabled() => untracked_plan(
            probe,
            place,
            now,
            setting(&raw const DETECT_CONFIG.window_ns),
        ),
        None => ContactPlan::NOTHING,
    }
}

#[inline(always)]
fn untracked_plan(probe: &Probe, place: &Place, now: u64, window_ns: u64) -> ContactPlan {
    let slot = place.admit;
    if slot.is_null() {
        return ContactPlan::RECORD;
    }
    let syn = probe.kind == ProbeKind::Syn;
    // SAFETY: plain reads of a live map value.
    unsafe {
        let current = core::ptr::read_volatile(&raw const (*slot).head);
        // (`head_holds` written out: `free` serves the contended test too,
        // and the verifier's count rose by 160,000 with two tests.)
        let age = now.wrapping_sub(head_start(current, now));
        let free = current == 0 || age >= window_ns;
        if free || head_tag(current) != place.tag {
            // The probe starts waiting here ([`admit`]).
            if syn {
                contacts::bump(ReplyCounter::ContactsWaiting);
            }
            return ContactPlan::new(!syn && (free || age >= CONTENDED_NS), 0);
        }
        let first = core::ptr::read_volatile(&raw const (*slot).first);
        let this = waiting_record(probe.kind as u8, probe.port, probe.host, now);
        // The first SYN's contact moves on a probe of its host that does not
        // repeat it: a source that only repeats one SYN (a spoofed flood
        // source, a retransmit) leaves it waiting (one destination can
        // never cross the test) and writes nothing to the contact table.
        let moved = if is_repeat(this, first) {
            0
        } else {
            contacts::take_waiting(&raw mut (*slot).first, first, None, probe.host)
                .map_or(0, |_| first)
        };
        if place.more.is_null() {
            return ContactPlan::new(true, moved);
        }
        // The slot's rest, this source's only with `HEAD_MORE` (masked, no branch).
        let second = core::ptr::read_volatile(&raw const (*place.more).second)
            & 0u64.wrapping_sub(u64::from(head_more(current)));
        ContactPlan::new(
            !repeats_waiting_syn(probe.kind as u8, this, first, second),
            moved,
        )
    }
}

/// A probe as an admission slot records it (`tracking::record`; `port`
/// is a port entry, 0 for none).
#[inline(always)]
fn waiting_record(kind: u8, port: u32, host: u16, now: u64) -> u64 {
    record(kind, (port != 0).then_some(port as u16), host, now)
}

/// Whether a probe (`kind`, its [`waiting_record`] `this`) is a SYN
/// repeating a SYN that waits in its admission slot (`first`, `second`):
/// [`admit`] counts it as a repeat, and it offers no first contact.
#[inline(always)]
fn repeats_waiting_syn(kind: u8, this: u64, first: u64, second: u64) -> bool {
    kind == ProbeKind::Syn as u8 && (is_repeat(this, first) || is_repeat(this, second))
}

/// What a tracked source's probe at `now` reads of its window before
/// counting (`window_start_ns` and `crossed`, read once for the
/// first-contact test, the tally test and the reply-aware test's
/// decision): whether the window goes on (the probe starts none), and its
/// `crossed` word.
#[derive(Clone, Copy)]
pub struct WindowHead {
    running: bool,
    crossed: u64,
}

impl WindowHead {
    /// The window of the source in slot `entry` as a probe at `now` reads it.
    #[inline(always)]
    pub fn read(entry: *mut SourceStats, now: u64) -> Self {
        // SAFETY: plain reads of a live map value.
        unsafe {
            let start = core::ptr::read_volatile(&raw const (*entry).window_start_ns);
            Self {
                running: !window::expired(start, now, setting(&raw const DETECT_CONFIG.window_ns)),
                crossed: core::ptr::read_volatile(&raw const (*entry).crossed),
            }
        }
    }

    /// Whether the reply-aware test decided in this window that the source
    /// scans ([`SourceStats::REPLY_DECIDED`]).
    #[inline(always)]
    pub fn decided(self) -> bool {
        self.running && self.crossed & SourceStats::REPLY_DECIDED != 0
    }

    /// Whether the probe would add nothing the agent reads to its window's
    /// tool tally, so that its signatures need not be read: the window goes
    /// on and its tally is settled (`fingerprint::settled`). (A window
    /// reset racing this read leaves the probe out of the new window's
    /// tally, as a probe racing the reset may be judged on the window
    /// before.)
    #[inline(always)]
    pub fn tally_settled(self) -> bool {
        self.running && fingerprint::settled(self.crossed)
    }
}

/// Whether a tracked source's probe (slot `entry`, its window as read:
/// `head`) has a first contact for the reply-aware detector to record
/// ([`contact_plan`]'s answer for a tracked source; false with the
/// detector off).
#[inline(always)]
pub fn tracked_records_contact(probe: &Probe, entry: *mut SourceStats, head: WindowHead) -> bool {
    contacts::enabled() && tracked_contact(probe, entry, head)
}

/// Whether a tracked source's probe (slot `entry`, its window `head`)
/// offers a first contact ([`contact_plan`]): it has a port, and the
/// source is neither decided in this window nor repeating the only
/// destination of its window.
#[inline(always)]
fn tracked_contact(probe: &Probe, entry: *mut SourceStats, head: WindowHead) -> bool {
    if probe.port == 0 {
        return false;
    }
    if !head.running {
        return true; // this probe starts a new window
    }
    if head.decided() {
        return false;
    }
    // SAFETY: plain reads of a live map value.
    unsafe {
        let l = core::ptr::read_volatile(&raw const (*entry).lens);
        if lens::get(l, lens::PORTS) != 1 || lens::get(l, lens::HOSTS) != 1 {
            return true;
        }
        // One entry each: lane 0 (sets fill from the first lane and are
        // only cleared with the window).
        let sets = window::sets(entry);
        let port = core::ptr::read_volatile(sets.add(port_word(0))) as u32;
        let host = core::ptr::read_volatile(sets.add(host_word(0))) as u16;
        port != probe.port || host & !HOST_ICMP != probe.host & !HOST_ICMP
    }
}

/// The slot of `source` if it is tracked (the egress program's lookup:
/// no probe, no admission).
#[inline(always)]
pub fn tracked_source(source: &SourceKey) -> Option<*mut SourceStats> {
    let words = source.words();
    let hash = key_hash(words);
    let slots = setting(&raw const DETECT_CONFIG.source_slots);
    find(words, bucket(hash, slots), source_tag(hash))
}

/// Whether the reply-aware test decided in the current window of the
/// source in `entry` that it scans ([`SourceStats::REPLY_DECIDED`]).
#[inline(always)]
pub fn decided(entry: *mut SourceStats, now: u64) -> bool {
    WindowHead::read(entry, now).decided()
}

/// Records the test's verdict in the source's slot `entry` for the rest of
/// its window ([`SourceStats::REPLY_DECIDED`]; cleared with the window).
#[inline(always)]
pub fn decide(entry: *mut SourceStats) {
    // SAFETY: a live map value; the other bits of the word are kept.
    unsafe {
        atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(
            &raw mut (*entry).crossed,
            SourceStats::REPLY_DECIDED,
        );
    }
}

/// The slot of the probe's source, which is not tracked: it waits in the
/// admission table (None), or its `admit_after`-th probe of the window
/// claims a slot, returned for [`count`].
#[inline(always)]
pub fn admit_source(
    probe: &Probe,
    place: &Place,
    at: &evidence::At,
    tag_feeds: bool,
) -> Option<*mut SourceStats> {
    admit(
        probe,
        &seen(probe, at.now),
        place,
        (at.ifindex, tag_feeds),
        at.counters,
        &raw const DETECT_CONFIG,
    )
}

/// Counts `probe` in its source's slot `entry` (tracked, or admitted just
/// now): the window update, fresh threshold crossings reported to the
/// agent, and the probe offered as evidence.
#[inline(always)]
pub fn count(
    ctx: &XdpContext,
    probe: &Probe,
    entry: *mut SourceStats,
    at: &evidence::At,
    tag_feeds: bool,
) {
    let (ifindex, now, counters) = (at.ifindex, at.now, at.counters);
    let seen = seen(probe, now);
    let fresh = window::scanwatch_window_record(entry, &seen, ifindex, u32::from(probe.sigs));
    if fresh & NEW_WINDOW != 0 && tag_feeds {
        refresh_known_bad(entry, probe);
    }
    let fresh = fresh & !NEW_WINDOW;
    if fresh != 0 {
        report(entry, probe, fresh, now, ifindex, counters);
    }
    evidence::maybe_offer(ctx, entry, &probe.source, at);
}

/// `probe` at `now` as the window code records it.
#[inline(always)]
fn seen(probe: &Probe, now: u64) -> Seen {
    Seen {
        kind: probe.kind as u8,
        port: probe.port,
        host: probe.host,
        time: now,
        pad: 0,
    }
}

/// The slot of the source whose key is `words` and tag `tag`, among the
/// two of its bucket: `SOURCES` is read only for a slot whose tag matches.
#[inline(always)]
fn find(words: [u64; 2], bucket: u32, tag: u32) -> Option<*mut SourceStats> {
    let (word, pair) = tag_place(bucket);
    let tags = SOURCE_TAGS.get_ptr(word)?.cast::<u16>();
    // SAFETY: a plain read inside a live map value (`pair` < 4 half-words).
    let tags = unsafe { core::ptr::read_volatile(tags.add(pair as usize)) };
    let tag = index_tag(tag);
    for half in 0..2u32 {
        if (tags >> (8 * half)) as u8 != tag {
            continue;
        }
        let entry = SOURCES.get_ptr_mut(2 * bucket + half)?;
        // SAFETY: plain reads of a live map value.
        let matches = unsafe {
            core::ptr::read_volatile(&raw const (*entry).key[0]) == words[0]
                && core::ptr::read_volatile(&raw const (*entry).key[1]) == words[1]
                && core::ptr::read_volatile(&raw const (*entry).first_seen_ns) > BUSY
        };
        if matches {
            return Some(entry);
        }
    }
    None
}

/// The probe's source is not tracked: wait in the admission table, or, on
/// its `admit_after`-th probe of the window, claim a slot and seed it with
/// the waiting probes. Returns the slot.
#[inline(always)]
fn admit(
    probe: &Probe,
    seen: &Seen,
    place: &Place,
    (ifindex, tag_feeds): (u32, bool),
    counters: *mut IfaceCounters,
    cfg: *const DetectConfig,
) -> Option<*mut SourceStats> {
    let now = seen.time;
    // SAFETY: `cfg` points to the settings global.
    let (admit_after, window_ns) = unsafe {
        (
            setting(&raw const (*cfg).admit_after).clamp(1, MAX_ADMIT_AFTER),
            setting(&raw const (*cfg).window_ns),
        )
    };
    if admit_after == 1 {
        return claim(
            probe,
            (place.bucket, place.tag),
            now,
            (ifindex, tag_feeds),
            counters,
            &Waiting {
                records: [0; 2],
                start: now,
                repeats: 0,
                now,
            },
        );
    }
    let (slot, more) = (place.admit, place.more);
    if slot.is_null() || more.is_null() {
        return None;
    }
    let this = waiting_record(seen.kind, seen.port, seen.host, now);
    // SAFETY: `slot` and `more` are live map values; every pointer stays
    // inside them.
    unsafe {
        let head_p = &raw mut (*slot).head;
        let first_p = &raw mut (*slot).first;
        let current = core::ptr::read_volatile(head_p);
        // (A closure, evaluated where used: computed once before the test,
        // the verifier's count rose by 10,000.)
        let in_window = |h: u64| head_in_window(h, now, window_ns);
        if !(head_tag(current) == place.tag && in_window(current)) {
            // This source starts waiting here (a waiting one is overwritten).
            // The slot's rest is not touched: the new head says it is not
            // this source's.
            if in_window(current) {
                bump_counter(counters, Counter::AdmissionOverwritten);
            }
            start_waiting(slot, place.tag, now, this);
            return None;
        }
        let first = core::ptr::read_volatile(first_p);
        let rest = Rest {
            head_p,
            current,
            more,
        };
        let (second, repeats) = rest.read();
        if repeats_waiting_syn(seen.kind, this, first, second) {
            // The same SYN again: admitted only at the SYN rate
            // (`tracking::REPEATS_ADMIT`).
            if !repeats_admit(&rest, repeats, now, cfg, counters) {
                return None;
            }
        } else {
            let waiting = u32::from(first != 0) + u32::from(second != 0);
            if waiting + 1 < admit_after {
                if first == 0 {
                    // The slot's claimer has not written its first probe yet.
                    let _ = atomic_cxchg::<
                        u64,
                        { AtomicOrdering::Relaxed },
                        { AtomicOrdering::Relaxed },
                    >(first_p, 0, this);
                } else {
                    rest.add_second(this, repeats, counters);
                }
                return None;
            }
        }
        // Admission: the CPU that frees the admission slot claims the source slot.
        let (_, won) = atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
            head_p, current, 0,
        );
        if !won {
            // Another CPU is admitting this source right now.
            bump_counter(counters, Counter::SourceUpdateErrors);
            return None;
        }
        let start = head_start(current, now);
        let waiting = Waiting {
            records: [first, second],
            start,
            repeats,
            now,
        };
        claim(
            probe,
            (place.bucket, place.tag),
            start,
            (ifindex, tag_feeds),
            counters,
            &waiting,
        )
    }
}

/// The rest of a waiting source's admission slot (`ADMISSION_MORE`): its
/// second probe and its repeats, this source's only while the head
/// (`current`, as read) has [`HEAD_MORE`].
struct Rest {
    head_p: *mut u64,
    current: u64,
    more: *mut AdmitMore,
}

impl Rest {
    /// The second waiting probe and the repeats word (0 and 0 while the
    /// rest is not this source's). Read either way and masked, without a
    /// branch: only a source that comes back reads its slot's rest, and
    /// one path for both keeps the verifier's states from doubling.
    #[inline(always)]
    fn read(&self) -> (u64, u64) {
        let mask = 0u64.wrapping_sub(u64::from(head_more(self.current)));
        // SAFETY: plain reads of a live map value.
        unsafe {
            (
                core::ptr::read_volatile(&raw const (*self.more).second) & mask,
                core::ptr::read_volatile(&raw const (*self.more).repeats) & mask,
            )
        }
    }

    /// Takes the rest for this source with `second` and `repeats` in it:
    /// both written, then [`HEAD_MORE`] set in the head with a
    /// compare-and-swap from the head as read. False (counted:
    /// `SourceUpdateErrors`) when the head changed meanwhile (another
    /// source took the slot, or this source's probe on another CPU did
    /// this first): the probe is not kept.
    #[inline(always)]
    fn take(&self, second: u64, repeats: u64, counters: *mut IfaceCounters) -> bool {
        // SAFETY: live map values.
        let won = unsafe {
            core::ptr::write_volatile(&raw mut (*self.more).second, second);
            core::ptr::write_volatile(&raw mut (*self.more).repeats, repeats);
            atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                self.head_p,
                self.current,
                self.current | HEAD_MORE,
            )
            .1
        };
        if !won {
            bump_counter(counters, Counter::SourceUpdateErrors);
        }
        won
    }

    /// Keeps `this` as the second waiting probe (`repeats`: the repeats
    /// word as read).
    #[inline(always)]
    fn add_second(&self, this: u64, repeats: u64, counters: *mut IfaceCounters) {
        if head_more(self.current) {
            // SAFETY: a live map value.
            let _ = unsafe {
                atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                    &raw mut (*self.more).second,
                    0,
                    this,
                )
            };
        } else {
            let _ = self.take(this, repeats, counters);
        }
    }
}

/// Counts a repeated SYN in its admission slot's repeats word (`current`
/// as read from `rest`, 0 while the rest is not its source's: it then
/// takes it); whether it admits its source instead (the repeats of its
/// rate bucket reached [`repeats_to_admit`]).
#[inline(always)]
fn repeats_admit(
    rest: &Rest,
    current: u64,
    now: u64,
    cfg: *const DetectConfig,
    counters: *mut IfaceCounters,
) -> bool {
    if repeat_admits(current, now, cfg) {
        return true;
    }
    count_repeat(rest, current, now, counters);
    false
}

/// Whether a repeated SYN admits its source: the repeats of its rate
/// bucket (in the repeats word `current`) reached [`repeats_to_admit`].
#[inline(always)]
fn repeat_admits(current: u64, now: u64, cfg: *const DetectConfig) -> bool {
    // SAFETY: `cfg` points to the settings global.
    let syn_rate = setting(unsafe { &raw const (*cfg).syn_rate });
    repeats::in_bucket(current, rate_bucket(now)) + 1 >= repeats_to_admit(syn_rate)
}

/// Counts a repeated SYN that does not admit its source in the repeats
/// word (`current`, as read from `rest`).
#[inline(always)]
fn count_repeat(rest: &Rest, current: u64, now: u64, counters: *mut IfaceCounters) {
    let bucket = rate_bucket(now);
    if !head_more(rest.current) {
        // The source's first repeat: no second probe waits yet.
        let _ = rest.take(0, repeats::add(0, bucket), counters);
        return;
    }
    // SAFETY: a live map value.
    unsafe {
        let repeats_p = &raw mut (*rest.more).repeats;
        if repeats::in_bucket(current, bucket) != 0 {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(repeats_p, 1 | (1 << 32));
        } else {
            // A new bucket: restart its count (another CPU may just have).
            let (_, won) = atomic_cxchg::<
                u64,
                { AtomicOrdering::Relaxed },
                { AtomicOrdering::Relaxed },
            >(repeats_p, current, repeats::add(current, bucket));
            if !won {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(repeats_p, 1 | (1 << 32));
            }
        }
    }
}

/// What waited for admission: up to two probes (admission records, 0 for
/// none; decoded one at a time as they are seeded, `window::seed`), the
/// window's start, and the repeats of a waiting SYN (counted as of `now`,
/// the admitting probe's time).
struct Waiting {
    records: [u64; 2],
    start: u64,
    repeats: u64,
    now: u64,
}

/// Claims a slot for the probe's source, whose window started at `start`:
/// a free one of its two, else the one seen least recently (its source is
/// evicted). The slot is marked busy while it is set up.
#[inline(always)]
fn claim(
    probe: &Probe,
    (bucket, tag): (u32, u32),
    start: u64,
    (ifindex, tag_feeds): (u32, bool),
    counters: *mut IfaceCounters,
    waiting: &Waiting,
) -> Option<*mut SourceStats> {
    let ea = SOURCES.get_ptr_mut(2 * bucket)?;
    let eb = SOURCES.get_ptr_mut(2 * bucket + 1)?;
    let (word, pair) = tag_place(bucket);
    let tags = SOURCE_TAGS.get_ptr_mut(word)?.cast::<u8>();
    // SAFETY: both are live map values; every pointer stays inside them.
    let entry = unsafe {
        let seen_a = core::ptr::read_volatile(&raw const (*ea).first_seen_ns);
        let seen_b = core::ptr::read_volatile(&raw const (*eb).first_seen_ns);
        let (entry, old, half) = if seen_a == 0 {
            (ea, seen_a, 0)
        } else if seen_b == 0 {
            (eb, seen_b, 1)
        } else if core::ptr::read_volatile(&raw const (*ea).last_seen_ns)
            <= core::ptr::read_volatile(&raw const (*eb).last_seen_ns)
        {
            (ea, seen_a, 0)
        } else {
            (eb, seen_b, 1)
        };
        let first_p = &raw mut (*entry).first_seen_ns;
        let (_, won) = atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
            first_p, old, BUSY,
        );
        if !won || old == BUSY {
            bump_counter(counters, Counter::SourceUpdateErrors);
            return None;
        }
        if old != 0 {
            bump_counter(counters, Counter::SourcesEvicted);
        }
        let words = probe.source.words();
        core::ptr::write_volatile(&raw mut (*entry).key[0], words[0]);
        core::ptr::write_volatile(&raw mut (*entry).key[1], words[1]);
        core::ptr::write_volatile(&raw mut (*entry).window_start_ns, start);
        core::ptr::write_volatile(&raw mut (*entry).last_seen_ns, start);
        window::clear_window(entry);
        window::seed(entry, &waiting.records, waiting.start, waiting.now);
        window::seed_repeats(entry, waiting.repeats, waiting.now);
        core::ptr::write_volatile(&raw mut (*entry).last_ifindex, ifindex);
        // The tag before the slot is published: a tracked source always
        // has its tag in the index.
        core::ptr::write_volatile(tags.add(2 * pair as usize + half), index_tag(tag));
        core::ptr::write_volatile(first_p, start.max(BUSY + 1));
        entry
    };
    bump_counter(counters, Counter::SourcesCreated);
    if tag_feeds {
        refresh_known_bad(entry, probe);
    }
    Some(entry)
}

/// Looks the source up in the `tag` feeds (at admission and each new window).
#[inline(always)]
fn refresh_known_bad(entry: *mut SourceStats, probe: &Probe) {
    let id = FEEDS
        .get(Key::new(128, probe.source.addr))
        .map_or(0, |feed| feed.feed_id as u16);
    // SAFETY: a plain write of a live map value's field.
    unsafe { core::ptr::write_volatile(&raw mut (*entry).known_bad, id) };
}

/// Sends the crossings `fresh` to the agent.
#[inline(always)]
fn report(
    entry: *mut SourceStats,
    probe: &Probe,
    fresh: u32,
    now: u64,
    ifindex: u32,
    counters: *mut IfaceCounters,
) {
    // SAFETY: `entry` is live; the window start is a plain read.
    let window_start_ns = unsafe { core::ptr::read_volatile(&raw const (*entry).window_start_ns) };
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
