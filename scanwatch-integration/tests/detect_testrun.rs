//! The kernel half of detection, through BPF_PROG_TEST_RUN: the distinct
//! port/host sketches against exact counts, and the threshold crossings.
//! Needs root (CAP_BPF); fails rather than skips without it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use scanwatch::{config::Detection, detect::Evidence, kernel::testrun::XdpHarness};
use scanwatch_common::{DetectConfig, tracking::rate_bucket, trigger};
use scanwatch_integration::coarse_ns;
use scanwatch_lab::{
    frames::{Packet, Transport, tcp},
    privileged::require_root,
};

const TARGET: &str = "198.18.0.2";

fn harness(test: &str, detect: &DetectConfig) -> Option<XdpHarness> {
    if !require_root(test) {
        return None;
    }
    Some(XdpHarness::load_with(4096, detect).expect("load the XDP program"))
}

fn send(h: &mut XdpHarness, src: IpAddr, dst: IpAddr, t: Transport) {
    h.run(&Packet::from_ips(src, dst, t).build())
        .expect("test run");
}

fn evidence(h: &XdpHarness, src: IpAddr) -> Evidence {
    Evidence::from_stats(&h.source(src).expect("read").expect("tracked"))
}

fn target() -> IpAddr {
    TARGET.parse().expect("addr")
}

/// Distinct values whose estimate is checked: exact while the exact sets have
/// room (15 ports, 27 hosts), within a bound beyond (see `check`), up to 1000
/// (beyond what the bitmaps can tell apart: they saturate, never under the
/// threshold).
const COUNTS: [u32; 17] = [
    1, 2, 5, 10, 14, 15, 16, 17, 24, 25, 26, 32, 33, 100, 250, 500, 1000,
];

/// Bounds beyond the exact sets: the 128-bit port and host bitmaps are
/// held to 15% up to 500, the 64-bit UDP and ICMP ones to 20% up to 100.
const WIDE: (f64, u32) = (0.15, 500);
const NARROW: (f64, u32) = (0.20, 100);

fn check(
    what: &str,
    n: u32,
    estimate: u64,
    exact_up_to: u32,
    threshold: u32,
    (bound, up_to): (f64, u32),
) {
    let n64 = u64::from(n);
    if n <= exact_up_to {
        assert_eq!(estimate, n64, "{what}: {n} distinct must be exact");
    } else if n <= up_to {
        let err = (estimate as f64 - f64::from(n)).abs() / f64::from(n);
        assert!(
            err <= bound,
            "{what}: {n} distinct estimated {estimate} ({:.1}% off)",
            err * 100.0
        );
    }
    if n >= threshold {
        assert!(
            estimate >= u64::from(threshold),
            "{what}: {n} distinct under-counted as {estimate}"
        );
    }
    println!("{what}: {n} distinct -> estimate {estimate}");
}

#[test]
fn distinct_ports_against_exact_counts() {
    let Some(mut h) = harness(
        "distinct_ports_against_exact_counts",
        &DetectConfig::DISABLED,
    ) else {
        return;
    };
    for (i, n) in COUNTS.iter().enumerate() {
        let tcp_src = IpAddr::V4(Ipv4Addr::new(198, 18, 10, i as u8));
        let udp_src = IpAddr::V4(Ipv4Addr::new(198, 18, 11, i as u8));
        for p in 0..*n {
            // Spread like nmap's port list: not consecutive.
            let port = (p * 37 + 1) as u16;
            send(&mut h, tcp_src, target(), Transport::tcp(port, tcp::SYN));
            send(&mut h, udp_src, target(), Transport::udp(port));
        }
        let ev = evidence(&h, tcp_src);
        check("TCP ports", *n, ev.distinct_ports, 15, 15, WIDE);
        assert_eq!(ev.distinct_hosts, 1);
        assert_eq!(ev.sample_ports.len(), (*n as usize).min(16));
        assert_eq!(ev.sample_ports[0], 1);
        let ev = evidence(&h, udp_src);
        check("UDP ports", *n, ev.distinct_udp_ports, 15, 15, NARROW);
        check("ports (UDP)", *n, ev.distinct_ports, 15, 15, WIDE);
    }
}

#[test]
fn distinct_hosts_against_exact_counts() {
    let Some(mut h) = harness(
        "distinct_hosts_against_exact_counts",
        &DetectConfig::DISABLED,
    ) else {
        return;
    };
    for (i, n) in COUNTS.iter().enumerate() {
        let syn_src = IpAddr::V4(Ipv4Addr::new(198, 18, 12, i as u8));
        let ping_src = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x12, 0, 0, 0, 0, 0, i as u16));
        for d in 0..*n {
            let dst4 = IpAddr::V4(Ipv4Addr::from(0xc613_0000 + d)); // 198.19.x.y
            let dst6 = IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0x99,
                0,
                0,
                0,
                0,
                (d >> 16) as u16,
                d as u16,
            ));
            send(&mut h, syn_src, dst4, Transport::tcp(445, tcp::SYN));
            send(&mut h, ping_src, dst6, Transport::icmp(128));
        }
        let ev = evidence(&h, syn_src);
        check("hosts", *n, ev.distinct_hosts, 27, 25, WIDE);
        assert_eq!(ev.distinct_ports, 1, "one-port sweep");
        let ev = evidence(&h, ping_src);
        check("ICMPv6 hosts", *n, ev.distinct_icmp_hosts, 27, 10, NARROW);
        check("hosts (ICMPv6)", *n, ev.distinct_hosts, 27, 25, WIDE);
    }
}

/// Crossings with the default thresholds: each trigger fires once, on the
/// probe that reaches its threshold, and not again in the window.
#[test]
fn crossings_fire_once_at_the_threshold() {
    let detect = Detection::default().kernel_config();
    let Some(mut h) = harness("crossings_fire_once_at_the_threshold", &detect) else {
        return;
    };
    let src = IpAddr::V4(Ipv4Addr::new(198, 18, 20, 1));
    for port in 1..=14u16 {
        send(&mut h, src, target(), Transport::tcp(port, tcp::SYN));
    }
    assert!(h.events().is_empty(), "14 ports: below the threshold");
    send(&mut h, src, target(), Transport::tcp(15, tcp::SYN));
    let events = h.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].triggers, trigger::PORTS);
    assert_eq!(events[0].source.ip(), src);
    for port in 16..=500u16 {
        send(&mut h, src, target(), Transport::tcp(port, tcp::SYN));
    }
    assert!(h.events().is_empty(), "once per window");

    // Stealth: the 5th FIN probe.
    let fin = IpAddr::V4(Ipv4Addr::new(198, 18, 20, 2));
    for _ in 0..4 {
        send(&mut h, fin, target(), Transport::tcp(80, tcp::FIN));
    }
    assert!(h.events().is_empty());
    send(&mut h, fin, target(), Transport::tcp(80, tcp::FIN));
    assert_eq!(
        h.events().iter().map(|e| e.triggers).collect::<Vec<_>>(),
        [trigger::STEALTH]
    );

    // Host sweep on one port: the 25th host.
    let sweep = IpAddr::V4(Ipv4Addr::new(198, 18, 20, 3));
    for d in 0..25u32 {
        send(
            &mut h,
            sweep,
            IpAddr::V4(Ipv4Addr::from(0xc613_0000 + d)),
            Transport::tcp(22, tcp::SYN),
        );
        let events = h.events();
        if d < 24 {
            assert!(events.is_empty(), "host {}: {events:?}", d + 1);
        } else {
            assert_eq!(
                events.iter().map(|e| e.triggers).collect::<Vec<_>>(),
                [trigger::HOSTS]
            );
        }
    }

    // Ping sweep: the 10th ICMP host.
    let ping = IpAddr::V4(Ipv4Addr::new(198, 18, 20, 4));
    for d in 0..10u32 {
        send(
            &mut h,
            ping,
            IpAddr::V4(Ipv4Addr::from(0xc613_0100 + d)),
            Transport::icmp(8),
        );
    }
    assert_eq!(
        h.events().iter().map(|e| e.triggers).collect::<Vec<_>>(),
        [trigger::ICMP_HOSTS]
    );

    // UDP: the 15th port crosses both the UDP and the port thresholds.
    let udp = IpAddr::V4(Ipv4Addr::new(198, 18, 20, 5));
    for port in 1..=15u16 {
        send(&mut h, udp, target(), Transport::udp(port));
    }
    let triggers: u32 = h.events().iter().map(|e| e.triggers).fold(0, |a, b| a | b);
    assert_eq!(triggers, trigger::UDP_PORTS | trigger::PORTS);

    // Many connections to one port: nothing.
    let client = IpAddr::V4(Ipv4Addr::new(198, 18, 20, 6));
    for _ in 0..2000 {
        send(&mut h, client, target(), Transport::tcp(443, tcp::SYN));
    }
    assert!(h.events().is_empty(), "one port, one host: not a scan");
}

#[test]
fn syn_rate_and_window_reset() {
    let mut cfg = Detection {
        window_seconds: 1,
        ..Detection::default()
    };
    cfg.syn_flood_source.syns_per_second = 1000;
    let Some(mut h) = harness("syn_rate_and_window_reset", &cfg.kernel_config()) else {
        return;
    };
    let src = IpAddr::V4(Ipv4Addr::new(198, 18, 21, 1));
    let frame = Packet::from_ips(src, target(), Transport::tcp(80, tcp::SYN)).build();
    // 5,000 SYNs in one kernel loop: far above 1,000 per second.
    h.run_repeat(&frame, 5000).expect("run");
    assert_eq!(
        h.events().iter().map(|e| e.triggers).collect::<Vec<_>>(),
        [trigger::SYN_RATE]
    );

    let scan = IpAddr::V4(Ipv4Addr::new(198, 18, 21, 2));
    for port in 1..=15u16 {
        send(&mut h, scan, target(), Transport::tcp(port, tcp::SYN));
    }
    assert_eq!(h.events().len(), 1);
    let first = evidence(&h, scan);
    // After the 1 s window, the same scan crosses again in a new window.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for port in 1..=15u16 {
        send(&mut h, scan, target(), Transport::tcp(port, tcp::SYN));
    }
    let events = h.events();
    assert_eq!(events.len(), 1, "a new window reports again: {events:?}");
    let second = evidence(&h, scan);
    assert!(second.window_start_ns > first.window_start_ns);
    assert_eq!(second.distinct_ports, 15, "the window's sketch restarted");
    let stats = h.source(scan).expect("read").expect("tracked");
    assert_eq!(stats.probes[0], 15, "counts are the window's");
    assert!(
        stats.first_seen_ns < second.window_start_ns,
        "first seen kept"
    );
}

/// The SYN rate counts every SYN of its ~1.07 s bucket exactly, those a
/// source sent while it waited for admission included (seeded into its
/// slot): the `syn_flood_source` threshold (`syns_per_second` scaled to
/// the bucket) is crossed by the bucket's SYN that reaches it, whether the
/// repeats of one SYN admitted the source or a new destination did.
#[test]
fn the_syn_rate_counts_the_waiting_syns() {
    let mut cfg = Detection::default();
    cfg.syn_flood_source.syns_per_second = 300;
    let kernel = cfg.kernel_config();
    let rate = kernel.syn_rate;
    let Some(mut h) = harness("the_syn_rate_counts_the_waiting_syns", &kernel) else {
        return;
    };
    // The SYN whose event reports the rate, in one bucket; None when the
    // bucket changed meanwhile (the caller tries another source).
    let crossing = |h: &mut XdpHarness, src: IpAddr, ports: &[u16]| {
        let before = rate_bucket(coarse_ns());
        let mut at = None;
        for n in 1..=rate + 10 {
            let port = ports[(n as usize - 1).min(ports.len() - 1)];
            send(h, src, target(), Transport::tcp(port, tcp::SYN));
            if at.is_none()
                && h.events()
                    .iter()
                    .any(|e| e.triggers & trigger::SYN_RATE != 0)
            {
                at = Some(n);
            }
        }
        (rate_bucket(coarse_ns()) == before).then_some(at)
    };
    for (case, ports) in [
        ("repeats of one SYN", &[80u16][..]),
        ("new destinations", &[80, 81, 82]),
    ] {
        let found = (0..3u8).find_map(|attempt| {
            let src = IpAddr::V4(Ipv4Addr::new(
                198,
                18,
                23,
                10 * (ports.len() as u8) + attempt,
            ));
            crossing(&mut h, src, ports)
        });
        let at = found.expect("three attempts crossed a rate-bucket boundary");
        assert_eq!(at, Some(rate), "{case}: crossed at SYN {at:?}");
    }
}

#[test]
fn thresholds_beyond_the_exact_sets_use_the_bitmaps() {
    let mut cfg = Detection::default();
    cfg.port_scan.distinct_ports = 100;
    cfg.host_sweep.distinct_hosts = 200;
    let Some(mut h) = harness(
        "thresholds_beyond_the_exact_sets_use_the_bitmaps",
        &cfg.kernel_config(),
    ) else {
        return;
    };
    let src = IpAddr::V4(Ipv4Addr::new(198, 18, 22, 1));
    let mut crossed_at = None;
    for p in 1..=200u32 {
        send(
            &mut h,
            src,
            target(),
            Transport::tcp((p * 37) as u16, tcp::SYN),
        );
        if crossed_at.is_none() && h.events().iter().any(|e| e.triggers & trigger::PORTS != 0) {
            crossed_at = Some(p);
        }
    }
    let at = crossed_at.expect("crossed");
    println!("100-port threshold crossed at {at} distinct ports");
    assert!((90..=110).contains(&at), "crossed at {at}");
    let sweep = IpAddr::V4(Ipv4Addr::new(198, 18, 22, 2));
    let mut crossed_at = None;
    for d in 1..=400u32 {
        send(
            &mut h,
            sweep,
            IpAddr::V4(Ipv4Addr::from(0xc613_0000 + d)),
            Transport::tcp(80, tcp::SYN),
        );
        if crossed_at.is_none() && h.events().iter().any(|e| e.triggers & trigger::HOSTS != 0) {
            crossed_at = Some(d);
        }
    }
    let at = crossed_at.expect("crossed");
    println!("200-host threshold crossed at {at} distinct hosts");
    assert!((180..=220).contains(&at), "crossed at {at}");
}
