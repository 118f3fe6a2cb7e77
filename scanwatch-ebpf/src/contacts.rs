//! Reply-aware detection, kernel side. XDP records first contacts (SYN and
//! UDP probes) in `CONTACTS`; the TC egress program below watches this
//! host's answers (SYN-ACK, RST, UDP replies, ICMP/ICMPv6 unreachable),
//! resolves the pending first contact they answer, and steps the remote
//! source's Threshold Random Walk in `REPLY_SOURCES` (see
//! `scanwatch_common::trw`). A crossing of the upper boundary is sent to
//! the agent through `EVENTS`, at most once per source and report interval.
//!
//! First contacts, host markers and outbound UDP flows live in two
//! direct-mapped arrays (`CONTACTS`, `CONTACT_MARKS`): no map insert on any
//! path, a repeat costs a read and a compare. Slot layout, hashing and the
//! compare-and-swap protocol that keeps a torn or replaced slot from ever
//! being resolved as another contact: `scanwatch_common::contact_table`.
//!
//! The egress program never changes or drops a packet: it returns
//! `TC_ACT_UNSPEC`, so the next filter (or the default action) decides.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::{classifier, map},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use scanwatch_common::{
    ProbeKind, ScanEvent, SourceKey,
    contact_table::{
        self, BPF_F_MMAPABLE, CONTACT_MARKS_MASK, CONTACTS_MASK, ContactSeed, ContactSlot,
        DEFAULT_CONTACT_MARKS_CAPACITY, KEY_WORDS, key_word, state,
    },
    sketch::{PORT_UDP, host_fingerprint, port_entry},
    tracking::{
        RECORD_CONTACT_TAKEN, admission, head_holds, key_hash, record_port, record_time,
        waiting_contact,
    },
    trigger,
    trw::{
        ContactKey, DEFAULT_CONTACTS_CAPACITY, DEFAULT_REPLY_SOURCES_CAPACITY, Decision,
        ReplyConfig, ReplyCounter, ReplyCounters, ReplyStats, host_marker, outcome,
    },
};

use crate::{
    EVENTS,
    packet::{
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Ip, LINEAR_PART, Packet,
        ParseError, walk,
    },
    parse::Found,
    window::setting,
};

/// TRW settings, set by the agent at load time.
#[unsafe(no_mangle)]
static REPLY_CONFIG: ReplyConfig = ReplyConfig::DISABLED;

/// The slot hash's key, random per agent start (set at load time).
#[unsafe(no_mangle)]
static CONTACT_SEED: ContactSeed = ContactSeed::ZERO;

/// First contacts of remote sources with local (address, port), one per
/// slot (direct-mapped; the agent maps it to sweep it).
#[map]
static CONTACTS: Array<ContactSlot> =
    Array::with_max_entries(DEFAULT_CONTACTS_CAPACITY, BPF_F_MMAPABLE);

/// Host markers and this host's outbound UDP flows (direct-mapped; written
/// by the egress program only).
#[map]
static CONTACT_MARKS: Array<ContactSlot> =
    Array::with_max_entries(DEFAULT_CONTACT_MARKS_CAPACITY, 0);

/// Per-source sequential test state.
#[map]
static REPLY_SOURCES: LruHashMap<SourceKey, ReplyStats> =
    LruHashMap::with_max_entries(DEFAULT_REPLY_SOURCES_CAPACITY, 0);

/// A tracked source's own first contact between [`touch_contact`] and
/// [`record_own_contact`], one slot per CPU: off the XDP program's stack,
/// which a key kept across the window update takes over the verifier's
/// 512 bytes (XDP programs do not nest on a CPU).
#[map]
static CONTACT_SCRATCH: PerCpuArray<ContactKey> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counters of the reply path (one entry).
#[map]
static REPLY_COUNTERS: PerCpuArray<ReplyCounters> = PerCpuArray::with_max_entries(1, 0);

/// Lets the next filter (or the qdisc's default) decide.
const TC_ACT_UNSPEC: i32 = -1;

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

static EMPTY_STATS: ReplyStats = ReplyStats {
    llr: 0,
    successes: 0,
    failures: 0,
    no_answers: 0,
    reported_ns: 0,
    benign_resets: 0,
    crossing_successes: 0,
    crossing_failures: 0,
};

#[inline(always)]
pub(crate) fn bump(c: ReplyCounter) {
    if let Some(counters) = REPLY_COUNTERS.get_ptr_mut(0) {
        let slot = c as usize;
        if slot < scanwatch_common::trw::REPLY_COUNTER_SLOTS {
            // SAFETY: this CPU's copy of the one entry; slot in bounds.
            unsafe { (*counters).counters[slot] += 1 };
        }
    }
}

#[inline(always)]
pub(crate) fn enabled() -> bool {
    // SAFETY: a volatile read keeps LLVM from folding the load-time value.
    unsafe { core::ptr::read_volatile(&raw const REPLY_CONFIG.enabled) != 0 }
}

/// The slot of `key` in `table` (of `mask + 1` slots).
#[inline(always)]
fn slot_of(table: &Array<ContactSlot>, key: &ContactKey, mask: u32) -> Option<*mut ContactSlot> {
    // SAFETY: volatile reads keep LLVM from folding the load-time value
    // (one word at a time: no copy on the stack).
    let seed = |i: usize| unsafe { core::ptr::read_volatile(&raw const CONTACT_SEED.words[i]) };
    table.get_ptr_mut(contact_table::slot_of(seed, key, mask))
}

/// The slot's state word.
#[inline(always)]
fn load_state(slot: *mut ContactSlot) -> u64 {
    // SAFETY: `slot` is a live map value for this program run.
    unsafe { core::ptr::read_volatile(&raw const (*slot).state) }
}

/// Compare-and-swap of the slot's state word.
#[inline(always)]
fn swap_state(slot: *mut ContactSlot, old: u64, new: u64) -> bool {
    // SAFETY: `slot` is a live map value for this program run.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
            &raw mut (*slot).state,
            old,
            new,
        )
        .1
    }
}

/// Whether the slot holds `key` (its words, read one by one).
#[inline(always)]
fn holds(slot: *mut ContactSlot, key: &ContactKey) -> bool {
    // SAFETY: `slot` is a live map value; the nine words lie inside its key.
    let p = unsafe { (&raw const (*slot).key).cast::<u32>() };
    let mut diff = 0u32;
    let mut i = 0;
    while i < KEY_WORDS {
        // Plain reads, a word of each at a time: volatile ones were all
        // done before the first compare, and the words live at once took
        // more stack than the verifier allows (128 bytes of
        // `scanwatch_record_contact`'s frame, against 56). Callers read the
        // slot's state first and call this only on a stable one: LLVM
        // cannot move these loads above that branch (a map value's pointer
        // is not known to be dereferenceable), and a resolver's
        // compare-and-swap from the state read fails if a writer came in
        // between.
        // SAFETY: i < 9, inside the 36-byte key.
        diff |= unsafe { p.add(i).read() } ^ key_word(key, i);
        i += 1;
    }
    diff == 0
}

/// Claims the slot from state `w`, writes `key` and `first_ns`, publishes
/// `outcome` (see `contact_table`): false if another writer holds or took it.
#[inline(always)]
fn write_slot(
    slot: *mut ContactSlot,
    w: u64,
    key: &ContactKey,
    first_ns: u64,
    outcome: u64,
) -> bool {
    let busy = state::claimed(w);
    if state::busy(w) || !swap_state(slot, w, busy) {
        return false;
    }
    // SAFETY: `slot` is a live map value, ours until published (plain
    // stores: the swaps before and after order them).
    unsafe {
        (*slot).first_ns = first_ns;
        (*slot).key = *key;
    }
    // Nobody else changes a busy state: this swap always succeeds.
    swap_state(slot, busy, state::published(busy, outcome));
    true
}

/// Writes the mark `key` with `outcome` unless the marks table holds it;
/// true if it was written now.
#[inline(always)]
fn mark(key: &ContactKey, outcome: u64) -> bool {
    let Some(slot) = slot_of(&CONTACT_MARKS, key, CONTACT_MARKS_MASK) else {
        return false;
    };
    let w = load_state(slot);
    if state::stable(w) && holds(slot, key) {
        return false;
    }
    write_slot(slot, w, key, 0, outcome)
}

/// Whether this host sent UDP first on the flow `key` (an outbound mark).
#[inline(always)]
fn outbound_flow(key: &ContactKey) -> bool {
    let Some(slot) = slot_of(&CONTACT_MARKS, key, CONTACT_MARKS_MASK) else {
        return false;
    };
    let w = load_state(slot);
    state::stable(w) && state::outcome(w) == outcome::OUTBOUND && holds(slot, key)
}

/// What XDP does with a probe's first contact (`sources::contact_plan`),
/// in one word (one register: the program's stack is at the verifier's
/// limit): the admission record of its source's first SYN whose contact
/// was taken out of the source's admission slot ([`take_waiting`]), to be
/// recorded too, pending (0: none), and whether to record the probe's own
/// first contact ([`record_contact`]), in the bit such a record has clear
/// ([`RECORD_CONTACT_TAKEN`]).
#[derive(Clone, Copy)]
pub struct ContactPlan(u64);

impl ContactPlan {
    /// Nothing to record.
    pub const NOTHING: Self = Self(0);
    /// The probe's own contact only.
    pub const RECORD: Self = Self(RECORD_CONTACT_TAKEN);

    #[inline(always)]
    pub const fn new(record: bool, moved: u64) -> Self {
        Self((moved & !RECORD_CONTACT_TAKEN) | if record { RECORD_CONTACT_TAKEN } else { 0 })
    }

    #[inline(always)]
    const fn record(self) -> bool {
        self.0 & RECORD_CONTACT_TAKEN != 0
    }

    #[inline(always)]
    const fn moved(self) -> u64 {
        self.0 & !RECORD_CONTACT_TAKEN
    }
}

/// Takes the first contact waiting in an admission slot whose first
/// record, read as `first`, is at `first_p`: a SYN to the host of
/// fingerprint `host` and to port `port` (None: any), not taken yet
/// (`tracking::waiting_contact`). Marks it taken with a compare-and-swap
/// from `first` (one taker: the answer in egress, or the source's next
/// probe in XDP); its port if this call took it.
#[inline(always)]
pub(crate) fn take_waiting(
    first_p: *mut u64,
    first: u64,
    port: Option<u16>,
    host: u16,
) -> Option<u16> {
    let waiting = waiting_contact(first, host)?;
    if port.is_some_and(|p| p != waiting) {
        return None;
    }
    // SAFETY: `first_p` points into a live map value.
    let (_, won) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
            first_p,
            first,
            first | RECORD_CONTACT_TAKEN,
        )
    };
    won.then_some(waiting)
}

/// The time of the first SYN waiting as the first contact `key` (TCP) in
/// its remote's admission slot, which this call takes
/// (`tracking::RECORD_CONTACT_TAKEN`): an answer the contact table does
/// not know may answer it.
#[inline(always)]
fn take_waiting_contact(key: &ContactKey) -> Option<u64> {
    let cfg = &raw const crate::DETECT_CONFIG;
    // SAFETY: `cfg` points to the settings global.
    let (admit_after, slots, window_ns) = unsafe {
        (
            setting(&raw const (*cfg).admit_after),
            setting(&raw const (*cfg).admission_slots),
            setting(&raw const (*cfg).window_ns),
        )
    };
    if key.port & PORT_UDP != 0 || admit_after <= 1 {
        return None;
    }
    let (index, tag) = admission(key_hash(SourceKey { addr: key.remote }.words()), slots);
    let slot = crate::ADMISSION.get_ptr_mut(index)?;
    let now = crate::clock::now();
    // SAFETY: plain reads of a live map value; `first` lies inside it.
    unsafe {
        if !head_holds(
            core::ptr::read_volatile(&raw const (*slot).head),
            tag,
            now,
            window_ns,
        ) {
            return None;
        }
        let first_p = &raw mut (*slot).first;
        let first = core::ptr::read_volatile(first_p);
        take_waiting(
            first_p,
            first,
            Some(key.port as u16),
            host_fingerprint(&key.local),
        )
        .map(|_| record_time(first, now))
    }
}

/// Records first contacts as `plan` says: the probe's own (a SYN or UDP
/// probe, or a TCP header split by fragmentation, with a port) and its
/// source's first SYN moved out of its admission slot (same remote and
/// local address). A contact already in its slot (a repeat: one read and
/// compare) is not written again. Nothing when the detector is off. No
/// insert: a contact overwrites whatever its slot held.
#[inline(always)]
pub fn record_contact(
    pkt: Packet<'_, XdpContext>,
    found: &Found,
    source: &SourceKey,
    now: u64,
    plan: ContactPlan,
) -> Result<(), ParseError> {
    let this = records_own(found, plan);
    if !(this || plan.moved() != 0) || !enabled() {
        return Ok(());
    }
    let mut key = ContactKey {
        remote: source.addr,
        local: found.ip.dst_addr(pkt)?,
        port: found.port,
    };
    // The moved SYN first, then the probe's own, through one call site
    // (a leftover of the inlined version, whose two copies took more stack
    // than the verifier allows); `next`: the time of the probe's own
    // contact, recorded second (0: none).
    let moved = plan.moved();
    let (mut at, mut next) = match record_port(moved) {
        Some(port) => {
            key.port = port_entry(port, false);
            (record_time(moved, now), if this { now } else { 0 })
        }
        None => (now, 0),
    };
    loop {
        let _ = scanwatch_record_contact(&raw const key, at);
        if next == 0 {
            return Ok(());
        }
        (key.port, at, next) = (found.port, next, 0);
    }
}

/// Whether `plan` records the probe's own first contact and the probe
/// makes one: a SYN, a UDP probe, or a first fragment that splits a TCP
/// header (the host answers the reassembled probe), to a port.
#[inline(always)]
fn records_own(found: &Found, plan: ContactPlan) -> bool {
    let first_contact = match found.kind {
        ProbeKind::Syn | ProbeKind::Udp => true,
        ProbeKind::Stealth => found.ip.first_fragment(),
        _ => false,
    };
    plan.record() && found.port != 0 && first_contact
}

/// Whether `plan` records the probe's own first contact (a tracked
/// source's plan: [`ContactPlan::moved`] is always 0 for it): its key in
/// this CPU's [`CONTACT_SCRATCH`] slot, null for none, for
/// [`touch_contact`] and [`record_own_contact`].
#[inline(always)]
pub fn own_contact(
    pkt: Packet<'_, XdpContext>,
    found: &Found,
    source: &SourceKey,
    plan: ContactPlan,
) -> Result<*mut ContactKey, ParseError> {
    if !records_own(found, plan) || !enabled() {
        return Ok(core::ptr::null_mut());
    }
    let Some(key) = CONTACT_SCRATCH.get_ptr_mut(0) else {
        return Ok(core::ptr::null_mut());
    };
    let local = found.ip.dst_addr(pkt)?;
    // SAFETY: a live map value of this CPU.
    unsafe {
        (*key).remote = source.addr;
        (*key).local = local;
        (*key).port = found.port;
    }
    Ok(key)
}

/// Starts the read of `key`'s slot of the contact table (null: none)
/// without waiting for it (nothing uses the value): a tracked source's
/// probe calls this before its window update and [`record_own_contact`]
/// after it, so that the update's work runs while the line comes in.
#[inline(always)]
pub fn touch_contact(key: *mut ContactKey) {
    if !key.is_null() {
        let _ = scanwatch_touch_contact(key);
    }
}

/// Records `key` (from [`own_contact`]; null: none) made at `now`.
#[inline(always)]
pub fn record_own_contact(key: *mut ContactKey, now: u64) {
    if !key.is_null() {
        let _ = scanwatch_record_contact(key, now);
    }
}

/// The read of [`touch_contact`]: a global BPF function, like
/// [`scanwatch_record_contact`] (its own frame, verified once).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn scanwatch_touch_contact(key: *const ContactKey) -> u32 {
    // SAFETY: not null (checked), and the verifier checked its size.
    let Some(key) = (unsafe { key.as_ref() }) else {
        return 0;
    };
    if let Some(slot) = slot_of(&CONTACTS, key, CONTACTS_MASK) {
        let _ = load_state(slot);
    }
    0
}

/// Records the first contact `key` made at `now` (see [`record_contact`]).
///
/// A global BPF function (external linkage), like
/// `window::scanwatch_window_record`: its stack frame (56 bytes) is not
/// the caller's, whose own frame was at the verifier's limit with it
/// inlined, and the verifier checks it once, on its own. (That did not
/// bring the program's count down: 773,609 instructions processed
/// inlined, 732,781 as it is, 469,446 before the first SYN waited in its
/// admission slot; docs/benchmarks.md.) It sees `key` as memory of its
/// type's size that may be null, hence the check; it returns a scalar (0),
/// as global functions must.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn scanwatch_record_contact(key: *const ContactKey, now: u64) -> u32 {
    // SAFETY: not null (checked), and the verifier checked its size.
    let Some(key) = (unsafe { key.as_ref() }) else {
        return 0;
    };
    let Some(slot) = slot_of(&CONTACTS, key, CONTACTS_MASK) else {
        return 0;
    };
    let mut w = load_state(slot);
    if state::stable(w) && holds(slot, key) {
        return 0; // a repeat
    }
    // An answer to this host's own UDP query: not a contact.
    if key.port & PORT_UDP != 0 && outbound_flow(key) {
        return 0;
    }
    // Twice at most: a resolution (egress, the sweep) may change the state
    // between the read and the claim.
    for _ in 0..2 {
        if state::busy(w) {
            break;
        }
        if write_slot(slot, w, key, now, outcome::PENDING) {
            bump(ReplyCounter::Contacts);
            if !state::empty(w) && state::outcome(w) == outcome::PENDING {
                bump(ReplyCounter::ContactsOverwritten);
            }
            return 0;
        }
        w = load_state(slot);
        if state::stable(w) && holds(slot, key) {
            return 0; // recorded meanwhile by another CPU
        }
    }
    bump(ReplyCounter::ContactErrors);
    0
}

/// Watches this host's answers; never changes a packet.
#[classifier]
pub fn scanwatch_egress(ctx: TcContext) -> i32 {
    let (reply, web) = (enabled(), crate::web::enabled());
    if reply {
        bump(ReplyCounter::EgressPackets);
    }
    if !(reply || web) {
        return TC_ACT_UNSPEC;
    }
    // One walk for both: the reply-aware answer, the web status code.
    let pkt = Packet::new(&ctx);
    let Ok(Some(ip)) = walk::<LINEAR_PART, _>(pkt) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: ctx.skb.skb is the kernel's valid __sk_buff.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if reply && let Some((key, success)) = answer(pkt, ip) {
        resolve(&key, success, ifindex);
    }
    if web {
        crate::web::response(&ctx, pkt, ip, ifindex);
    }
    TC_ACT_UNSPEC
}

/// The first contact an outgoing packet answers, and whether the answer is
/// a success. Only SYN-ACK, RST, UDP and ICMP/ICMPv6 unreachable qualify;
/// everything else returns at the first check that fails. Later fragments
/// carry no transport header: never an answer.
#[inline(always)]
fn answer(pkt: Packet<'_, TcContext>, ip: Ip) -> Option<(ContactKey, bool)> {
    // One inlined copy per family, each knowing its family (as in
    // `parse::parse`): the addresses are read without a branch.
    if ip.v6 {
        answer_ip(pkt, Ip { v6: true, ..ip })
    } else {
        answer_ip(pkt, Ip { v6: false, ..ip })
    }
}

#[inline(always)]
fn answer_ip(pkt: Packet<'_, TcContext>, ip: Ip) -> Option<(ContactKey, bool)> {
    if ip.later_fragment() {
        return None;
    }
    let (port, success) = match (ip.proto, ip.v6) {
        (IPPROTO_ICMP, false) => return icmp_unreachable(pkt, ip.l4).ok()?,
        (IPPROTO_ICMPV6, true) => return icmpv6_unreachable(pkt, ip.l4).ok()?,
        (IPPROTO_TCP, _) => {
            let tcp = pkt.bytes::<14>(ip.l4).ok()?;
            let flags = tcp[13];
            let success = if flags & TCP_RST != 0 {
                false
            } else if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
                true
            } else {
                return None;
            };
            (
                port_entry(u16::from_be_bytes([tcp[0], tcp[1]]), false),
                success,
            )
        }
        (IPPROTO_UDP, _) => {
            let udp = pkt.bytes::<4>(ip.l4).ok()?;
            (port_entry(u16::from_be_bytes([udp[0], udp[1]]), true), true)
        }
        _ => return None,
    };
    // From local `port` to the remote (its prefix) that contacted it.
    Some((
        ContactKey {
            remote: crate::source_key(ip.dst_addr(pkt).ok()?, ip.v6).addr,
            local: ip.src_addr(pkt).ok()?,
            port,
        },
        success,
    ))
}

/// An ICMP destination unreachable (host 1, port 3, prohibited 9, 10, 13)
/// at `l4`: a failure of the contact its quoted probe (remote -> local) made.
#[inline(always)]
fn icmp_unreachable(
    pkt: Packet<'_, TcContext>,
    l4: usize,
) -> Result<Option<(ContactKey, bool)>, ParseError> {
    let icmp = pkt.bytes::<8>(l4)?;
    if icmp[0] != 3 || !matches!(icmp[1], 1 | 3 | 9 | 10 | 13) {
        return Ok(None);
    }
    let inner = pkt.bytes::<20>(l4 + 8)?;
    if inner[0] >> 4 != 4 {
        return Ok(None);
    }
    let inner_ihl = usize::from(inner[0] & 0x0f) * 4;
    if inner_ihl < 20 {
        return Ok(None);
    }
    let udp = match inner[9] {
        IPPROTO_UDP => true,
        IPPROTO_TCP => false,
        _ => return Ok(None),
    };
    let ports = pkt.bytes::<4>(l4 + 8 + inner_ihl)?;
    Ok(Some((
        ContactKey {
            remote: crate::source_key(
                mapped_v4([inner[12], inner[13], inner[14], inner[15]]),
                false,
            )
            .addr,
            local: mapped_v4([inner[16], inner[17], inner[18], inner[19]]),
            port: port_entry(u16::from_be_bytes([ports[2], ports[3]]), udp),
        },
        false,
    )))
}

/// An ICMPv6 destination unreachable (prohibited 1, address 3, port 4) at
/// `l4`: a failure of the contact its quoted probe made (the quoted
/// header's extension headers are not walked).
#[inline(always)]
fn icmpv6_unreachable(
    pkt: Packet<'_, TcContext>,
    l4: usize,
) -> Result<Option<(ContactKey, bool)>, ParseError> {
    let icmp = pkt.bytes::<8>(l4)?;
    if icmp[0] != 1 || !matches!(icmp[1], 1 | 3 | 4) {
        return Ok(None);
    }
    let inner = pkt.bytes::<40>(l4 + 8)?;
    let udp = match inner[6] {
        IPPROTO_UDP => true,
        IPPROTO_TCP => false,
        _ => return Ok(None),
    };
    let ports = pkt.bytes::<4>(l4 + 48)?;
    let mut remote = [0u8; 16];
    let mut local = [0u8; 16];
    remote.copy_from_slice(&inner[8..24]);
    local.copy_from_slice(&inner[24..40]);
    Ok(Some((
        ContactKey {
            remote: crate::source_key(remote, true).addr,
            local,
            port: port_entry(u16::from_be_bytes([ports[2], ports[3]]), udp),
        },
        false,
    )))
}

#[inline(always)]
fn mapped_v4(a: [u8; 4]) -> [u8; 16] {
    SourceKey::v4(a).addr
}

/// Gives the pending first contact `key` its outcome `result`, once:
/// - in the contact table: a compare-and-swap from the pending state read
///   (see `contact_table`); fails if the contact was resolved, or its slot
///   rewritten, since;
/// - else, a first SYN still waiting as that contact in its remote's
///   admission slot (`tracking::RECORD_CONTACT_TAKEN`): taken from there
///   and written to the contact table with its outcome (unless another
///   writer holds that slot this instant: the walk is stepped anyway).
///
/// Whether this call resolved it.
#[inline(always)]
fn settle(key: &ContactKey, result: u64) -> bool {
    let Some(contact) = slot_of(&CONTACTS, key, CONTACTS_MASK) else {
        return false;
    };
    let w = load_state(contact);
    if state::stable(w) && holds(contact, key) {
        return state::outcome(w) == outcome::PENDING
            && swap_state(contact, w, state::with_outcome(w, result));
    }
    let Some(first_ns) = take_waiting_contact(key) else {
        return false;
    };
    if write_slot(contact, w, key, first_ns, result)
        && !state::empty(w)
        && state::outcome(w) == outcome::PENDING
    {
        bump(ReplyCounter::ContactsOverwritten);
    }
    true
}

/// Resolves the pending first contact `key` ([`settle`]) and steps its
/// source's walk; a crossing of the upper boundary also marks the source
/// decided for the rest of its window (`SourceStats::REPLY_DECIDED`), and
/// the answers to a decided source are skipped here.
#[allow(
    clippy::needless_borrows_for_generic_args,
    reason = "by reference: copies would take BPF stack"
)]
#[inline(always)]
fn resolve(key: &ContactKey, success: bool, ifindex: u32) {
    // A source decided in this window records no first contacts: its
    // answers are not looked for (no read of the contact table).
    let source = SourceKey { addr: key.remote };
    let tracked = crate::sources::tracked_source(&source);
    if let Some(entry) = tracked
        && crate::sources::decided(entry, crate::clock::now())
    {
        bump(ReplyCounter::AfterVerdict);
        return;
    }
    let result = if success {
        outcome::SUCCESS
    } else {
        outcome::FAILURE
    };
    if !settle(key, result) {
        bump(ReplyCounter::Unmatched);
        if success && key.port & PORT_UDP != 0 {
            // This host speaks first on this UDP flow (a query of its own):
            // the remote's datagrams back are not first contacts.
            let _ = mark(key, outcome::OUTBOUND);
        }
        return;
    }
    bump(if success {
        ReplyCounter::Successes
    } else {
        ReplyCounter::Failures
    });
    // SAFETY: a volatile read keeps LLVM from folding the load-time value.
    let cfg = unsafe { core::ptr::read_volatile(&raw const REPLY_CONFIG) };
    // A success moves the walk once per local host (unless configured per
    // port): only the first success on a host writes its marker, the
    // contact's key with port 0 (`host_marker`).
    let step = !success
        || cfg.per_port_successes != 0
        || mark(&host_marker(key.remote, key.local), outcome::SUCCESS);
    let stats = match REPLY_SOURCES.get_ptr_mut(source) {
        Some(s) => s,
        None => {
            let _ = REPLY_SOURCES.insert(&source, &EMPTY_STATS, u64::from(BPF_NOEXIST));
            match REPLY_SOURCES.get_ptr_mut(source) {
                Some(s) => s,
                None => return,
            }
        }
    };
    // SAFETY: `stats` is a live map value; every pointer stays inside it.
    unsafe {
        let count = if success {
            &raw mut (*stats).successes
        } else {
            &raw mut (*stats).failures
        };
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(count, 1);
        if !step {
            return;
        }
        let llr_p = (&raw mut (*stats).llr).cast::<u64>();
        let mut decision = Decision::Pending;
        let mut tries = 0;
        while tries < 3 {
            let old = core::ptr::read_volatile(llr_p);
            let (new, d) = cfg.step(old as i64, success);
            let (_, ok) =
                atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                    llr_p, old, new as u64,
                );
            if ok {
                decision = d;
                break;
            }
            tries += 1;
        }
        match decision {
            Decision::Scanner => {
                if let Some(entry) = tracked {
                    crate::sources::decide(entry);
                }
                report(stats, &source, ifindex, &cfg);
            }
            Decision::Benign => {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                    &raw mut (*stats).benign_resets,
                    1,
                );
            }
            Decision::Pending => {}
        }
    }
}

/// Sends the crossing unless one was sent within the report interval.
#[inline(always)]
unsafe fn report(stats: *mut ReplyStats, source: &SourceKey, ifindex: u32, cfg: &ReplyConfig) {
    let now = crate::clock::now();
    // SAFETY: `stats` is a live map value.
    let won = unsafe {
        let p = &raw mut (*stats).reported_ns;
        let last = core::ptr::read_volatile(p);
        (last == 0 || now.wrapping_sub(last) >= cfg.report_interval_ns)
            && atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                p, last, now,
            )
            .1
    };
    if !won {
        return;
    }
    // SAFETY: `stats` is a live map value; plain reads and writes of the
    // evidence at the verdict (only the CAS winner writes them).
    unsafe {
        (*stats).crossing_successes = core::ptr::read_volatile(&raw const (*stats).successes);
        (*stats).crossing_failures = core::ptr::read_volatile(&raw const (*stats).failures)
            + core::ptr::read_volatile(&raw const (*stats).no_answers);
    }
    let event = ScanEvent {
        source: *source,
        time_ns: now,
        window_start_ns: 0,
        ifindex,
        triggers: trigger::REPLY_SCAN,
    };
    match EVENTS.output::<ScanEvent>(&event, 0) {
        Ok(()) => bump(ReplyCounter::EventsSent),
        Err(_) => bump(ReplyCounter::EventsDropped),
    }
}
