//! The XDP program on crafted frames, through BPF_PROG_TEST_RUN.
//! Needs root (CAP_BPF); fails rather than skips without it.

use std::net::IpAddr;

use scanwatch::{config::Detection, kernel::testrun::XdpHarness};
use scanwatch_common::{Counter, DetectConfig, IfaceCounters, ProbeKind};
use scanwatch_integration::coarse_ns;
use scanwatch_lab::{
    frames::{Ipv6Ext, Packet, TPID_8021AD, TPID_8021Q, Transport, tcp},
    privileged::require_root,
};

const XDP_PASS: u32 = 2;
const TARGET4: &str = "198.18.0.2";
const TARGET6: &str = "fd00::2";

/// The outcome counters: exactly one moves per packet.
const OUTCOMES: [Counter; 11] = [
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
];

/// The default configuration, but every source tracked from its first
/// probe (`admit_after` 1): these tests look at one probe per source. The
/// admission table has its own tests (`admission.rs`).
fn per_probe() -> DetectConfig {
    DetectConfig {
        admit_after: 1,
        ..Detection::default().kernel_config()
    }
}

fn harness(test: &str) -> Option<XdpHarness> {
    if !require_root(test) {
        return None;
    }
    Some(XdpHarness::load_with(4096, &per_probe()).expect("load the XDP program"))
}

/// Runs one frame and returns the single outcome counter it moved.
fn outcome_of(h: &mut XdpHarness, frame: &[u8], what: &str) -> Counter {
    let before = h.counters().expect("counters");
    let action = h.run(frame).expect("test run");
    assert_eq!(action, XDP_PASS, "{what}: every packet is passed");
    let after = h.counters().expect("counters");
    assert_eq!(
        after.get(Counter::Packets) - before.get(Counter::Packets),
        1,
        "{what}: packets +1"
    );
    let moved: Vec<Counter> = OUTCOMES
        .iter()
        .copied()
        .filter(|c| after.get(*c) != before.get(*c))
        .collect();
    assert_eq!(moved.len(), 1, "{what}: exactly one outcome, got {moved:?}");
    assert_eq!(after.get(moved[0]) - before.get(moved[0]), 1, "{what}");
    moved[0]
}

fn assert_outcomes_sum(c: &IfaceCounters) {
    let sum: u64 = OUTCOMES.iter().map(|o| c.get(*o)).sum();
    assert_eq!(sum, c.get(Counter::Packets), "outcomes add up to packets");
}

fn v4(src: &str, t: Transport) -> Packet {
    Packet::new(src, TARGET4, t)
}

fn v6(src: &str, t: Transport) -> Packet {
    Packet::new(src, TARGET6, t)
}

#[test]
fn every_probe_kind_counted_exactly_once() {
    let Some(mut h) = harness("every_probe_kind_counted_exactly_once") else {
        return;
    };
    let cases: Vec<(&str, Packet, Counter)> = vec![
        (
            "syn",
            v4("198.18.1.1", Transport::tcp(22, tcp::SYN)),
            Counter::ProbeSyn,
        ),
        (
            "fin",
            v4("198.18.1.2", Transport::tcp(22, tcp::FIN)),
            Counter::ProbeStealth,
        ),
        (
            "null",
            v4("198.18.1.3", Transport::tcp(22, 0)),
            Counter::ProbeStealth,
        ),
        (
            "xmas",
            v4(
                "198.18.1.4",
                Transport::tcp(22, tcp::FIN | tcp::PSH | tcp::URG),
            ),
            Counter::ProbeStealth,
        ),
        (
            "syn+fin",
            v4("198.18.1.5", Transport::tcp(22, tcp::SYN | tcp::FIN)),
            Counter::ProbeStealth,
        ),
        (
            "udp",
            v4("198.18.1.6", Transport::udp(53)),
            Counter::ProbeUdp,
        ),
        (
            "icmp echo",
            v4("198.18.1.7", Transport::icmp(8)),
            Counter::ProbeIcmpEcho,
        ),
        (
            "icmp timestamp",
            v4("198.18.1.8", Transport::icmp(13)),
            Counter::ProbeIcmpOtherProbe,
        ),
        (
            "icmp info",
            v4("198.18.1.9", Transport::icmp(15)),
            Counter::ProbeIcmpOtherProbe,
        ),
        (
            "icmp mask",
            v4("198.18.1.10", Transport::icmp(17)),
            Counter::ProbeIcmpOtherProbe,
        ),
        (
            "ipv4 non-first fragment",
            v4("198.18.1.11", Transport::tcp(22, tcp::SYN)).ipv4_fragment(3, false),
            Counter::ProbeFragment,
        ),
        (
            "ipv4 first fragment with 8 bytes of TCP (nmap -f): a stealth probe",
            v4("198.18.1.12", Transport::tcp(22, tcp::SYN))
                .ipv4_fragment(0, true)
                .transport_len(8),
            Counter::ProbeStealth,
        ),
        (
            "ipv6 syn",
            v6("fd00:1:1::1", Transport::tcp(22, tcp::SYN)),
            Counter::ProbeSyn,
        ),
        (
            "ipv6 fin",
            v6("fd00:1:2::1", Transport::tcp(22, tcp::FIN)),
            Counter::ProbeStealth,
        ),
        (
            "ipv6 udp",
            v6("fd00:1:3::1", Transport::udp(53)),
            Counter::ProbeUdp,
        ),
        (
            "icmpv6 echo",
            v6("fd00:1:4::1", Transport::icmp(128)),
            Counter::ProbeIcmpEcho,
        ),
        (
            "icmpv6 node information query",
            v6("fd00:1:5::1", Transport::icmp(139)),
            Counter::ProbeIcmpOtherProbe,
        ),
        (
            "ipv6 non-first fragment",
            v6("fd00:1:6::1", Transport::udp(53)).ipv6_ext(Ipv6Ext::Fragment {
                offset: 10,
                more: false,
            }),
            Counter::ProbeFragment,
        ),
    ];
    for (what, packet, expected) in &cases {
        let got = outcome_of(&mut h, &packet.build(), what);
        assert_eq!(got, *expected, "{what}");
        let stats = h
            .source(packet.src)
            .expect("map read")
            .unwrap_or_else(|| panic!("{what}: source tracked"));
        assert_eq!(stats.total_probes(), 1, "{what}: one probe for its source");
        let kind = ProbeKind::ALL[*expected as usize];
        assert_eq!(
            stats.probes_of(kind),
            1,
            "{what}: counted as {}",
            kind.name()
        );
        assert_eq!(stats.first_seen_ns, stats.last_seen_ns);
        assert!(stats.first_seen_ns > 0);
    }
    assert_eq!(h.sources().expect("sources").len(), cases.len());
    assert_outcomes_sum(&h.counters().expect("counters"));
}

#[test]
fn non_probes_are_counted_but_not_tracked() {
    let Some(mut h) = harness("non_probes_are_counted_but_not_tracked") else {
        return;
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "ack",
            v4("198.18.2.1", Transport::tcp(22, tcp::ACK)).build(),
        ),
        ("ack+psh with data", {
            let mut p = v4("198.18.2.2", Transport::tcp(443, tcp::ACK | tcp::PSH));
            if let Transport::Tcp { payload, .. } = &mut p.transport {
                payload.extend_from_slice(&[0x17; 100]);
            }
            p.build()
        }),
        (
            "syn+ack",
            v4("198.18.2.3", Transport::tcp(22, tcp::SYN | tcp::ACK)).build(),
        ),
        (
            "rst",
            v4("198.18.2.4", Transport::tcp(22, tcp::RST)).build(),
        ),
        (
            "icmp echo reply",
            v4("198.18.2.5", Transport::icmp(0)).build(),
        ),
        (
            "icmp unreachable",
            v4("198.18.2.6", Transport::icmp(3)).build(),
        ),
        (
            "icmpv6 neighbour solicitation",
            v6("fd00:2:1::1", Transport::icmp(135)).build(),
        ),
        (
            "gre",
            v4(
                "198.18.2.7",
                Transport::Raw {
                    protocol: 47,
                    bytes: vec![0; 8],
                },
            )
            .build(),
        ),
    ];
    for (what, frame) in &cases {
        assert_eq!(outcome_of(&mut h, frame, what), Counter::NotProbe, "{what}");
    }
    assert!(h.sources().expect("sources").is_empty(), "nothing tracked");

    let mut arp = vec![0xff; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    assert_eq!(outcome_of(&mut h, &arp, "arp"), Counter::NotIp);
}

#[test]
fn vlan_and_qinq() {
    let Some(mut h) = harness("vlan_and_qinq") else {
        return;
    };
    let one = v4("198.18.3.1", Transport::tcp(22, tcp::SYN)).vlan(TPID_8021Q);
    let two = v4("198.18.3.2", Transport::tcp(22, tcp::SYN))
        .vlan(TPID_8021AD)
        .vlan(TPID_8021Q);
    let two_v6 = v6("fd00:3:1::1", Transport::udp(161))
        .vlan(TPID_8021AD)
        .vlan(TPID_8021Q);
    let three = v4("198.18.3.3", Transport::tcp(22, tcp::SYN))
        .vlan(TPID_8021AD)
        .vlan(TPID_8021Q)
        .vlan(TPID_8021Q);
    assert_eq!(
        outcome_of(&mut h, &one.build(), "802.1Q"),
        Counter::ProbeSyn
    );
    assert_eq!(outcome_of(&mut h, &two.build(), "QinQ"), Counter::ProbeSyn);
    assert_eq!(
        outcome_of(&mut h, &two_v6.build(), "QinQ v6"),
        Counter::ProbeUdp
    );
    assert_eq!(
        outcome_of(&mut h, &three.build(), "three tags"),
        Counter::NotIp,
        "more than two tags are not parsed"
    );
    for p in [&one, &two, &two_v6] {
        assert!(
            h.source(p.src).expect("read").is_some(),
            "{} tracked",
            p.src
        );
    }
}

#[test]
fn ipv4_options() {
    let Some(mut h) = harness("ipv4_options") else {
        return;
    };
    // Record-route style option, 4 bytes (IHL 6), and the 40-byte maximum (IHL 15).
    let small = v4("198.18.4.1", Transport::tcp(80, tcp::SYN)).ipv4_options(&[7, 3, 4]);
    let max = v4("198.18.4.2", Transport::tcp(80, tcp::FIN)).ipv4_options(&[1; 40]);
    assert_eq!(small.build()[14], 0x46);
    assert_eq!(max.build()[14], 0x4f);
    assert_eq!(
        outcome_of(&mut h, &small.build(), "IHL 6"),
        Counter::ProbeSyn
    );
    assert_eq!(
        outcome_of(&mut h, &max.build(), "IHL 15"),
        Counter::ProbeStealth
    );
}

#[test]
fn ipv6_extension_headers() {
    let Some(mut h) = harness("ipv6_extension_headers") else {
        return;
    };
    let chain = v6("fd00:5:1::1", Transport::tcp(22, tcp::SYN))
        .ipv6_ext(Ipv6Ext::HopByHop)
        .ipv6_ext(Ipv6Ext::DestinationOptions)
        .ipv6_ext(Ipv6Ext::Routing)
        .ipv6_ext(Ipv6Ext::Fragment {
            offset: 0,
            more: false,
        })
        .ipv6_ext(Ipv6Ext::DestinationOptions);
    assert_eq!(
        outcome_of(&mut h, &chain.build(), "5 ext headers"),
        Counter::ProbeSyn
    );

    // First fragment (offset 0, more fragments) with a full header: classified by it.
    let first = v6("fd00:5:2::1", Transport::icmp(128)).ipv6_ext(Ipv6Ext::Fragment {
        offset: 0,
        more: true,
    });
    assert_eq!(
        outcome_of(&mut h, &first.build(), "first fragment"),
        Counter::ProbeIcmpEcho
    );

    let mut eight = v6("fd00:5:3::1", Transport::udp(53));
    for _ in 0..8 {
        eight = eight.ipv6_ext(Ipv6Ext::DestinationOptions);
    }
    assert_eq!(
        outcome_of(&mut h, &eight.build(), "8 ext headers"),
        Counter::ProbeUdp
    );

    let mut nine = v6("fd00:5:4::1", Transport::udp(53));
    for _ in 0..9 {
        nine = nine.ipv6_ext(Ipv6Ext::DestinationOptions);
    }
    assert_eq!(
        outcome_of(&mut h, &nine.build(), "9 ext headers"),
        Counter::Ipv6ExtChainTooLong
    );
    assert!(
        h.source("fd00:5:4::1".parse().expect("addr"))
            .expect("read")
            .is_none()
    );
}

/// Cuts a frame at every offset from the end of the Ethernet header to one
/// byte short of complete: each cut is passed and counted as truncated.
fn assert_every_cut_truncated(h: &mut XdpHarness, frame: &[u8], what: &str) {
    for cut in 14..frame.len() {
        let got = outcome_of(h, &frame[..cut], &format!("{what} cut at {cut}"));
        assert_eq!(
            got,
            Counter::Truncated,
            "{what} cut at {cut} of {}",
            frame.len()
        );
    }
    // The kernel refuses to run XDP on frames shorter than an Ethernet header.
    for cut in 0..14 {
        assert!(
            h.run(&frame[..cut]).is_err(),
            "kernel rejects a {cut}-byte frame"
        );
    }
    assert_ne!(
        outcome_of(h, frame, what),
        Counter::Truncated,
        "{what} uncut"
    );
}

#[test]
fn truncated_at_every_offset() {
    let Some(mut h) = harness("truncated_at_every_offset") else {
        return;
    };
    let mut syn = v4("198.18.6.1", Transport::tcp(443, tcp::SYN));
    if let Transport::Tcp { options, .. } = &mut syn.transport {
        options.extend_from_slice(&[2, 4, 0x05, 0xb4]); // MSS, as nmap sends
    }
    assert_every_cut_truncated(&mut h, &syn.build(), "IPv4 SYN");
    let syn6 = v6("fd00:6:1::1", Transport::tcp(443, tcp::SYN)).ipv6_ext(Ipv6Ext::HopByHop);
    assert_every_cut_truncated(&mut h, &syn6.build(), "IPv6 SYN");
    let vlan = v4("198.18.6.2", Transport::tcp(443, tcp::SYN))
        .vlan(TPID_8021AD)
        .vlan(TPID_8021Q);
    assert_every_cut_truncated(&mut h, &vlan.build(), "QinQ SYN");
    let icmp = v4("198.18.6.3", Transport::icmp(8));
    assert_every_cut_truncated(&mut h, &icmp.build(), "ICMP echo");
    assert_outcomes_sum(&h.counters().expect("counters"));
}

#[test]
fn malformed_headers() {
    let Some(mut h) = harness("malformed_headers") else {
        return;
    };
    let base = v4("198.18.7.1", Transport::tcp(22, tcp::SYN)).build();
    let mut bad_version = base.clone();
    bad_version[14] = 0x55;
    let mut bad_ihl = base.clone();
    bad_ihl[14] = 0x44;
    let mut short_total = base.clone();
    short_total[16..18].copy_from_slice(&10u16.to_be_bytes());
    let mut bad_doff = base.clone();
    bad_doff[14 + 20 + 12] = 0x40;
    let mut long_doff = base.clone();
    long_doff[14 + 20 + 12] = 0xf0; // 60-byte header in a 20-byte segment
    let mut short_tcp = base.clone();
    short_tcp[16..18].copy_from_slice(&30u16.to_be_bytes()); // 10 bytes of TCP, not a fragment
    let mut bad_v6 = v6("fd00:7:1::1", Transport::udp(1)).build();
    bad_v6[14] = 0x40;
    let over_claiming_ext = {
        let mut f = v6("fd00:7:2::1", Transport::udp(1))
            .ipv6_ext(Ipv6Ext::HopByHop)
            .build();
        f[14 + 40 + 1] = 200; // hop-by-hop claims 1608 bytes
        f
    };
    for (what, frame) in [
        ("IP version 5", &bad_version),
        ("IHL 4", &bad_ihl),
        ("total length below IHL", &short_total),
        ("TCP data offset 4", &bad_doff),
        ("TCP data offset beyond segment", &long_doff),
        ("TCP header cut by IP length", &short_tcp),
        ("IPv6 version 4", &bad_v6),
        ("extension header beyond payload", &over_claiming_ext),
    ] {
        assert_eq!(
            outcome_of(&mut h, frame, what),
            Counter::Malformed,
            "{what}"
        );
    }
    assert!(h.sources().expect("sources").is_empty());
}

/// The XDP program's fast path (`scanwatch-ebpf/src/fast.rs`) takes only
/// an untagged IPv4 TCP segment with a 20-byte IP header, no fragment,
/// lengths that hold, and no probe flags: every variant of an ACK that
/// misses one of these takes the general path and gets its verdict.
#[test]
fn acks_beside_the_fast_path_get_the_general_verdict() {
    let Some(mut h) = harness("acks_beside_the_fast_path_get_the_general_verdict") else {
        return;
    };
    let ack = |src: &str| {
        let mut p = v4(src, Transport::tcp(443, tcp::ACK | tcp::PSH));
        if let Transport::Tcp { payload, .. } = &mut p.transport {
            payload.extend_from_slice(&[0x17; 64]);
        }
        p
    };
    let base = ack("198.18.8.1").build();
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut frame = base.clone();
        f(&mut frame);
        frame
    };
    let total = |len: u16| move |f: &mut Vec<u8>| f[16..18].copy_from_slice(&len.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>, Counter)> = vec![
        ("plain ACK", base.clone(), Counter::NotProbe),
        (
            "ACK with IPv4 options",
            ack("198.18.8.2").ipv4_options(&[1, 1, 1, 0]).build(),
            Counter::NotProbe,
        ),
        (
            "VLAN-tagged ACK",
            ack("198.18.8.3").vlan(TPID_8021Q).build(),
            Counter::NotProbe,
        ),
        (
            "IPv6 ACK",
            {
                let mut p = v6("fd00:8::1", Transport::tcp(443, tcp::ACK));
                if let Transport::Tcp { payload, .. } = &mut p.transport {
                    payload.extend_from_slice(&[0x17; 64]);
                }
                p.build()
            },
            Counter::NotProbe,
        ),
        (
            "ACK, first fragment",
            edit(&|f| f[20] = 0x20),
            Counter::NotProbe,
        ),
        ("ACK, DF set", edit(&|f| f[20] = 0x40), Counter::NotProbe),
        (
            "ACK, later fragment",
            edit(&|f| f[21] = 0x10),
            Counter::ProbeFragment,
        ),
        (
            "ACK, IP version 5",
            edit(&|f| f[14] = 0x55),
            Counter::Malformed,
        ),
        (
            "ACK, TCP data offset 4",
            edit(&|f| f[46] = 0x40),
            Counter::Malformed,
        ),
        (
            "ACK, TCP header beyond the datagram",
            edit(&total(30)),
            Counter::Malformed,
        ),
        (
            "ACK, datagram beyond the frame",
            edit(&total(2000)),
            Counter::Truncated,
        ),
        (
            "ACK, options beyond the segment",
            edit(&|f| {
                total(50)(f);
                f[46] = 0xf0;
            }),
            Counter::Malformed,
        ),
        (
            "FIN without ACK",
            edit(&|f| f[47] = 0x01),
            Counter::ProbeStealth,
        ),
    ];
    for (what, frame, want) in &cases {
        assert_eq!(outcome_of(&mut h, frame, what), *want, "{what}");
    }
    assert_outcomes_sum(&h.counters().expect("counters"));
}

#[test]
fn repeated_probes_accumulate_per_source() {
    let Some(mut h) = harness("repeated_probes_accumulate_per_source") else {
        return;
    };
    let src: IpAddr = "198.18.8.1".parse().expect("addr");
    for port in 1..=100u16 {
        let f = Packet::from_ips(
            src,
            TARGET4.parse().expect("addr"),
            Transport::tcp(port, tcp::SYN),
        );
        h.run(&f.build()).expect("run");
    }
    h.run(&Packet::from_ips(src, TARGET4.parse().expect("addr"), Transport::udp(53)).build())
        .expect("run");
    let s = h.source(src).expect("read").expect("tracked");
    assert_eq!(s.probes_of(ProbeKind::Syn), 100);
    assert_eq!(s.probes_of(ProbeKind::Udp), 1);
    assert!(s.last_seen_ns >= s.first_seen_ns);
    let c = h.counters().expect("counters");
    assert_eq!(c.get(Counter::SourcesCreated), 1);
    assert_eq!(c.get(Counter::SourceUpdateErrors), 0);
    // Repeat in the kernel: 10,000 more SYNs of one frame.
    let (action, _) = h
        .run_repeat(
            &Packet::from_ips(
                src,
                TARGET4.parse().expect("addr"),
                Transport::tcp(80, tcp::SYN),
            )
            .build(),
            10_000,
        )
        .expect("run");
    assert_eq!(action, XDP_PASS);
    let s = h.source(src).expect("read").expect("tracked");
    assert_eq!(s.probes_of(ProbeKind::Syn), 10_100);
}

#[test]
fn source_table_stays_bounded() {
    let Some(_) = harness("source_table_stays_bounded") else {
        return;
    };
    let mut h = XdpHarness::load_with(1024, &per_probe()).expect("load");
    for i in 0..5000u32 {
        let src = std::net::Ipv4Addr::from(0xc612_0000 | i); // 198.18.x.y
        let f = Packet::from_ips(
            IpAddr::V4(src),
            TARGET4.parse().expect("addr"),
            Transport::tcp(22, tcp::SYN),
        );
        h.run(&f.build()).expect("run");
    }
    let tracked = h.sources().expect("sources").len() as u64;
    assert!(tracked <= 1024, "{tracked} sources in a 1024-slot table");
    assert!(
        tracked >= 900,
        "{tracked}: two candidate slots fill the table"
    );
    let c = h.counters().expect("counters");
    assert_eq!(c.get(Counter::ProbeSyn), 5000);
    assert_eq!(
        c.get(Counter::SourcesCreated),
        5000,
        "every source admitted"
    );
    assert_eq!(
        c.get(Counter::SourcesEvicted),
        5000 - tracked,
        "every source not in the table was evicted, and counted"
    );
    assert_eq!(c.get(Counter::SourceUpdateErrors), 0);
}

#[test]
fn source_map_memory_per_entry() {
    let Some(_) = harness("source_map_memory_per_entry") else {
        return;
    };
    // Read from the kernel (map fdinfo), not computed by hand; the README quotes this.
    for size in [1024u32, 262_144] {
        let h = XdpHarness::load(size).expect("load");
        let bytes = h
            .maps()
            .source_map_memory_bytes()
            .expect("memlock in fdinfo");
        let per_entry = bytes / u64::from(size);
        println!(
            "source map: {size} entries -> {bytes} bytes of kernel memory ({per_entry} bytes per source)"
        );
        // The key is in the slot: a slot is all a source costs.
        let slot = std::mem::size_of::<scanwatch_common::SourceStats>() as u64;
        assert!(per_entry >= slot, "{per_entry} bytes per entry");
        // An mmap-able array adds one page of header to the slots.
        assert!(
            bytes <= u64::from(size) * slot + 4096,
            "{bytes} bytes for {size} slots"
        );
        if size == 262_144 {
            assert_eq!(
                per_entry, 256,
                "docs say 256 bytes per source at the default size"
            );
        }
    }
}

/// The programs' clock (`clock.rs`: the coarse clock cached per `jiffies`)
/// is CLOCK_MONOTONIC_COARSE, at most a tick late, and moves with it: a
/// probe 60 ms after another is stamped about 60 ms later, not with the
/// cached time of the first.
#[test]
fn probes_are_stamped_with_the_coarse_monotonic_clock() {
    let Some(mut h) = harness("probes_are_stamped_with_the_coarse_monotonic_clock") else {
        return;
    };
    // Two ticks at HZ=100, the coarsest kernel configuration.
    const LATE_NS: u64 = 20_000_000;
    let probe = v4("198.18.7.1", Transport::tcp(22, tcp::SYN)).build();
    let stamp = |h: &mut XdpHarness| {
        let before = coarse_ns();
        h.run(&probe).expect("test run");
        let after = coarse_ns();
        let stats = h
            .source("198.18.7.1".parse().expect("addr"))
            .expect("map read")
            .expect("tracked");
        let at = stats.last_seen_ns;
        // Ahead only by a timekeeper update in flight between the reads.
        assert!(
            at + LATE_NS >= before && at <= after + LATE_NS,
            "stamp {at} outside [{before}, {after}] by over {LATE_NS} ns"
        );
        at
    };
    let first = stamp(&mut h);
    // Many packets in one tick read the cache.
    for _ in 0..1000 {
        h.run(&probe).expect("test run");
    }
    std::thread::sleep(std::time::Duration::from_millis(60));
    let second = stamp(&mut h);
    assert!(
        second - first >= 60_000_000 - LATE_NS,
        "60 ms later: {} ns later",
        second - first
    );
}
