//! The kernel drop path through BPF_PROG_TEST_RUN: blocks with expiries
//! enforced by the kernel alone, CIDR blocks, drop and tag feeds, never_block
//! winning over everything, a full blocklist, dry run.
//! Needs root (CAP_BPF); fails rather than skips without it.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;
use scanwatch::{
    config::{FeedAction, FeedConfig, MitigationConfig},
    kernel::testrun::XdpHarness,
    model::{KernelClock, ScanType},
    output::mitigation::{Action, BlockError},
};
use scanwatch_common::{Counter, SourceKey, block_origin};
use scanwatch_integration::TakeMitigation;
use scanwatch_lab::{
    frames::{Packet, Transport, tcp},
    privileged::require_root,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn syn_from(src: &str) -> Vec<u8> {
    Packet::new(src, "198.18.0.2", Transport::tcp(22, tcp::SYN)).build()
}

fn ack_from(src: &str) -> Vec<u8> {
    Packet::new(src, "198.18.0.2", Transport::tcp(443, tcp::ACK)).build()
}

fn net(s: &str) -> IpNet {
    s.parse().expect("network")
}

fn cfg() -> MitigationConfig {
    MitigationConfig {
        auto_block: true,
        never_block_host_addresses: false,
        ..MitigationConfig::default()
    }
}

#[test]
fn blocks_drop_until_they_expire_without_the_agent() {
    if !require_root("blocks_drop_until_they_expire_without_the_agent") {
        return;
    }
    let mut h = XdpHarness::load(4096).expect("load");
    let mut m = h.take_mitigation(cfg(), vec![]).expect("maps");
    // Nothing blocked: everything passes, and the kernel skips the lookups.
    assert_eq!(h.run(&syn_from("198.18.30.1")).expect("run"), XDP_PASS);

    m.block(
        net("198.18.30.1/32"),
        Some(Duration::from_secs(60)),
        block_origin::MANUAL,
        "test",
    )
    .expect("block");
    m.block(
        net("198.18.30.2/32"),
        Some(Duration::from_secs(1)),
        block_origin::MANUAL,
        "short",
    )
    .expect("block");
    m.block(net("fd00::30:1/128"), None, block_origin::MANUAL, "v6")
        .expect("block");
    assert_eq!(h.run(&syn_from("198.18.30.1")).expect("run"), XDP_DROP);
    assert_eq!(
        h.run(&ack_from("198.18.30.1")).expect("run"),
        XDP_DROP,
        "all its packets, not only probes"
    );
    assert_eq!(h.run(&syn_from("198.18.30.2")).expect("run"), XDP_DROP);
    assert_eq!(
        h.run(&Packet::new("fd00::30:1", "fd00::2", Transport::udp(53)).build())
            .expect("run"),
        XDP_DROP
    );
    assert_eq!(
        h.run(&syn_from("198.18.30.3")).expect("run"),
        XDP_PASS,
        "others pass"
    );
    // The kernel ends the short block by itself: the agent does nothing here.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        h.run(&syn_from("198.18.30.2")).expect("run"),
        XDP_PASS,
        "expired block"
    );
    assert_eq!(h.run(&syn_from("198.18.30.1")).expect("run"), XDP_DROP);
    let c = h.counters().expect("counters");
    assert_eq!(c.get(Counter::DroppedBlocklist), 5);
    // Dropped packets are not tracked as probes (fd00::30:1 only ever sent while blocked).
    assert!(
        h.source("fd00::30:1".parse().expect("ip"))
            .expect("read")
            .is_none()
    );
    // The agent's sweep removes the expired entry; listing shows the live ones.
    m.expire();
    let rows = m.list(&KernelClock::now());
    let targets: Vec<&str> = rows.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["198.18.30.1/32", "fd00::30:1/128"]);
    assert!(rows[0].remaining_seconds.is_some_and(|s| s <= 60));
    assert_eq!(rows[1].remaining_seconds, None);
    m.unblock(net("198.18.30.1/32")).expect("unblock");
    assert_eq!(h.run(&syn_from("198.18.30.1")).expect("run"), XDP_PASS);
    assert!(matches!(
        m.unblock(net("198.18.30.1/32")),
        Err(BlockError::NotBlocked(_))
    ));
}

#[test]
fn cidr_blocks_feeds_and_never_block() {
    if !require_root("cidr_blocks_feeds_and_never_block") {
        return;
    }
    let mut h = XdpHarness::load(4096).expect("load");
    let never = vec![net("198.18.33.7/32")];
    let mut m = h.take_mitigation(cfg(), never).expect("maps");
    m.block(
        net("198.18.32.0/24"),
        Some(Duration::from_secs(60)),
        block_origin::MANUAL,
        "cidr",
    )
    .expect("block");
    assert_eq!(h.run(&syn_from("198.18.32.9")).expect("run"), XDP_DROP);
    assert_eq!(h.run(&syn_from("198.18.33.9")).expect("run"), XDP_PASS);

    // never_block: a manual block of it (or of a network holding it) is refused...
    assert!(matches!(
        m.block(net("198.18.33.7/32"), None, block_origin::MANUAL, "x"),
        Err(BlockError::NeverBlock(..))
    ));
    assert!(matches!(
        m.block(net("198.18.33.0/24"), None, block_origin::MANUAL, "x"),
        Err(BlockError::NeverBlock(..))
    ));
    // ...and a detection only alerts.
    let clock = KernelClock::now();
    assert_eq!(
        m.on_detection(
            "198.18.33.7/32".parse().expect("net"),
            &[ScanType::PortScan],
            &clock
        ),
        Action::NeverBlock
    );

    // Feeds: a drop feed with a network, a tag feed with an address, one bad line.
    let dir = std::env::temp_dir().join(format!("scanwatch-feeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("drop.netset"),
        "# drop\n198.18.34.0/24\n198.18.33.0/24 ; holds a never_block address\nbogus\n",
    )
    .expect("feed");
    std::fs::write(dir.join("tag.txt"), "198.18.35.5\n").expect("feed");
    let feeds = vec![
        FeedConfig {
            name: "dropper".into(),
            path: dir.join("drop.netset"),
            action: FeedAction::Drop,
        },
        FeedConfig {
            name: "watch".into(),
            path: dir.join("tag.txt"),
            action: FeedAction::Tag,
        },
    ];
    let problems = m.load_feeds(&feeds);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("drop.netset:4") && problems[0].contains("bogus"),
        "{problems:?}"
    );
    assert_eq!(m.feed_stats["dropper"].entries, 2);
    assert_eq!(m.feed_stats["dropper"].invalid_lines_total, 1);
    assert_eq!(
        h.run(&syn_from("198.18.34.1")).expect("run"),
        XDP_DROP,
        "drop feed"
    );
    assert_eq!(
        h.run(&syn_from("198.18.33.7")).expect("run"),
        XDP_PASS,
        "never_block beats the drop feed"
    );
    assert_eq!(h.run(&syn_from("198.18.33.8")).expect("run"), XDP_DROP);
    // Three probes to three ports: a source is tracked from its third
    // (admission; repeats of one SYN would wait).
    for port in [22, 23, 24] {
        let syn = Packet::new("198.18.35.5", "198.18.0.2", Transport::tcp(port, tcp::SYN)).build();
        assert_eq!(h.run(&syn).expect("run"), XDP_PASS, "tag feeds do not drop");
    }
    let tagged = h
        .source("198.18.35.5".parse().expect("ip"))
        .expect("read")
        .expect("tracked");
    assert_eq!(
        m.feed_name(u32::from(tagged.known_bad)).as_deref(),
        Some("watch")
    );
    let c = h.counters().expect("counters");
    assert_eq!(c.get(Counter::DroppedFeed), 2);
    assert_eq!(c.get(Counter::NeverBlockSpared), 1);

    // Reload without the drop feed: its entries go, blocks stay.
    let problems = m.load_feeds(&feeds[1..]);
    assert!(problems.is_empty());
    assert_eq!(
        h.run(&syn_from("198.18.34.1")).expect("run"),
        XDP_PASS,
        "feed removed"
    );
    assert_eq!(
        h.run(&syn_from("198.18.32.9")).expect("run"),
        XDP_DROP,
        "block kept across reload"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn full_blocklist_and_dry_run() {
    if !require_root("full_blocklist_and_dry_run") {
        return;
    }
    let mut h = XdpHarness::load_with_capacity(4096, 16).expect("load");
    let mut m = h
        .take_mitigation(
            MitigationConfig {
                capacity: 16,
                ..cfg()
            },
            vec![],
        )
        .expect("maps");
    for i in 0..16u8 {
        m.block(
            net(&format!("198.18.36.{i}/32")),
            Some(Duration::from_secs(60)),
            block_origin::MANUAL,
            "fill",
        )
        .expect("block");
    }
    // Full: a manual block is refused with a clear error; a detection is
    // alerted but not blocked; both are counted. Existing blocks stay.
    let e = m
        .block(
            net("198.18.36.200/32"),
            Some(Duration::from_secs(60)),
            block_origin::MANUAL,
            "x",
        )
        .expect_err("full");
    assert_eq!(
        e.to_string(),
        "the blocklist is full (16 entries): 198.18.36.200/32 not blocked"
    );
    let clock = KernelClock::now();
    assert_eq!(
        m.on_detection(
            "198.18.36.201/32".parse().expect("net"),
            &[ScanType::PortScan],
            &clock
        ),
        Action::BlocklistFull
    );
    assert_eq!(m.stats.blocklist_full, 2);
    assert_eq!(h.run(&syn_from("198.18.36.201")).expect("run"), XDP_PASS);
    assert_eq!(h.run(&syn_from("198.18.36.3")).expect("run"), XDP_DROP);
    // Renewing an existing block still works when full.
    m.block(
        net("198.18.36.3/32"),
        Some(Duration::from_secs(120)),
        block_origin::MANUAL,
        "renew",
    )
    .expect("renew");

    // Dry run: would_block, nothing dropped.
    let mut h = XdpHarness::load(4096).expect("load");
    let mut m = h
        .take_mitigation(
            MitigationConfig {
                dry_run: true,
                ..cfg()
            },
            vec![],
        )
        .expect("maps");
    let src: IpAddr = "198.18.37.1".parse().expect("ip");
    assert!(matches!(
        m.on_detection(IpNet::from(src), &[ScanType::PortScan], &clock),
        Action::WouldBlock { .. }
    ));
    assert_eq!(h.run(&syn_from("198.18.37.1")).expect("run"), XDP_PASS);
    assert!(m.list(&clock).is_empty());
    let _ = SourceKey::from_ip(src);
}

#[test]
fn repeat_offenders_get_longer_blocks() {
    if !require_root("repeat_offenders_get_longer_blocks") {
        return;
    }
    let mut h = XdpHarness::load(4096).expect("load");
    let mut m = h
        .take_mitigation(
            MitigationConfig {
                default_ttl_seconds: 100,
                repeat_factor: 3.0,
                max_ttl_seconds: 500,
                ..cfg()
            },
            vec![],
        )
        .expect("maps");
    let clock = KernelClock::now();
    let src: IpAddr = "198.18.38.1".parse().expect("ip");
    let mut remaining = Vec::new();
    for _ in 0..3 {
        assert!(matches!(
            m.on_detection(IpNet::from(src), &[ScanType::PortScan], &clock),
            Action::Blocked { .. }
        ));
        remaining.push(m.list(&clock)[0].remaining_seconds.expect("ttl"));
    }
    // 100 s, then 300 s, then capped at 500 s.
    assert!((98..=100).contains(&remaining[0]), "{remaining:?}");
    assert!((298..=300).contains(&remaining[1]), "{remaining:?}");
    assert!((498..=500).contains(&remaining[2]), "{remaining:?}");
    assert_eq!(m.list(&clock)[0].offenses, 3);
}

/// A SYN from `src` to an address of its family.
fn syn_any(src: &str) -> Vec<u8> {
    let dst = if src.contains(':') {
        "fd00::2"
    } else {
        "198.18.0.2"
    };
    Packet::new(src, dst, Transport::tcp(22, tcp::SYN)).build()
}

#[test]
fn networks_of_every_length_drop_exactly_what_they_cover() {
    if !require_root("networks_of_every_length_drop_exactly_what_they_cover") {
        return;
    }
    // The prefilter keys networks by /24, /16, /8 (IPv4) and /48, /32, /16
    // (IPv6); longer ones are kept coarser, wider ones expanded, IPv6
    // below /8 sends every IPv6 source to the lookups, and IPv6 networks
    // holding the IPv4-mapped range cover IPv4 too. Each network alone, as
    // a block and as a drop-feed entry: sources inside drop, sources
    // outside (many in the same coarse prefix) pass.
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("0.0.0.0/0", &["198.18.40.1", "1.2.3.4"], &["fd00::1"]),
        (
            "128.0.0.0/1",
            &["198.18.40.1", "255.1.1.1"],
            &["127.255.255.255", "1.2.3.4"],
        ),
        (
            "198.0.0.0/7",
            &["199.255.0.1", "::ffff:198.18.40.1"],
            &["197.255.255.255", "200.0.0.0"],
        ),
        ("198.16.0.0/15", &["198.17.1.1"], &["198.18.0.1"]),
        (
            "198.18.128.0/17",
            &["198.18.200.1"],
            &["198.18.127.255", "198.18.0.1"],
        ),
        (
            "198.18.40.0/23",
            &["198.18.41.255"],
            &["198.18.42.0", "198.18.39.255"],
        ),
        (
            "198.18.40.64/26",
            &["198.18.40.100"],
            &["198.18.40.63", "198.18.40.128"],
        ),
        ("198.18.40.6/31", &["198.18.40.7"], &["198.18.40.8"]),
        ("::/0", &["fd00::1", "198.18.40.1"], &[]),
        ("8000::/1", &["fd00::1"], &["7fff::1", "198.18.40.1"]),
        ("fc00::/7", &["fd00::1"], &["fe00::1", "198.18.40.1"]),
        ("fd00::/8", &["fd12::1"], &["fe00::1", "fc00::1"]),
        (
            "fd00:1:8000::/33",
            &["fd00:1:8000::5"],
            &["fd00:1:7fff::1", "fd00:2::1"],
        ),
        (
            "fd00:1:2::/47",
            &["fd00:1:3::9"],
            &["fd00:1:4::1", "fd00:1:1::1"],
        ),
        (
            "fd00:1:2:3:4::/80",
            &["fd00:1:2:3:4::9"],
            &["fd00:1:2:3:5::1", "fd00:1:2::1"],
        ),
        (
            "::ffff:198.18.44.0/120",
            &["198.18.44.9", "::ffff:198.18.44.10"],
            &["198.18.45.1", "fd00::1"],
        ),
        ("::/64", &["198.18.40.1", "::1"], &["fd00::1", "0:0:0:1::1"]),
        (
            "::ffff:0:0/96",
            &["198.18.40.1"],
            &["fd00::1", "::fffe:1.2.3.4"],
        ),
    ];
    let mut h = XdpHarness::load(4096).expect("load");
    let mut m = h.take_mitigation(cfg(), vec![]).expect("maps");
    let dir = std::env::temp_dir().join(format!("scanwatch-lengths-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let feed = |path: std::path::PathBuf| FeedConfig {
        name: "lengths".into(),
        path,
        action: FeedAction::Drop,
    };
    for (i, (target, inside, outside)) in cases.iter().enumerate() {
        let as_feed = i % 2 == 1;
        let path = dir.join(format!("{i}.netset"));
        if as_feed {
            std::fs::write(&path, format!("{target}\n")).expect("feed");
            assert!(m.load_feeds(&[feed(path.clone())]).is_empty(), "{target}");
        } else {
            m.block(net(target), None, block_origin::MANUAL, "length")
                .expect("block");
        }
        for src in *inside {
            assert_eq!(
                h.run(&syn_any(src)).expect("run"),
                XDP_DROP,
                "{src} inside {target} (feed: {as_feed})"
            );
        }
        for src in *outside {
            assert_eq!(
                h.run(&syn_any(src)).expect("run"),
                XDP_PASS,
                "{src} outside {target} (feed: {as_feed})"
            );
        }
        if as_feed {
            assert!(m.load_feeds(&[]).is_empty());
        } else {
            m.unblock(net(target)).expect("unblock");
        }
        for src in *inside {
            assert_eq!(
                h.run(&syn_any(src)).expect("run"),
                XDP_PASS,
                "{src} after {target} went"
            );
        }
        // The rebuild after the removal cleared every bit.
        assert_eq!(m.prefilter().bits_set(), 0, "{target}");
        assert_eq!(m.prefilter().levels, 0, "{target}");
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn expired_blocks_fall_through_and_their_bits_go() {
    if !require_root("expired_blocks_fall_through_and_their_bits_go") {
        return;
    }
    let mut h = XdpHarness::load(4096).expect("load");
    let mut m = h.take_mitigation(cfg(), vec![]).expect("maps");
    let short = net("198.18.46.0/24");
    m.block(
        short,
        Some(Duration::from_secs(1)),
        block_origin::MANUAL,
        "short",
    )
    .expect("block");
    m.block(net("198.18.47.1/32"), None, block_origin::MANUAL, "kept")
        .expect("block");
    let key = SourceKey::from_ip("198.18.46.5".parse().expect("ip"));
    assert!(m.prefilter().may_match(&key.addr));
    assert_eq!(h.run(&syn_from("198.18.46.5")).expect("run"), XDP_DROP);
    // Expired: the kernel's own check passes it while its bits are still set...
    std::thread::sleep(Duration::from_millis(1100));
    assert!(m.prefilter().may_match(&key.addr));
    assert_eq!(h.run(&syn_from("198.18.46.5")).expect("run"), XDP_PASS);
    // ...and the agent's sweep clears them, keeping the other block's.
    m.expire();
    assert!(!m.prefilter().may_match(&key.addr));
    assert_eq!(h.run(&syn_from("198.18.46.5")).expect("run"), XDP_PASS);
    assert_eq!(h.run(&syn_from("198.18.47.1")).expect("run"), XDP_DROP);
}
