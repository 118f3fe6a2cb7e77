//! The kernel drop path through BPF_PROG_TEST_RUN: blocks with expiries
//! enforced by the kernel alone, CIDR blocks, drop and tag feeds, never_block
//! winning over everything, a full blocklist, dry run.
//! Needs root (CAP_BPF); fails rather than skips without it.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;
use scanwatch::{
    config::{FeedAction, FeedConfig, MitigationConfig},
    kernel::testrun::XdpHarness,
    model::{BootClock, ScanType},
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
    let rows = m.list(&BootClock::now());
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
    let clock = BootClock::now();
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
    // Three probes: a source is tracked from its third (admission).
    for _ in 0..3 {
        assert_eq!(
            h.run(&syn_from("198.18.35.5")).expect("run"),
            XDP_PASS,
            "tag feeds do not drop"
        );
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
    let clock = BootClock::now();
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
    let clock = BootClock::now();
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
