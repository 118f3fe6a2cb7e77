//! Admission before tracking, through BPF_PROG_TEST_RUN with the default
//! configuration (`admit_after` 3): a source's first probes of a window
//! wait in the admission table; its third takes a slot of the source table
//! seeded with them, so every probe is counted and thresholds cross on the
//! same probe as before; sources that send fewer probes never take a slot,
//! so a flood of them cannot evict a tracked scanner. Needs root (CAP_BPF);
//! fails rather than skips without it.

use std::net::{IpAddr, Ipv4Addr};

use scanwatch::{config::Detection, detect::Evidence, kernel::testrun::XdpHarness};
use scanwatch_common::{
    Counter, ProbeKind, SourceKey,
    fingerprint::{self, NMAP},
    tracking::{
        DEFAULT_ADMISSION_SLOTS, MIN_ADMISSION_SLOTS, admission, key_hash, rate_bucket,
        repeats_to_admit,
    },
    trigger,
    trw::ReplyCounter,
};
use scanwatch_integration::coarse_ns;
use scanwatch_lab::{
    frames::{Packet, Transport, tcp},
    privileged::require_root,
};

const TARGET: &str = "198.18.0.2";

fn harness(test: &str, map_size: u32) -> Option<XdpHarness> {
    if !require_root(test) {
        return None;
    }
    assert_eq!(Detection::default().kernel_config().admit_after, 3);
    Some(XdpHarness::load(map_size).expect("load the XDP program"))
}

fn probe(h: &mut XdpHarness, src: IpAddr, t: Transport) {
    let f = Packet::from_ips(src, TARGET.parse().expect("ip"), t).build();
    h.run(&f).expect("test run");
}

fn syn(h: &mut XdpHarness, src: IpAddr, port: u16) {
    probe(h, src, Transport::tcp(port, tcp::SYN));
}

fn v4(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, a, b))
}

#[test]
fn a_source_is_tracked_from_its_third_probe_with_every_probe_counted() {
    let Some(mut h) = harness(
        "a_source_is_tracked_from_its_third_probe_with_every_probe_counted",
        4096,
    ) else {
        return;
    };
    let src = v4(40, 1);
    syn(&mut h, src, 22);
    assert!(h.source(src).expect("read").is_none(), "one probe: waiting");
    probe(&mut h, src, Transport::udp(53));
    assert!(
        h.source(src).expect("read").is_none(),
        "two probes: waiting"
    );
    probe(&mut h, src, Transport::icmp(8));
    let stats = h.source(src).expect("read").expect("tracked at the third");
    let ev = Evidence::from_stats(&stats);
    assert_eq!(
        (
            ev.probes(scanwatch_common::ProbeKind::Syn),
            ev.probes(scanwatch_common::ProbeKind::Udp),
            ev.probes(scanwatch_common::ProbeKind::IcmpEcho)
        ),
        (1, 1, 1),
        "the waiting probes were seeded"
    );
    assert_eq!((ev.distinct_ports, ev.distinct_udp_ports), (2, 1));
    assert_eq!((ev.distinct_hosts, ev.distinct_icmp_hosts), (1, 1));
    assert!(stats.first_seen_ns > 0 && stats.first_seen_ns <= stats.last_seen_ns);
    assert_eq!(ev.sample_ports, vec![22, 53]);
    let c = h.counters().expect("counters");
    assert_eq!(c.get(Counter::SourcesCreated), 1);
    assert_eq!(c.get(Counter::AdmissionOverwritten), 0);
}

/// The port-scan threshold (15) crosses on the 15th distinct port, as it
/// did when every source was tracked from its first probe.
#[test]
fn thresholds_cross_on_the_same_probe_as_without_admission() {
    let Some(mut h) = harness(
        "thresholds_cross_on_the_same_probe_as_without_admission",
        4096,
    ) else {
        return;
    };
    let src = v4(41, 1);
    for port in 1..=14 {
        syn(&mut h, src, port * 11);
    }
    assert!(h.events().is_empty(), "no crossing below the threshold");
    syn(&mut h, src, 15 * 11);
    let events = h.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].source, SourceKey::from_ip(src));
    assert_ne!(events[0].triggers & trigger::PORTS, 0);
    let ev = Evidence::from_stats(&h.source(src).expect("read").expect("tracked"));
    assert_eq!(
        (ev.total(), ev.distinct_ports),
        (15, 15),
        "every SYN counted"
    );
}

/// Between each two probes of a slow scanner, 2,000 sources that send one
/// probe each: they never take a slot, so the scanner keeps its counts in a
/// 1,024-slot table and is detected (before admission, a flood of new
/// sources evicted whatever the LRU held longest).
#[test]
fn one_probe_sources_never_take_a_slot_nor_evict_a_scanner() {
    let Some(mut h) = harness(
        "one_probe_sources_never_take_a_slot_nor_evict_a_scanner",
        1024,
    ) else {
        return;
    };
    let scanner = v4(42, 1);
    let mut next = 0u32;
    for port in 1..=30u16 {
        syn(&mut h, scanner, port);
        for _ in 0..2000 {
            // Each a new address of 198.19.0.0/16: never the scanner.
            next += 1;
            let src = IpAddr::V4(Ipv4Addr::from(0xc613_0000 | next));
            syn(&mut h, src, 80);
        }
    }
    let events = h.events();
    assert!(
        events
            .iter()
            .any(|e| e.source == SourceKey::from_ip(scanner) && e.triggers & trigger::PORTS != 0),
        "the scanner crossed the port threshold"
    );
    let ev = Evidence::from_stats(&h.source(scanner).expect("read").expect("tracked"));
    assert_eq!(ev.total(), 30, "every SYN counted");
    assert!(ev.distinct_ports >= 30, "{} ports", ev.distinct_ports);
    let c = h.counters().expect("counters");
    let flood_sources_tracked = h.sources().expect("sources").len() - 1;
    println!(
        "60,000 one-probe sources: {} admitted ({flood_sources_tracked} tracked), {} evictions, {} admission overwrites",
        c.get(Counter::SourcesCreated) - 1,
        c.get(Counter::SourcesEvicted),
        c.get(Counter::AdmissionOverwritten)
    );
    assert_eq!(c.get(Counter::SourcesEvicted), 0, "nothing evicted");
    assert_eq!(
        c.get(Counter::SourcesCreated),
        1,
        "only the scanner admitted"
    );
}

/// Source `a` and another source `b` sharing its slot of an admission
/// table of `slots` (the first found in 198.18.`from`.0 and up) take turns:
/// a's first SYN, b's (overwriting it), then a's next three, so a waits
/// anew with two probes and is admitted on the third. Returns a's counts.
fn overwritten_then_admitted(h: &mut XdpHarness, a: IpAddr, from: u8, slots: u32) -> Evidence {
    let slot_of = |ip: IpAddr| admission(key_hash(SourceKey::from_ip(ip).words()), slots);
    let (slot, tag) = slot_of(a);
    let b = (0..=u16::MAX)
        .map(|i| v4(from + (i >> 8) as u8, i as u8))
        .find(|ip| {
            let (s, t) = slot_of(*ip);
            s == slot && t != tag
        })
        .expect("a source sharing the admission slot");
    syn(h, a, 1);
    syn(h, b, 1); // overwrites a
    syn(h, a, 2); // overwrites b: a waits anew
    syn(h, a, 3);
    assert!(h.source(a).expect("read").is_none(), "two waiting probes");
    syn(h, a, 4);
    Evidence::from_stats(&h.source(a).expect("read").expect("tracked"))
}

/// Two sources sharing an admission slot: each one's arrival overwrites
/// the other's waiting probes (counted); the overwritten probe is counted
/// per interface, not for its source.
#[test]
fn admission_overwrites_are_counted() {
    let Some(mut h) = harness("admission_overwrites_are_counted", 4096) else {
        return;
    };
    let ev = overwritten_then_admitted(&mut h, v4(43, 1), 44, DEFAULT_ADMISSION_SLOTS);
    assert_eq!(
        (ev.total(), ev.distinct_ports),
        (3, 3),
        "the first probe was lost to the overwrite"
    );
    let c = h.counters().expect("counters");
    assert_eq!(c.get(Counter::AdmissionOverwritten), 2);
    assert_eq!(
        c.get(Counter::ProbeSyn),
        5,
        "every probe counted per interface"
    );
}

/// An admission slot's second part (a waiting source's second probe and
/// its repeats, in `ADMISSION_MORE`) is never inherited: source `a` waits
/// with a SYN, ten repeats of it and a second port; source `b`, sharing
/// the slot, overwrites it (a new source writes only the slot's head and
/// first probe) and waits with one SYN, five repeats and a second port,
/// then is admitted with exactly its own probes.
#[test]
fn a_slots_second_part_is_never_inherited() {
    let Some(mut h) = harness("a_slots_second_part_is_never_inherited", 4096) else {
        return;
    };
    let slot_of = |ip: IpAddr| {
        admission(
            key_hash(SourceKey::from_ip(ip).words()),
            DEFAULT_ADMISSION_SLOTS,
        )
    };
    let a = v4(46, 1);
    let (slot, tag) = slot_of(a);
    let b = (0..=u16::MAX)
        .map(|i| v4(47 + (i >> 8) as u8, i as u8))
        .find(|ip| {
            let (s, t) = slot_of(*ip);
            s == slot && t != tag
        })
        .expect("a source sharing the admission slot");
    for _ in 0..11 {
        syn(&mut h, a, 1);
    }
    syn(&mut h, a, 2);
    assert!(h.source(a).expect("read").is_none(), "a waits");
    for _ in 0..6 {
        syn(&mut h, b, 7); // the first overwrites a
    }
    syn(&mut h, b, 8);
    assert!(h.source(b).expect("read").is_none(), "b waits");
    syn(&mut h, b, 9);
    let ev = Evidence::from_stats(&h.source(b).expect("read").expect("tracked"));
    assert_eq!(
        (ev.probes(ProbeKind::Syn), ev.distinct_ports),
        (8, 3),
        "b's own SYN, five repeats and two more ports: nothing of a's"
    );
    assert!(h.source(a).expect("read").is_none(), "a never admitted");
    let c = h.counters().expect("counters");
    assert_eq!(c.get(Counter::AdmissionOverwritten), 1);
    assert_eq!(c.get(Counter::SourcesCreated), 1);
    assert_eq!(c.get(Counter::SourceUpdateErrors), 0);
}

/// A source that sends the same SYN over and over (one port of one host:
/// a SYN flood's spoofed source, a client retrying) can cross no
/// threshold but `syn_flood_source`: its repeats wait in its admission
/// slot, counted, and offer no further first contact (the first SYN's
/// waits in the slot, not moved to the contact table by a repeat). A new
/// destination moves it and still admits the source at its third
/// distinct probe, with every repeat seeded.
#[test]
fn repeated_syns_wait_counted_until_a_new_destination_admits() {
    if !require_root("repeated_syns_wait_counted_until_a_new_destination_admits") {
        return;
    }
    let mut h = XdpHarness::load_reply(4096, Detection::default().reply_config())
        .expect("load the XDP program with the reply-aware detector");
    let src = v4(42, 1);
    for _ in 0..100 {
        syn(&mut h, src, 80);
    }
    assert!(
        h.source(src).expect("read").is_none(),
        "one destination repeated: waiting"
    );
    let contacts = |h: &mut XdpHarness| {
        h.reply()
            .expect("reply maps")
            .counters()
            .expect("counters")
            .get(ReplyCounter::Contacts)
    };
    assert_eq!(
        contacts(&mut h),
        0,
        "100 SYNs: the first one's contact waits in the admission slot"
    );
    syn(&mut h, src, 81);
    assert!(h.source(src).expect("read").is_none(), "two destinations");
    syn(&mut h, src, 82);
    let ev = Evidence::from_stats(&h.source(src).expect("read").expect("tracked"));
    assert_eq!(
        (ev.probes(ProbeKind::Syn), ev.distinct_ports),
        (102, 3),
        "every repeat seeded"
    );
    assert_eq!(contacts(&mut h), 3);
    let c = h.counters().expect("counters");
    assert_eq!(c.get(Counter::SourcesCreated), 1);
    assert_eq!(c.get(Counter::SourceUpdateErrors), 0);
}

/// The repeats of one ~1.07 s rate bucket admit a source at
/// `repeats_to_admit` (253 at the default 50,000 SYNs/s), so the
/// `syn_flood_source` threshold is counted exactly from then on.
#[test]
fn repeated_syns_admit_at_the_syn_rate() {
    let Some(mut h) = harness("repeated_syns_admit_at_the_syn_rate", 4096) else {
        return;
    };
    let n = repeats_to_admit(Detection::default().kernel_config().syn_rate);
    assert_eq!(n, 253);
    // The kernel's coarse clock: the SYNs below must fall in one bucket;
    // on a bucket boundary, try again with another source.
    let bucket = || rate_bucket(coarse_ns());
    for attempt in 0..3u8 {
        let src = v4(43, attempt);
        let f = Packet::from_ips(
            src,
            TARGET.parse().expect("ip"),
            Transport::tcp(80, tcp::SYN),
        )
        .build();
        let before = bucket();
        // The first SYN waits, its repeats are counted: one short of admission.
        h.run_repeat(&f, n).expect("test run");
        let waiting = h.source(src).expect("read").is_none();
        h.run(&f).expect("test run");
        let tracked = h.source(src).expect("read");
        if bucket() != before {
            continue;
        }
        assert!(waiting, "{n} SYNs to one port: waiting");
        let ev = Evidence::from_stats(&tracked.expect("tracked at the rate"));
        assert_eq!(
            ev.probes(ProbeKind::Syn),
            u64::from(n) + 1,
            "every SYN counted"
        );
        return;
    }
    panic!("three attempts crossed a rate-bucket boundary");
}

/// Two tracked sources of one bucket of the source table whose one-byte
/// tags in the tag index are the same: the tag only says where to look,
/// the key in the slot decides, so each source's probes count for it
/// alone, and a source matching a tag by chance is not taken for the
/// tracked one.
#[test]
fn sources_sharing_a_bucket_and_a_tag_byte_stay_apart() {
    use scanwatch_common::tracking::{bucket, index_tag, source_tag};
    let Some(mut h) = harness("sources_sharing_a_bucket_and_a_tag_byte_stay_apart", 1024) else {
        return;
    };
    let place = |ip: IpAddr| {
        let hash = key_hash(SourceKey::from_ip(ip).words());
        (bucket(hash, 1024), index_tag(source_tag(hash)))
    };
    // IPv6 sources of lab /64s, named by their /64 (a source is its /64 by
    // default), sending to an IPv6 address of the host.
    let v6 = |i: u32| {
        IpAddr::V6(std::net::Ipv6Addr::new(
            0xfd00,
            0,
            (i >> 16) as u16,
            i as u16,
            0,
            0,
            0,
            0,
        ))
    };
    let syn = |h: &mut XdpHarness, src: IpAddr, port: u16| {
        let f = Packet::from_ips(
            src,
            "fd00::2".parse().expect("ip"),
            Transport::tcp(port, tcp::SYN),
        )
        .build();
        h.run(&f).expect("test run");
    };
    let a = v6(0xffff_ffff);
    let b = (0..=u32::MAX)
        .map(v6)
        .find(|ip| *ip != a && place(*ip) == place(a))
        .expect("a source of the same bucket and tag byte");
    for port in 1..=3 {
        syn(&mut h, a, port);
    }
    // b matches a's tag: it waits (it is not a), then is admitted into
    // the bucket's other slot.
    syn(&mut h, b, 100);
    assert!(h.source(b).expect("read").is_none(), "b waits");
    let ev = Evidence::from_stats(&h.source(a).expect("read").expect("a tracked"));
    assert_eq!(ev.total(), 3, "b's probe is not counted for a");
    syn(&mut h, b, 101);
    syn(&mut h, b, 102);
    let eb = Evidence::from_stats(&h.source(b).expect("read").expect("b tracked"));
    assert_eq!((eb.total(), eb.distinct_ports), (3, 3));
    syn(&mut h, a, 4);
    syn(&mut h, b, 103);
    let ea = Evidence::from_stats(&h.source(a).expect("read").expect("a tracked"));
    let eb = Evidence::from_stats(&h.source(b).expect("read").expect("b tracked"));
    assert_eq!((ea.total(), eb.total()), (4, 4), "each counts its own");
    let c = h.counters().expect("counters");
    assert_eq!(c.get(Counter::SourcesCreated), 2);
    assert_eq!(c.get(Counter::SourcesEvicted), 0);
}

/// `[detection] admission_slots` sizes the table at load time: with 1,024
/// slots a source is still tracked from its third probe with every probe
/// counted, and two sources that share a slot of the smaller table (not
/// of the default one) overwrite each other's waiting probes.
#[test]
fn a_smaller_admission_table_admits_the_same_way() {
    if !require_root("a_smaller_admission_table_admits_the_same_way") {
        return;
    }
    const SLOTS: u32 = 1_024;
    let detect = scanwatch_common::DetectConfig {
        admission_slots: SLOTS,
        ..Detection::default().kernel_config()
    };
    let mut h = XdpHarness::load_with(4096, &detect).expect("load the XDP program");
    let ev = overwritten_then_admitted(&mut h, v4(60, 1), 61, SLOTS);
    assert_eq!((ev.total(), ev.distinct_ports), (3, 3));
    let c = h.counters().expect("counters");
    assert_eq!(c.get(Counter::AdmissionOverwritten), 2);
    assert_eq!(c.get(Counter::SourcesCreated), 1);
}

/// The state a run of [`same_state_scenario`] leaves: per source, whether
/// it is tracked and what its slot counts (with the low half of
/// `crossed`: the triggers reported, the tool signatures' tally, the
/// evidence sent); and the counters the SYN path bumps.
type Outcome = (Vec<Option<(u64, u64, u64, u64, Vec<u16>, u64)>>, [u64; 7]);

/// SYNs from IPv4 and IPv6 sources, as plain frames or each with an
/// 802.1Q tag: new sources, repeats of a waiting SYN, new destinations
/// that admit, a tracked source's probes, two sources that take each
/// other's admission slot, a source admitted at the SYN rate by one SYN
/// repeated (then tracked with one destination), and a scan that crosses
/// the port-scan threshold and repeats its first port. With the
/// reply-aware detector on (`reply`) or off.
fn same_state_scenario(test: &str, tagged: bool, reply: bool) -> Option<Outcome> {
    if !require_root(test) {
        return None;
    }
    // The smallest admission table: two sources of one slot are near.
    // With the reply-aware detector on, first contacts wait with their SYN.
    let detection = Detection::default();
    // Evidence packets on: the scans' crossing SYNs offer theirs.
    let detect = scanwatch_common::DetectConfig {
        admission_slots: MIN_ADMISSION_SLOTS,
        evidence_packets: 4,
        ..detection.kernel_config()
    };
    let mut h = if reply {
        XdpHarness::load_reply_with(4096, detection.reply_config(), &detect)
    } else {
        XdpHarness::load_with(4096, &detect)
    }
    .expect("load the XDP program");
    let send_with = |h: &mut XdpHarness, src: IpAddr, port: u16, options: &[u8]| {
        let dst: IpAddr = if src.is_ipv6() {
            "fd00::2".parse().expect("ip")
        } else {
            TARGET.parse().expect("ip")
        };
        let syn = Transport::Tcp {
            sport: 40000,
            dport: port,
            flags: tcp::SYN,
            options: options.to_vec(),
            payload: Vec::new(),
        };
        let mut p = Packet::from_ips(src, dst, syn);
        if tagged {
            p = p.vlan(scanwatch_lab::frames::TPID_8021Q);
        }
        h.run(&p.build()).expect("test run");
    };
    // The builder's SYN (window 1024, no options) matches no tool.
    let send = |h: &mut XdpHarness, src: IpAddr, port: u16| send_with(h, src, port, &[]);
    let v6 = |i: u16| IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0, 0x60, i, 0, 0, 0, 9));
    let slot = |ip: IpAddr| {
        admission(
            key_hash(SourceKey::from_ip(ip).words()),
            MIN_ADMISSION_SLOTS,
        )
        .0
    };
    // Two IPv4 sources of one admission slot.
    let a = v4(61, 1);
    let b = (62..128u8)
        .flat_map(|x| (0..=255u8).map(move |y| v4(x, y)))
        .find(|ip| slot(*ip) == slot(a))
        .expect("a source of the same admission slot");
    let mut sources = vec![a, b];
    for i in 1..=3u8 {
        for src in [v4(60, i), v6(u16::from(i))] {
            sources.push(src);
            // New; the same SYN twice more (repeats); a new port (the
            // second waiting probe); another (admits); another (tracked).
            for port in [22, 22, 22, 23, 24, 25] {
                send(&mut h, src, port);
            }
        }
    }
    // a waits, b takes its slot, a takes it back, b again.
    for (src, port) in [(a, 80), (b, 80), (a, 80), (b, 81)] {
        send(&mut h, src, port);
    }
    // One SYN again and again: admitted at the SYN rate (in one bucket),
    // then a tracked source with one destination (no first contact).
    for src in [v4(70, 1), v6(70)] {
        sources.push(src);
        for _ in 0..300 {
            send(&mut h, src, 443);
        }
    }
    // A scan of 20 ports (it crosses `port_scan` at 15: an event and
    // evidence), then its first port again.
    for src in [v4(71, 1), v6(71)] {
        sources.push(src);
        for port in (1000..1020).chain([1000; 5]) {
            send(&mut h, src, port);
        }
    }
    // Tool signatures: nmap's SYNs (window 1024, an MSS option alone)
    // throughout (nmap named); and nmap's, then one matching no tool (the
    // tally settles: nothing is named), then an OS stack's and nmap's
    // again (they add no bit to a settled tally, read or not).
    let (mss, os) = ([2, 4, 5, 0xb4], [2, 4, 5, 0xb4, 4, 2, 1, 1]);
    for i in 0..2u8 {
        let (nmap, mixed) = if i == 0 {
            (v4(72, 1), v4(73, 1))
        } else {
            (v6(72), v6(73))
        };
        sources.extend([nmap, mixed]);
        for port in 2000..2006 {
            send_with(&mut h, nmap, port, &mss);
        }
        for (port, options) in [
            (2000, &mss[..]),
            (2001, &mss),
            (2002, &mss),
            (2003, &[]),
            (2004, &os),
            (2005, &mss),
            (2005, &mss),
        ] {
            send_with(&mut h, mixed, port, options);
        }
    }
    let states = sources
        .iter()
        .map(|src| {
            h.source(*src).expect("read").map(|s| {
                let ev = Evidence::from_stats(&s);
                (
                    ev.total(),
                    ev.probes(ProbeKind::Syn),
                    ev.distinct_ports,
                    ev.distinct_hosts,
                    ev.sample_ports,
                    s.crossed & 0xffff_ffff,
                )
            })
        })
        .collect();
    let c = h.counters().expect("counters");
    let (waiting, contacts) = match h.reply() {
        Some(maps) => {
            let r = maps.counters().expect("reply counters");
            (
                r.get(ReplyCounter::ContactsWaiting),
                r.get(ReplyCounter::Contacts),
            )
        }
        None => (0, 0),
    };
    Some((
        states,
        [
            c.get(Counter::ProbeSyn),
            c.get(Counter::SourcesCreated),
            c.get(Counter::AdmissionOverwritten),
            c.get(Counter::EventsSent),
            c.get(Counter::EvidenceSent),
            waiting,
            contacts,
        ],
    ))
}

/// A plain SYN takes the kernel's first-SYN path (`fast::new_source_syn`:
/// a new source's first SYN, a waiting source's repeat, a tracked
/// source's SYN with no first contact to record) and a tagged one the
/// general walk: the same SYNs leave the same state either way, with the
/// reply-aware detector on and off (off, every tracked source's SYN takes
/// the fast path).
#[test]
fn plain_and_tagged_syns_leave_the_same_state() {
    let test = "plain_and_tagged_syns_leave_the_same_state";
    for reply in [true, false] {
        let Some(plain) = same_state_scenario(test, false, reply) else {
            return;
        };
        let tagged = same_state_scenario(test, true, reply).expect("harness");
        assert_eq!(plain, tagged, "reply-aware detector on: {reply}");
        // The scenario did what it says: six admitted sources of three
        // ports each at admission and one more after, every SYN counted,
        // overwrites; two sources admitted at the SYN rate with one
        // destination; two scans that crossed `port_scan`, with evidence.
        let (states, counters) = plain;
        for state in &states[2..8] {
            let (total, syns, ports, hosts, _, _) = state.clone().expect("tracked");
            assert_eq!((total, syns, ports, hosts), (6, 6, 4, 1));
        }
        for state in &states[8..10] {
            let (total, syns, ports, hosts, _, _) = state.clone().expect("tracked");
            assert_eq!((total, syns, ports, hosts), (300, 300, 1, 1));
        }
        for state in &states[10..12] {
            let (total, syns, ports, hosts, _, crossed) = state.clone().expect("tracked");
            // (Past the exact set, distinct ports are an estimate.)
            assert_eq!((total, syns, hosts), (25, 25, 1));
            assert!(ports >= 15, "distinct ports: {ports}");
            assert_ne!(crossed & u64::from(scanwatch_common::trigger::PORTS), 0);
        }
        // The nmap sources are named nmap; the mixed ones nothing, and
        // their tally stays settled.
        for (state, named) in states[12..16].iter().zip([NMAP, 0, NMAP, 0]) {
            let (total, _, _, _, _, crossed) = state.clone().expect("tracked");
            assert_eq!(
                (
                    fingerprint::consistent(crossed),
                    fingerprint::settled(crossed)
                ),
                (named, named == 0),
                "{total} probes, crossed {crossed:#x}"
            );
        }
        assert_eq!(counters[0], 6 * 6 + 4 + 2 * 300 + 2 * 25 + 2 * (6 + 7));
        assert!(counters[2] >= 3, "admission overwrites: {counters:?}");
        assert_eq!(counters[3], 2, "events: {counters:?}");
        assert_eq!(counters[4], 2 * 4, "evidence: {counters:?}");
    }
}
