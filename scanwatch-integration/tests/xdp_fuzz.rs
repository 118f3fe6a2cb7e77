//! Fuzzes the XDP program through BPF_PROG_TEST_RUN with random and mutated
//! frames (1,000,000 by default): valid Ethernet / VLAN / QinQ / IPv4 (options,
//! fragments) / IPv6 (extension headers, fragments) / TCP / UDP / ICMP /
//! ICMPv6 frames, mutated at every layer (byte flips, truncation, length
//! fields that lie, random bytes, random ethertypes and protocols), and
//! wholly random frames.
//!
//! Checked for every frame: the action is never XDP_ABORTED, and XDP_DROP
//! exactly for a source that is blocked (or in a drop feed) and not in
//! never_block: first with nothing blocked, then with blocks and feeds,
//! then with networks of other lengths after unblocking and reloading
//! (what the prefilter in front of the lookups keys coarsely or widely). Checked for every batch: every counter equals what an
//! independent userspace classification of the frames sent predicts.
//!
//! Reproducible: `SCANWATCH_FUZZ_SEED` (decimal or 0x-hex) sets the seed,
//! `SCANWATCH_FUZZ_FRAMES` the number of frames; both are printed. A failing
//! frame is printed in hex with its index.
//! Needs root (CAP_BPF); fails rather than skips without it.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use scanwatch::{
    config::{FeedAction, FeedConfig, MitigationConfig},
    kernel::testrun::XdpHarness,
};
use scanwatch_common::{
    Counter, IfaceCounters, ProbeKind, SourceKey, block_origin, classify_icmp, classify_icmpv6,
    classify_tcp, maps::MAX_IPV6_EXT_HEADERS,
};
use scanwatch_integration::TakeMitigation;
use scanwatch_lab::rng::SplitMix64;
use scanwatch_lab::{
    frames::{Ipv6Ext, Packet, TPID_8021AD, TPID_8021Q, Transport},
    privileged::require_root,
};

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const DEFAULT_SEED: u64 = 0x5ca7_0a7c_4f00_d5ed;
const DEFAULT_FRAMES: u64 = 1_000_000;
const BATCH: usize = 20_000;

/// The fuzzer's seeded generator (SplitMix64) with the draws it needs.
struct Rng(SplitMix64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn usize(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
    fn u8(&mut self) -> u8 {
        self.next() as u8
    }
    fn u16(&mut self) -> u16 {
        self.next() as u16
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
    /// Up to `max - 1` random bytes.
    fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.usize(max);
        self.bytes(n)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = v
                .strip_prefix("0x")
                .map_or_else(|| v.parse(), |h| u64::from_str_radix(h, 16));
            parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        }
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------
// Frame generation

/// Sources: mostly a small lab pool (so sources repeat and cross thresholds),
/// some from the blocked / feed / never_block networks of the second phase.
fn source(rng: &mut Rng, v6: bool) -> IpAddr {
    let pick = rng.below(100);
    if v6 {
        let last = match pick {
            0..=69 => rng.below(64) as u16,
            70..=84 => 0xb000 | rng.below(256) as u16, // fd00::bad:.. blocked
            _ => rng.u16(),
        };
        let group = if (70..=84).contains(&pick) { 0xbad } else { 1 };
        // Some outside fd00::/48, where the blocked network's prefilter key is.
        let second = if pick >= 93 { rng.u16() } else { 0 };
        IpAddr::V6(Ipv6Addr::new(0xfd00, second, 0, 0, 0, 0, group, last))
    } else {
        let (c, d) = match pick {
            0..=69 => (1, rng.below(64) as u8),
            70..=79 => (200, rng.u8()), // blocked, upper half never_block
            80..=89 => (201, rng.u8()), // drop feed, upper half never_block
            _ => (rng.u8(), rng.u8()),
        };
        IpAddr::V4(Ipv4Addr::new(198, 18, c, d))
    }
}

fn random_transport(rng: &mut Rng) -> Transport {
    match rng.below(10) {
        0..=3 => Transport::Tcp {
            sport: rng.u16(),
            dport: rng.u16(),
            flags: rng.u8(),
            options: if rng.chance(20) {
                rng.some_bytes(40)
            } else {
                Vec::new()
            },
            payload: rng.some_bytes(32),
        },
        4..=5 => Transport::Udp {
            sport: rng.u16(),
            dport: rng.u16(),
            payload: rng.some_bytes(32),
        },
        6..=8 => Transport::Icmp {
            icmp_type: match rng.below(4) {
                0 => 8,
                1 => 128,
                2 => [13, 15, 17, 139][rng.usize(4)],
                _ => rng.u8(),
            },
            code: rng.u8(),
        },
        _ => Transport::Raw {
            protocol: rng.u8(),
            bytes: rng.some_bytes(48),
        },
    }
}

/// A well-formed frame of a random shape.
fn valid_frame(rng: &mut Rng) -> Vec<u8> {
    let v6 = rng.chance(40);
    let src = source(rng, v6);
    let dst = if v6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, rng.u8()))
    };
    let mut p = Packet::from_ips(src, dst, random_transport(rng));
    for _ in 0..rng.below(4).saturating_sub(1) {
        p = p.vlan([TPID_8021Q, TPID_8021AD, 0x9100][rng.usize(3)]);
    }
    if v6 {
        for _ in 0..rng.below(5).saturating_sub(2) + u64::from(rng.chance(3)) * 9 {
            p = p.ipv6_ext(match rng.below(4) {
                0 => Ipv6Ext::HopByHop,
                1 => Ipv6Ext::Routing,
                2 => Ipv6Ext::DestinationOptions,
                _ => Ipv6Ext::Fragment {
                    offset: if rng.chance(50) { 0 } else { rng.u16() },
                    more: rng.chance(50),
                },
            });
        }
    } else {
        if rng.chance(15) {
            p = p.ipv4_options(&rng.some_bytes(41));
        }
        if rng.chance(15) {
            p = p.ipv4_fragment(if rng.chance(50) { 0 } else { rng.u16() }, rng.chance(50));
        }
    }
    if rng.chance(10) {
        p = p.transport_len(rng.usize(24));
    }
    p.build()
}

/// Offsets of the layers in a frame as built (before mutation): L3 and L4.
fn layers(frame: &[u8]) -> (usize, usize) {
    let mut l3 = 14;
    while l3 + 4 <= frame.len() && matches!(be16(frame, l3 - 2), 0x8100 | 0x88a8 | 0x9100) {
        l3 += 4;
    }
    let l4 = match frame.get(l3).map(|b| b >> 4) {
        Some(4) => l3 + usize::from(frame[l3] & 0xf) * 4,
        Some(6) => l3 + 40,
        _ => l3,
    };
    (l3, l4.min(frame.len()))
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn put16(f: &mut [u8], at: usize, v: u16) {
    if at + 2 <= f.len() {
        f[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// A value near `around`, or anything.
fn lie(rng: &mut Rng, around: u16) -> u16 {
    match rng.below(4) {
        0 => around.wrapping_add(rng.below(16) as u16),
        1 => around.wrapping_sub(rng.below(16) as u16),
        2 => [0, 1, 19, 20, 39, 40, 0xffff][rng.usize(7)],
        _ => rng.u16(),
    }
}

/// Mutates a valid frame at one or more layers.
fn mutate(rng: &mut Rng, mut f: Vec<u8>) -> Vec<u8> {
    let (l3, l4) = layers(&f);
    for _ in 0..=rng.below(3) {
        let len = f.len();
        match rng.below(12) {
            // Byte flips anywhere.
            0 => {
                for _ in 0..=rng.below(4) {
                    let at = rng.usize(len);
                    f[at] ^= 1 << rng.below(8);
                }
            }
            // Random bytes over a header.
            1 => {
                let at = [12, l3, l4][rng.usize(3)].min(len - 1);
                for b in f.iter_mut().skip(at).take(1 + rng.usize(8)) {
                    *b = rng.u8();
                }
            }
            // Truncation.
            2 => f.truncate(14.max(rng.usize(len + 1))),
            // Trailing garbage (the frame is longer than the IP length).
            3 => {
                let extra = rng.some_bytes(64);
                f.extend_from_slice(&extra);
            }
            // Ethertype (outer or inner).
            4 => put16(
                &mut f,
                l3 - 2,
                [0x0800, 0x86dd, 0x8100, 0x88a8, 0x9100, 0x0806, rng.u16()][rng.usize(7)],
            ),
            // IP version / IHL.
            5 if l3 < len => f[l3] = (f[l3] & 0x0f) | (rng.u8() & 0xf0),
            6 if l3 < len => f[l3] = (f[l3] & 0xf0) | (rng.u8() & 0x0f),
            // IP length field lies (IPv4 total length / IPv6 payload length).
            7 if l3 < len => {
                let at = if f[l3] >> 4 == 6 { l3 + 4 } else { l3 + 2 };
                if at + 2 <= len {
                    let v = lie(rng, be16(&f, at));
                    put16(&mut f, at, v);
                }
            }
            // Protocol / next header.
            8 if l3 < len => {
                let at = if f[l3] >> 4 == 6 { l3 + 6 } else { l3 + 9 };
                if at < len {
                    f[at] = [0, 1, 6, 17, 43, 44, 51, 58, 60, rng.u8()][rng.usize(10)];
                }
            }
            // IPv4 fragment field.
            9 if l3 + 8 <= len => {
                let v = rng.u16();
                put16(&mut f, l3 + 6, v);
            }
            // Transport header: TCP data offset / UDP length / ext header length / ICMP type.
            10 if l4 + 14 <= len => {
                let at = l4 + [0, 1, 4, 12, 13][rng.usize(5)];
                f[at] = rng.u8();
            }
            _ => {
                let at = rng.usize(len);
                f[at] = rng.u8();
            }
        }
    }
    f
}

/// A frame of random bytes, often with a plausible ethertype.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let len = 14 + rng.usize(200);
    let mut f = rng.bytes(len);
    if rng.chance(70) {
        let et = [0x0800, 0x86dd, 0x8100, 0x88a8][rng.usize(4)];
        put16(&mut f, 12, et);
        if f.len() > 14 && rng.chance(70) {
            f[14] = if et == 0x86dd { 0x60 } else { 0x45 };
        }
    }
    f
}

fn frame(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0..=1 => valid_frame(rng),
        2..=8 => {
            let f = valid_frame(rng);
            mutate(rng, f)
        }
        _ => random_frame(rng),
    }
}

// ---------------------------------------------------------------------------
// The reference classification, written from the documented rules (README,
// scanwatch-common), not from the kernel code.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    NotIp,
    NotProbe(IpAddr),
    Probe(ProbeKind, IpAddr),
    Truncated,
    Malformed,
    ChainTooLong,
}

/// Headers are never read beyond this offset (a parse limit of the program).
const MAX_HEADER_OFFSET: usize = 1024;

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn at(&self, offset: usize, len: usize) -> Result<&[u8], Outcome> {
        if offset > MAX_HEADER_OFFSET {
            return Err(Outcome::Malformed);
        }
        self.0.get(offset..offset + len).ok_or(Outcome::Truncated)
    }
}

fn classify(frame: &[u8]) -> Outcome {
    reference(&Reader(frame)).unwrap_or_else(|e| e)
}

fn reference(r: &Reader<'_>) -> Result<Outcome, Outcome> {
    let mut ethertype = be16(r.at(12, 2)?, 0);
    let mut l3 = 14;
    for _ in 0..2 {
        if matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
            ethertype = be16(r.at(l3 + 2, 2)?, 0);
            l3 += 4;
        }
    }
    match ethertype {
        0x0800 => ipv4(r, l3),
        0x86dd => ipv6(r, l3),
        _ => Ok(Outcome::NotIp),
    }
}

fn ipv4(r: &Reader<'_>, l3: usize) -> Result<Outcome, Outcome> {
    let h = r.at(l3, 20)?;
    let ihl = usize::from(h[0] & 0xf) * 4;
    let total = usize::from(be16(h, 2));
    if h[0] >> 4 != 4 || ihl < 20 || total < ihl {
        return Err(Outcome::Malformed);
    }
    if l3 + total > r.0.len() {
        return Err(Outcome::Truncated);
    }
    let src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
    let frag = be16(h, 6);
    if frag & 0x1fff != 0 {
        return Ok(Outcome::Probe(ProbeKind::Fragment, src));
    }
    transport(
        r,
        h[9],
        false,
        l3 + ihl,
        total - ihl,
        frag & 0x2000 != 0,
        src,
    )
}

fn ipv6(r: &Reader<'_>, l3: usize) -> Result<Outcome, Outcome> {
    let h = r.at(l3, 40)?;
    if h[0] >> 4 != 6 {
        return Err(Outcome::Malformed);
    }
    let mut a = [0u8; 16];
    a.copy_from_slice(&h[8..24]);
    let src = IpAddr::V6(Ipv6Addr::from(a));
    let payload_len = usize::from(be16(h, 4));
    let end = if payload_len == 0 {
        r.0.len() // jumbogram: the frame's length
    } else {
        l3 + 40 + payload_len
    };
    if end > r.0.len() {
        return Err(Outcome::Truncated);
    }
    let mut next = h[6];
    let mut offset = l3 + 40;
    let mut first_fragment = false;
    let mut walked = 0;
    while walked < MAX_IPV6_EXT_HEADERS {
        match next {
            0 | 43 | 60 => {
                let e = r.at(offset, 2)?;
                next = e[0];
                offset += (usize::from(e[1]) + 1) * 8;
            }
            51 => {
                let e = r.at(offset, 2)?;
                next = e[0];
                offset += (usize::from(e[1]) + 2) * 4;
            }
            44 => {
                let e = r.at(offset, 8)?;
                next = e[0];
                let frag = be16(e, 2);
                if frag >> 3 != 0 {
                    return Ok(Outcome::Probe(ProbeKind::Fragment, src));
                }
                first_fragment = frag & 1 != 0;
                offset += 8;
            }
            _ => break,
        }
        if offset > end {
            return Err(Outcome::Malformed);
        }
        walked += 1;
    }
    if walked == MAX_IPV6_EXT_HEADERS && matches!(next, 0 | 43 | 44 | 51 | 60) {
        return Err(Outcome::ChainTooLong);
    }
    transport(r, next, true, offset, end - offset, first_fragment, src)
}

fn transport(
    r: &Reader<'_>,
    proto: u8,
    v6: bool,
    offset: usize,
    len: usize,
    first_fragment: bool,
    src: IpAddr,
) -> Result<Outcome, Outcome> {
    let need = match (proto, v6) {
        (6, _) => 20,
        (17, _) => 8,
        (1, false) | (58, true) => 4,
        _ => return Ok(Outcome::NotProbe(src)),
    };
    if len < need {
        // Too short for its header: a fragmentation trick if more fragments
        // follow; one that splits a TCP header is a stealth probe.
        return match (first_fragment, proto) {
            (true, 6) => {
                // The ports (when there) must lie in the frame, like any read.
                if len >= 4 {
                    r.at(offset, 4)?;
                }
                Ok(Outcome::Probe(ProbeKind::Stealth, src))
            }
            (true, _) => Ok(Outcome::Probe(ProbeKind::Fragment, src)),
            (false, _) => Err(Outcome::Malformed),
        };
    }
    let h = r.at(offset, need)?;
    let kind = match proto {
        6 => {
            let doff = usize::from(h[12] >> 4) * 4;
            if doff < 20 || (doff > len && !first_fragment) {
                return Err(Outcome::Malformed);
            }
            classify_tcp(h[13])
        }
        17 => Some(ProbeKind::Udp),
        _ if v6 => classify_icmpv6(h[0]),
        _ => classify_icmp(h[0]),
    };
    Ok(kind.map_or(Outcome::NotProbe(src), |k| Outcome::Probe(k, src)))
}

// ---------------------------------------------------------------------------
// What the counters should say

/// The blocked, drop-feed and never_block networks of the mitigation phase.
struct Policy {
    blocked: Vec<IpNet>,
    drop_feed: Vec<IpNet>,
    never: Vec<IpNet>,
}

impl Policy {
    fn none() -> Self {
        Self {
            blocked: vec![],
            drop_feed: vec![],
            never: vec![],
        }
    }

    /// The counter that replaces the outcome when the packet is dropped, and
    /// whether never_block spared it.
    fn verdict(&self, src: IpAddr) -> (Option<Counter>, bool) {
        // IPv4-mapped IPv6 sources share the IPv4 key.
        let src = match src {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(src, IpAddr::V4),
            v4 => v4,
        };
        let within = |nets: &[IpNet]| nets.iter().any(|n| n.contains(&src));
        let reason = if within(&self.blocked) {
            Some(Counter::DroppedBlocklist)
        } else if within(&self.drop_feed) {
            Some(Counter::DroppedFeed)
        } else {
            None
        };
        match reason {
            Some(_) if within(&self.never) => (None, true),
            r => (r, false),
        }
    }
}

fn probe_counter(kind: ProbeKind) -> Counter {
    match kind {
        ProbeKind::Syn => Counter::ProbeSyn,
        ProbeKind::Stealth => Counter::ProbeStealth,
        ProbeKind::Udp => Counter::ProbeUdp,
        ProbeKind::IcmpEcho => Counter::ProbeIcmpEcho,
        ProbeKind::IcmpOtherProbe => Counter::ProbeIcmpOtherProbe,
        ProbeKind::Fragment => Counter::ProbeFragment,
    }
}

/// The counters one frame should move, and whether it should be dropped.
fn expected(outcome: Outcome, policy: &Policy) -> (Vec<Counter>, bool) {
    let mut moved = vec![Counter::Packets];
    let (src, counter) = match outcome {
        Outcome::NotIp => (None, Counter::NotIp),
        Outcome::Truncated => (None, Counter::Truncated),
        Outcome::Malformed => (None, Counter::Malformed),
        Outcome::ChainTooLong => (None, Counter::Ipv6ExtChainTooLong),
        Outcome::NotProbe(s) => (Some(s), Counter::NotProbe),
        Outcome::Probe(k, s) => (Some(s), probe_counter(k)),
    };
    let (dropped, spared) = src.map_or((None, false), |s| policy.verdict(s));
    if spared {
        moved.push(Counter::NeverBlockSpared);
    }
    moved.push(dropped.unwrap_or(counter));
    (moved, dropped.is_some())
}

/// Counters the reference predicts exactly.
const EXACT: [Counter; 15] = [
    Counter::ProbeSyn,
    Counter::ProbeStealth,
    Counter::ProbeUdp,
    Counter::ProbeIcmpEcho,
    Counter::ProbeIcmpOtherProbe,
    Counter::ProbeFragment,
    Counter::NotProbe,
    Counter::NotIp,
    Counter::Truncated,
    Counter::Malformed,
    Counter::Ipv6ExtChainTooLong,
    Counter::Packets,
    Counter::DroppedBlocklist,
    Counter::DroppedFeed,
    Counter::NeverBlockSpared,
];

fn hex(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}

struct Fuzz {
    h: XdpHarness,
    rng: Rng,
    seed: u64,
    sent: u64,
    expect: IfaceCounters,
    /// Sources that sent a probe that was not dropped (events may name only these).
    probing: HashSet<SourceKey>,
    probes_tracked: u64,
    actions: [u64; 5],
}

impl Fuzz {
    /// Sends `count` frames under `policy`, checking each action and, per
    /// batch, every counter.
    fn phase(&mut self, name: &str, count: u64, policy: &Policy) {
        let started = Instant::now();
        let mut left = count;
        while left > 0 {
            let n = left.min(BATCH as u64) as usize;
            let first = self.sent;
            let batch: Vec<Vec<u8>> = (0..n).map(|_| frame(&mut self.rng)).collect();
            for (i, f) in batch.iter().enumerate() {
                let index = first + i as u64;
                let outcome = classify(f);
                let (moved, drop) = expected(outcome, policy);
                let action = self.h.run(f).unwrap_or_else(|e| {
                    panic!("frame {index} (seed {:#x}) {}: {e}", self.seed, hex(f))
                });
                self.actions[action.min(4) as usize] += 1;
                assert_ne!(
                    action,
                    XDP_ABORTED,
                    "XDP_ABORTED on frame {index} (seed {:#x}): {}",
                    self.seed,
                    hex(f)
                );
                let want = if drop { XDP_DROP } else { XDP_PASS };
                assert_eq!(
                    action,
                    want,
                    "frame {index} (seed {:#x}, reference {outcome:?}): {}",
                    self.seed,
                    hex(f)
                );
                for c in moved {
                    self.expect.counters[c as usize] += 1;
                }
                if let Outcome::Probe(_, s) = outcome
                    && !drop
                {
                    self.probing.insert(self.h.source_key(s));
                    self.probes_tracked += 1;
                }
            }
            self.sent += n as u64;
            left -= n as u64;
            self.check_batch(&batch, first, policy);
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{name}: {count} frames in {secs:.1} s ({:.2} us/frame)",
            secs * 1e6 / count as f64
        );
    }

    /// Compares every counter with the reference; on a mismatch, finds the
    /// first frame of the batch that moves counters differently.
    fn check_batch(&mut self, batch: &[Vec<u8>], first: u64, policy: &Policy) {
        let got = self.h.counters().expect("counters");
        let differs: Vec<(Counter, u64, u64)> = EXACT
            .iter()
            .filter(|c| got.get(**c) != self.expect.get(**c))
            .map(|c| (*c, got.get(*c), self.expect.get(*c)))
            .collect();
        if !differs.is_empty() {
            for (i, f) in batch.iter().enumerate() {
                let before = self.h.counters().expect("counters");
                let _ = self.h.run(f);
                let after = self.h.counters().expect("counters");
                let (moved, _) = expected(classify(f), policy);
                let actual: Vec<Counter> = EXACT
                    .iter()
                    .copied()
                    .filter(|c| after.get(*c) != before.get(*c))
                    .collect();
                let mut want = moved.clone();
                want.sort_by_key(|c| *c as usize);
                assert_eq!(
                    actual,
                    want,
                    "frame {} (seed {:#x}, reference {:?}) moved other counters: {}",
                    first + i as u64,
                    self.seed,
                    classify(f),
                    hex(f)
                );
            }
            panic!(
                "counters differ from the reference (seed {:#x}): {differs:?}",
                self.seed
            );
        }
        assert_eq!(
            got.get(Counter::SourceUpdateErrors),
            0,
            "source map updates refused"
        );
        assert!(
            got.get(Counter::SourcesCreated) <= self.probes_tracked,
            "more sources created than probes tracked"
        );
        assert!(
            got.get(Counter::EventsSent) + got.get(Counter::EventsDropped) <= self.probes_tracked
        );
        for e in self.h.events() {
            assert!(
                self.probing.contains(&e.source),
                "event for {:?}, which sent no tracked probe",
                e.source.ip()
            );
        }
    }
}

#[test]
fn a_million_hostile_frames() {
    if !require_root("a_million_hostile_frames") {
        return;
    }
    let seed = env_u64("SCANWATCH_FUZZ_SEED", DEFAULT_SEED);
    let frames = env_u64("SCANWATCH_FUZZ_FRAMES", DEFAULT_FRAMES);
    println!("seed {seed:#x} (SCANWATCH_FUZZ_SEED), {frames} frames (SCANWATCH_FUZZ_FRAMES)");
    // The smallest source map: the random sources churn its LRU all the time.
    let h = XdpHarness::load(1024).expect("load the XDP program");
    let mut fuzz = Fuzz {
        h,
        rng: Rng(SplitMix64(seed)),
        seed,
        sent: 0,
        expect: IfaceCounters::ZERO,
        probing: HashSet::new(),
        probes_tracked: 0,
        actions: [0; 5],
    };
    let started = Instant::now();

    // Phase 1: nothing blocked. Nothing may be dropped.
    let quiet = frames * 6 / 10;
    fuzz.phase("nothing blocked", quiet, &Policy::none());

    // Phase 2: blocks, a drop feed and never_block networks inside both.
    let dir = std::env::temp_dir().join(format!("scanwatch-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let feed = dir.join("drop.netset");
    std::fs::write(&feed, "198.18.201.0/24\n").expect("feed");
    let net = |s: &str| -> IpNet { s.parse().expect("network") };
    let policy = Policy {
        blocked: vec![net("198.18.200.0/25"), net("fd00::bad:b000/120")],
        drop_feed: vec![net("198.18.201.0/24")],
        never: vec![net("198.18.200.128/25"), net("198.18.201.128/25")],
    };
    let cfg = MitigationConfig {
        auto_block: true,
        never_block_host_addresses: false,
        ..MitigationConfig::default()
    };
    let mut m = fuzz
        .h
        .take_mitigation(cfg, policy.never.clone())
        .expect("mitigation maps");
    for b in &policy.blocked {
        m.block(
            *b,
            Some(Duration::from_secs(3600)),
            block_origin::MANUAL,
            "fuzz",
        )
        .expect("block");
    }
    let problems = m.load_feeds(&[FeedConfig {
        name: "fuzz".into(),
        path: feed.clone(),
        action: FeedAction::Drop,
    }]);
    assert!(problems.is_empty(), "{problems:?}");
    let blocked_phase = (frames - quiet) / 2;
    fuzz.phase("with blocks and feeds", blocked_phase, &policy);

    // Phase 3: networks of other lengths (the prefilter keeps a /18 at its
    // /16, a /113 at its /48, a /27 at its /24, and an IPv6 /7 sends every
    // IPv6 source to the lookups), after unblocking and reloading (its
    // bits cleared by rebuilds).
    for b in &policy.blocked {
        m.unblock(*b).expect("unblock");
    }
    std::fs::write(&feed, "198.18.201.0/24\n198.18.1.32/27\n").expect("feed");
    let tag = dir.join("tag.netset");
    std::fs::write(&tag, "fc00::/7\n").expect("feed");
    let policy = Policy {
        blocked: vec![net("198.18.128.0/18"), net("fd00::bad:8000/113")],
        drop_feed: vec![net("198.18.201.0/24"), net("198.18.1.32/27")],
        never: policy.never,
    };
    for b in &policy.blocked {
        m.block(*b, None, block_origin::MANUAL, "fuzz")
            .expect("block");
    }
    let problems = m.load_feeds(&[
        FeedConfig {
            name: "fuzz".into(),
            path: feed,
            action: FeedAction::Drop,
        },
        FeedConfig {
            name: "tag".into(),
            path: tag,
            action: FeedAction::Tag,
        },
    ]);
    assert!(problems.is_empty(), "{problems:?}");
    fuzz.phase(
        "with networks of other lengths",
        frames - quiet - blocked_phase,
        &policy,
    );
    let _ = std::fs::remove_dir_all(&dir);

    let c = fuzz.h.counters().expect("counters");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} frames in {secs:.1} s; actions: {} pass, {} drop, {} aborted",
        fuzz.sent, fuzz.actions[2], fuzz.actions[1], fuzz.actions[0]
    );
    for counter in Counter::ALL {
        println!("  {counter:?}: {}", c.get(counter));
    }
    assert_eq!(fuzz.sent, frames);
    assert_eq!(c.get(Counter::Packets), frames, "every frame counted once");
    // Every outcome happened: the generator reaches every branch.
    for counter in EXACT {
        assert!(
            c.get(counter) > 0,
            "{counter:?} never moved: widen the generator"
        );
    }
    assert!(fuzz.actions[1] > 0 && fuzz.actions[2] > 0);
}

/// The limit spoofing sets on detection (docs/threat-model.md): sources
/// that send fewer probes than admission takes never take a slot, so
/// 4,096 of them between each two probes of a slow scanner leave it
/// tracked and detected in a 1,024-slot table, and so do 4,096 that each
/// repeat one SYN three times (repeats wait in admission); 4,096 sources
/// that each send three probes to three ports (and so are admitted)
/// between its probes evict it.
#[test]
fn churn_between_probes_erases_a_slow_scanners_counts() {
    if !require_root("churn_between_probes_erases_a_slow_scanners_counts") {
        return;
    }
    let scanner: IpAddr = "198.18.5.5".parse().expect("ip");
    let mut alerted = Vec::new();
    // Ports of each churning source's probes.
    for churn_ports in [&[80u16][..], &[80, 80, 80], &[80, 81, 82]] {
        let mut h = XdpHarness::load(1024).expect("load");
        for port in 1..=30u16 {
            let probe = Packet::from_ips(
                scanner,
                "198.18.0.2".parse().expect("ip"),
                Transport::tcp(port, scanwatch_lab::frames::tcp::SYN),
            )
            .build();
            assert_eq!(h.run(&probe).expect("run"), XDP_PASS);
            for i in 0..4096u32 {
                // Each from a /64 of its own (IPv6 sources count per /64).
                let other = IpAddr::V6(Ipv6Addr::new(
                    0xfd05,
                    port,
                    (i >> 16) as u16,
                    i as u16,
                    0,
                    0,
                    0,
                    1,
                ));
                for &churn_port in churn_ports {
                    let f = Packet::from_ips(
                        other,
                        "fd00::2".parse().expect("ip"),
                        Transport::tcp(churn_port, scanwatch_lab::frames::tcp::SYN),
                    )
                    .build();
                    assert_eq!(h.run(&f).expect("run"), XDP_PASS);
                }
            }
        }
        let hit = h.events().iter().any(|e| e.source.ip() == scanner);
        println!(
            "4096 new sources probing ports {churn_ports:?} each between probes: scanner detected: {hit}"
        );
        alerted.push(hit);
    }
    assert_eq!(alerted, [true, true, false]);
}
