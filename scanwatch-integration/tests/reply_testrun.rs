//! The reply-aware detector's kernel half through BPF_PROG_TEST_RUN: XDP
//! records first contacts, the TC egress program resolves them from this
//! host's answers and runs the sequential test (TRW); the agent's sweep
//! marks unanswered contacts. Needs root (CAP_BPF); fails rather than
//! skips without it.

use std::net::{IpAddr, Ipv6Addr};

use scanwatch::{config::Detection, kernel::testrun::XdpHarness};
use scanwatch_common::{
    SourceKey,
    sketch::port_entry,
    trigger,
    trw::{ContactKey, ReplyConfig, ReplyCounter, outcome},
};
use scanwatch_lab::{
    frames::{Packet, Transport, tcp},
    privileged::require_root,
};

const LOCAL: &str = "198.18.0.2";
/// `TC_ACT_UNSPEC`: the egress program leaves every packet to the next filter.
const TC_ACT_UNSPEC: i32 = -1;

/// Every source tracked from its first probe (`admit_after` 1), so every
/// first contact is recorded: the tests below are about the contact table
/// and the walk; `first_probes_record_no_contact_only_while_admission_is_busy`
/// is about admission's part.
fn every_probe() -> scanwatch_common::DetectConfig {
    let mut d = Detection::default().kernel_config();
    d.admit_after = 1;
    d
}

fn harness(test: &str) -> Option<XdpHarness> {
    if !require_root(test) {
        return None;
    }
    Some(
        XdpHarness::load_reply_with(4096, Detection::default().reply_config(), &every_probe())
            .expect("load the programs"),
    )
}

/// Every successful (address, port) moves the walk (`successes_per_port`).
fn harness_per_port(test: &str) -> Option<XdpHarness> {
    if !require_root(test) {
        return None;
    }
    let mut d = Detection::default();
    d.reply_scan.successes_per_port = true;
    Some(
        XdpHarness::load_reply_with(4096, d.reply_config(), &every_probe())
            .expect("load the programs"),
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("addr")
}

fn tcp_from(sport: u16, dport: u16, flags: u8) -> Transport {
    Transport::Tcp {
        sport,
        dport,
        flags,
        options: Vec::new(),
        payload: Vec::new(),
    }
}

/// A SYN from `remote` to the local `port` (ingress, XDP).
fn syn(h: &mut XdpHarness, remote: &str, local: &str, port: u16) {
    h.run(&Packet::new(remote, local, tcp_from(40000, port, tcp::SYN)).build())
        .expect("xdp run");
}

/// This host's answer from local `port` to `remote` (egress, TC).
fn answer(h: &mut XdpHarness, local: &str, remote: &str, port: u16, flags: u8) {
    let action = h
        .run_egress(&Packet::new(local, remote, tcp_from(port, 40000, flags)).build())
        .expect("tc run");
    assert_eq!(action, TC_ACT_UNSPEC, "the egress program never decides");
}

/// The reply-aware test's state of `remote`'s source (its prefix).
fn stats(h: &mut XdpHarness, remote: &str) -> scanwatch_common::trw::ReplyStats {
    let h_key = h.source_key(ip(remote));
    h.reply()
        .expect("reply maps")
        .stats(&h_key)
        .expect("read")
        .unwrap_or_default()
}

fn contact(h: &mut XdpHarness, remote: &str, local: &str, port: u32) -> Option<u64> {
    let remote = h.source_key(ip(remote)).addr;
    h.reply()
        .expect("reply maps")
        .contact(&ContactKey {
            remote,
            local: SourceKey::from_ip(ip(local)).addr,
            port,
        })
        .expect("read")
        .map(|c| c.outcome)
}

fn counter(h: &mut XdpHarness, c: ReplyCounter) -> u64 {
    h.reply()
        .expect("reply maps")
        .counters()
        .expect("counters")
        .get(c)
}

fn reply_events(h: &mut XdpHarness) -> usize {
    h.events()
        .iter()
        .filter(|e| e.triggers == trigger::REPLY_SCAN)
        .count()
}

/// Four RSTs flag a closed-port scanner; from the verdict on, for the
/// rest of the source's window, its SYNs write no first contact and its
/// RSTs are skipped (`SourceStats::REPLY_DECIDED`); a new window records
/// again. The window is 2 s here (the kernel clock cannot be set).
#[test]
fn closed_ports_flag_after_four_failures_reported_once() {
    if !require_root("closed_ports_flag_after_four_failures_reported_once") {
        return;
    }
    const WINDOW_NS: u64 = 2_000_000_000;
    let mut kernel = every_probe();
    kernel.window_ns = WINDOW_NS;
    let cfg = Detection::default().reply_config();
    let mut h = XdpHarness::load_reply_with(4096, cfg, &kernel).expect("load the programs");
    let remote = "198.18.0.7";
    let started = std::time::Instant::now();
    for (i, port) in (1000u16..1012).enumerate() {
        syn(&mut h, remote, LOCAL, port);
        let key = port_entry(port, false);
        if i >= 4 {
            assert_eq!(
                contact(&mut h, remote, LOCAL, key),
                None,
                "decided: no contact"
            );
            answer(&mut h, LOCAL, remote, port, tcp::RST | tcp::ACK);
            assert_eq!(stats(&mut h, remote).failures, 4, "not read");
            assert_eq!(counter(&mut h, ReplyCounter::AfterVerdict), i as u64 - 3);
            continue;
        }
        assert_eq!(contact(&mut h, remote, LOCAL, key), Some(outcome::PENDING));
        answer(&mut h, LOCAL, remote, port, tcp::RST | tcp::ACK);
        assert_eq!(contact(&mut h, remote, LOCAL, key), Some(outcome::FAILURE));
        let s = stats(&mut h, remote);
        assert_eq!(s.failures, i as u64 + 1);
        assert_eq!(s.llr, (i as i64 + 1) * cfg.failure_step, "exact steps");
        let events = reply_events(&mut h);
        if i == 3 {
            assert_eq!(events, 1, "the fourth failure crosses ln(99)");
            assert!(s.reported_ns != 0);
            assert_eq!((s.crossing_successes, s.crossing_failures), (0, 4));
        } else {
            assert_eq!(events, 0, "failure {}: one report per interval", i + 1);
        }
    }
    assert!(
        started.elapsed() < std::time::Duration::from_nanos(WINDOW_NS),
        "the scan ran within one window"
    );
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), 4);
    assert_eq!(counter(&mut h, ReplyCounter::Failures), 4);
    assert_eq!(counter(&mut h, ReplyCounter::EventsSent), 1);
    let s = stats(&mut h, remote);
    assert_eq!((s.crossing_successes, s.crossing_failures), (0, 4), "kept");
    // The same RST again: skipped as well.
    answer(&mut h, LOCAL, remote, 1000, tcp::RST | tcp::ACK);
    assert_eq!(counter(&mut h, ReplyCounter::AfterVerdict), 9);
    assert_eq!(counter(&mut h, ReplyCounter::Unmatched), 0);
    // A new window: its first SYN is recorded and its RST read; the walk,
    // still above the boundary, decides at once (no second report within
    // the report interval), and the next SYN is skipped again.
    std::thread::sleep(std::time::Duration::from_nanos(WINDOW_NS + 100_000_000));
    syn(&mut h, remote, LOCAL, 2000);
    assert_eq!(
        contact(&mut h, remote, LOCAL, port_entry(2000, false)),
        Some(outcome::PENDING),
        "a new window records again"
    );
    answer(&mut h, LOCAL, remote, 2000, tcp::RST | tcp::ACK);
    assert_eq!(stats(&mut h, remote).failures, 5);
    assert_eq!(counter(&mut h, ReplyCounter::EventsSent), 1);
    syn(&mut h, remote, LOCAL, 2001);
    assert_eq!(
        contact(&mut h, remote, LOCAL, port_entry(2001, false)),
        None
    );
}

#[test]
fn legitimate_client_repeating_connections_to_open_ports_is_never_flagged() {
    let Some(mut h) = harness("legitimate_client_repeating_connections") else {
        return;
    };
    let cfg = Detection::default().reply_config();
    let remote = "198.18.0.8";
    for round in 0..1000 {
        for port in [22u16, 80, 443] {
            syn(&mut h, remote, LOCAL, port);
            answer(&mut h, LOCAL, remote, port, tcp::SYN | tcp::ACK);
            // Established traffic and the close: not answers.
            answer(&mut h, LOCAL, remote, port, tcp::ACK);
            answer(&mut h, LOCAL, remote, port, tcp::FIN | tcp::ACK);
        }
        if round == 0 {
            // Three open ports of one host: the walk moves once.
            assert_eq!(stats(&mut h, remote).llr, cfg.success_step);
        }
    }
    let s = stats(&mut h, remote);
    assert_eq!((s.successes, s.failures), (3, 0), "three first contacts");
    assert_eq!(s.llr, cfg.success_step);
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), 3);
    assert_eq!(counter(&mut h, ReplyCounter::Unmatched), 3 * 999);
    assert_eq!(reply_events(&mut h), 0);
    // Later closed ports: four more leave it one step short of the boundary.
    for (i, port) in [8080u16, 8443, 8444, 8445].into_iter().enumerate() {
        syn(&mut h, remote, LOCAL, port);
        answer(&mut h, LOCAL, remote, port, tcp::RST | tcp::ACK);
        assert_eq!(
            stats(&mut h, remote).llr,
            cfg.success_step + (i as i64 + 1) * cfg.failure_step
        );
        assert_eq!(reply_events(&mut h), 0);
    }
}

#[test]
fn open_ports_found_first_on_one_host_excuse_one_failure() {
    let Some(mut h) = harness("open_ports_found_first_on_one_host") else {
        return;
    };
    // nmap -sT probes common ports first: the 3 open ones answer first.
    let remote = "198.18.0.13";
    let mut flagged_after = None;
    for (i, port) in [22u16, 80, 443].into_iter().chain(1000..1010).enumerate() {
        syn(&mut h, remote, LOCAL, port);
        let flags = if port < 1000 {
            tcp::SYN | tcp::ACK
        } else {
            tcp::RST | tcp::ACK
        };
        answer(&mut h, LOCAL, remote, port, flags);
        if flagged_after.is_none() && reply_events(&mut h) == 1 {
            flagged_after = Some(i - 2);
        }
    }
    assert_eq!(
        flagged_after,
        Some(5),
        "five failures after one credited success"
    );
    let s = stats(&mut h, remote);
    assert_eq!((s.crossing_successes, s.crossing_failures), (3, 5));
    // Counted per port (`successes_per_port`), the same order needs seven.
    let Some(mut h) = harness_per_port("open_ports_found_first_per_port") else {
        return;
    };
    let mut flagged_after = None;
    for (i, port) in [22u16, 80, 443].into_iter().chain(1000..1010).enumerate() {
        syn(&mut h, remote, LOCAL, port);
        let flags = if port < 1000 {
            tcp::SYN | tcp::ACK
        } else {
            tcp::RST | tcp::ACK
        };
        answer(&mut h, LOCAL, remote, port, flags);
        if flagged_after.is_none() && reply_events(&mut h) == 1 {
            flagged_after = Some(i - 2);
        }
    }
    assert_eq!(flagged_after, Some(7));
}

#[test]
fn four_successes_reach_the_benign_boundary_and_reset_the_walk() {
    let Some(mut h) = harness("four_successes_reach_the_benign_boundary") else {
        return;
    };
    // Four hosts with an open port each (a sweep finding live services).
    let remote = "198.18.0.9";
    for (i, local) in ["198.19.0.1", "198.19.0.2", "198.19.0.3", "198.19.0.4"]
        .into_iter()
        .enumerate()
    {
        syn(&mut h, remote, local, 80);
        answer(&mut h, local, remote, 80, tcp::SYN | tcp::ACK);
        let s = stats(&mut h, remote);
        if i < 3 {
            assert_eq!(s.benign_resets, 0);
        }
    }
    let s = stats(&mut h, remote);
    assert_eq!((s.llr, s.benign_resets, s.successes), (0, 1, 4));
    // Per port, four open ports of one host do the same.
    let Some(mut h) = harness_per_port("four_successes_per_port") else {
        return;
    };
    for port in [22u16, 80, 443, 8080] {
        syn(&mut h, remote, LOCAL, port);
        answer(&mut h, LOCAL, remote, port, tcp::SYN | tcp::ACK);
    }
    let s = stats(&mut h, remote);
    assert_eq!((s.llr, s.benign_resets, s.successes), (0, 1, 4));
}

#[test]
fn udp_and_icmp_unreachable_and_ipv6() {
    let Some(mut h) = harness("udp_and_icmp_unreachable_and_ipv6") else {
        return;
    };
    let remote = "198.18.0.10";
    // UDP probe answered by ICMP port unreachable quoting it.
    let probe = Packet::new(remote, LOCAL, Transport::udp(53)).build();
    h.run(&probe).expect("xdp run");
    let mut icmp = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&probe[14..14 + 28]);
    let err = Packet::new(
        LOCAL,
        remote,
        Transport::Raw {
            protocol: 1,
            bytes: icmp,
        },
    )
    .build();
    assert_eq!(h.run_egress(&err).expect("tc run"), TC_ACT_UNSPEC);
    assert_eq!(
        contact(&mut h, remote, LOCAL, port_entry(53, true)),
        Some(outcome::FAILURE)
    );
    // A UDP reply is a success.
    h.run(&Packet::new(remote, LOCAL, Transport::udp(123)).build())
        .expect("xdp run");
    h.run_egress(
        &Packet::new(
            LOCAL,
            remote,
            Transport::Udp {
                sport: 123,
                dport: 40000,
                payload: vec![0; 48],
            },
        )
        .build(),
    )
    .expect("tc run");
    let s = stats(&mut h, remote);
    assert_eq!((s.successes, s.failures), (1, 1));

    // IPv6: RST, and ICMPv6 port unreachable for UDP.
    let r6 = "fd00::7";
    let l6 = "fd00::2";
    syn(&mut h, r6, l6, 25);
    answer(&mut h, l6, r6, 25, tcp::RST | tcp::ACK);
    let probe6 = Packet::new(r6, l6, Transport::udp(161)).build();
    h.run(&probe6).expect("xdp run");
    let mut icmp6 = vec![1u8, 4, 0, 0, 0, 0, 0, 0];
    icmp6.extend_from_slice(&probe6[14..14 + 48]);
    h.run_egress(
        &Packet::new(
            l6,
            r6,
            Transport::Raw {
                protocol: 58,
                bytes: icmp6,
            },
        )
        .build(),
    )
    .expect("tc run");
    let s6 = stats(&mut h, r6);
    assert_eq!((s6.successes, s6.failures), (0, 2));
    assert_eq!(
        contact(&mut h, r6, l6, port_entry(161, true)),
        Some(outcome::FAILURE)
    );
    // Other ICMP (echo reply, time exceeded) and truncated frames resolve nothing.
    let before = counter(&mut h, ReplyCounter::Unmatched);
    h.run_egress(&Packet::new(LOCAL, remote, Transport::icmp(0)).build())
        .expect("tc run");
    let frame = Packet::new(LOCAL, remote, tcp_from(1, 2, tcp::RST)).build();
    // BPF_PROG_TEST_RUN wants the IP header of an IPv4 frame: cut after it.
    // Frames holding the TCP flags (14 bytes) are RSTs answering nothing
    // pending (unmatched); shorter ones are ignored.
    for len in 34..frame.len() {
        h.run_egress(&frame[..len]).expect("tc run");
    }
    let with_flags = (frame.len() - (34 + 14)) as u64;
    assert_eq!(
        counter(&mut h, ReplyCounter::Unmatched),
        before + with_flags
    );
}

#[test]
fn sweep_marks_unanswered_contacts_and_reports_the_crossing() {
    let Some(mut h) = harness("sweep_marks_unanswered_contacts") else {
        return;
    };
    let remote = "198.18.0.11";
    for port in 2000u16..2003 {
        syn(&mut h, remote, LOCAL, port);
    }
    // One closed port answers; three filtered ones never do.
    syn(&mut h, remote, LOCAL, 2003);
    answer(&mut h, LOCAL, remote, 2003, tcp::RST | tcp::ACK);
    let now = scanwatch::model::kernel_now_ns();
    let reply = h.reply().expect("reply maps");
    // Not yet timed out: nothing marked.
    let r = reply.sweep(3_600_000_000_000, now).expect("sweep");
    assert_eq!((r.scanned, r.no_answers, r.crossings.len()), (4, 0, 0));
    let r = reply.sweep(0, now + 1).expect("sweep");
    assert_eq!(r.no_answers, 3);
    assert_eq!(r.crossings.len(), 1, "1 failure + 3 no-answers cross");
    assert_eq!(r.crossings[0].triggers, trigger::REPLY_SCAN);
    assert_eq!(r.crossings[0].source, SourceKey::from_ip(ip(remote)));
    let s = stats(&mut h, remote);
    assert_eq!((s.failures, s.no_answers), (1, 3));
    assert_eq!((s.crossing_successes, s.crossing_failures), (0, 4));
    assert_eq!(
        s.llr,
        4 * ReplyConfig::from_params(0.8, 0.2, 0.01, 0.99, 1)
            .unwrap()
            .failure_step
    );
    assert_eq!(
        contact(&mut h, remote, LOCAL, port_entry(2000, false)),
        Some(outcome::NO_ANSWER)
    );
    // Marked once: a late answer and a second sweep change nothing.
    answer(&mut h, LOCAL, remote, 2000, tcp::SYN | tcp::ACK);
    let r = h
        .reply()
        .expect("reply maps")
        .sweep(0, now + 2)
        .expect("sweep");
    assert_eq!((r.no_answers, r.crossings.len()), (0, 0));
    assert_eq!(stats(&mut h, remote).successes, 0);
    // The agent's sweeper marks the source it decided, as the egress
    // program does at its own crossings: its next SYNs write no contact,
    // and their answers are not read.
    let table = h.maps().source_table().expect("source table");
    let key = SourceKey::from_ip(ip(remote));
    assert!(table.mark_decided(&key).expect("mark"));
    assert!(
        h.source(ip(remote))
            .expect("read")
            .is_some_and(|s| s.reply_decided())
    );
    assert!(
        !table
            .mark_decided(&SourceKey::from_ip(ip("198.18.0.111")))
            .expect("mark"),
        "an untracked source: nothing to mark"
    );
    let contacts = counter(&mut h, ReplyCounter::Contacts);
    syn(&mut h, remote, LOCAL, 2004);
    assert_eq!(
        contact(&mut h, remote, LOCAL, port_entry(2004, false)),
        None
    );
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), contacts);
    answer(&mut h, LOCAL, remote, 2004, tcp::RST | tcp::ACK);
    assert_eq!(counter(&mut h, ReplyCounter::AfterVerdict), 1);
}

#[test]
fn disabled_detector_records_nothing() {
    if !require_root("disabled_detector_records_nothing") {
        return;
    }
    let mut h = XdpHarness::load_reply(4096, ReplyConfig::DISABLED).expect("load");
    syn(&mut h, "198.18.0.12", LOCAL, 1);
    answer(&mut h, LOCAL, "198.18.0.12", 1, tcp::RST | tcp::ACK);
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), 0);
    assert_eq!(counter(&mut h, ReplyCounter::EgressPackets), 0);
    assert_eq!(stats(&mut h, "198.18.0.12").failures, 0);
}

#[test]
fn this_hosts_own_udp_queries_and_silent_udp_ports_are_no_evidence() {
    let Some(mut h) = harness("this_hosts_own_udp_queries") else {
        return;
    };
    let resolver = "198.18.0.53";
    // This host queries a resolver from ports 40001..40010; the answers
    // arrive afterwards and are not first contacts.
    for port in 40001u16..40011 {
        h.run_egress(
            &Packet::new(
                LOCAL,
                resolver,
                Transport::Udp {
                    sport: port,
                    dport: 53,
                    payload: vec![0; 30],
                },
            )
            .build(),
        )
        .expect("tc run");
        h.run(
            &Packet::new(
                resolver,
                LOCAL,
                Transport::Udp {
                    sport: 53,
                    dport: port,
                    payload: vec![0; 60],
                },
            )
            .build(),
        )
        .expect("xdp run");
    }
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), 0);
    // Unanswered datagrams to 10 UDP ports: marked by the sweep, not counted.
    let remote = "198.18.0.54";
    for port in 5000u16..5010 {
        h.run(&Packet::new(remote, LOCAL, Transport::udp(port)).build())
            .expect("xdp run");
    }
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), 10);
    let now = scanwatch::model::kernel_now_ns();
    let r = h.reply().expect("reply maps").sweep(0, now).expect("sweep");
    assert_eq!((r.no_answers, r.udp_silent, r.crossings.len()), (0, 10, 0));
    assert_eq!(stats(&mut h, remote), Default::default());
    assert_eq!(
        contact(&mut h, remote, LOCAL, port_entry(5000, true)),
        Some(outcome::NO_ANSWER)
    );
    assert_eq!(reply_events(&mut h), 0);
}

#[test]
fn a_batch_of_no_answers_records_the_one_that_crossed() {
    let Some(mut h) = harness("a_batch_of_no_answers_records_the_one_that_crossed") else {
        return;
    };
    let remote = "198.18.0.14";
    for port in 3000u16..3008 {
        syn(&mut h, remote, LOCAL, port);
    }
    let now = scanwatch::model::kernel_now_ns();
    let r = h.reply().expect("reply maps").sweep(0, now).expect("sweep");
    assert_eq!((r.no_answers, r.crossings.len()), (8, 1));
    let s = stats(&mut h, remote);
    assert_eq!(s.no_answers, 8);
    assert_eq!(
        (s.crossing_successes, s.crossing_failures),
        (0, 4),
        "the fourth no-answer crossed"
    );
}

/// Two ports of `LOCAL` whose contacts from `remote` share a slot of the
/// contact table (under the harness's fixed seed).
fn colliding_ports(h: &XdpHarness, remote: &str) -> (u16, u16) {
    use scanwatch_common::contact_table::CONTACTS_MASK;
    let seed = scanwatch::kernel::testrun::HARNESS_CONTACT_SEED;
    let remote = h.source_key(ip(remote)).addr;
    let local = SourceKey::from_ip(ip(LOCAL)).addr;
    let mut seen = std::collections::HashMap::new();
    for port in 1u16..=u16::MAX {
        let k = ContactKey {
            remote,
            local,
            port: port_entry(port, false),
        };
        if let Some(first) = seen.insert(seed.slot(&k, CONTACTS_MASK), port) {
            return (first, port);
        }
    }
    unreachable!("65,535 ports in 65,536 slots without a collision")
}

#[test]
fn an_overwritten_contact_resolves_nothing_and_is_counted() {
    let Some(mut h) = harness("an_overwritten_contact_resolves_nothing") else {
        return;
    };
    let remote = "198.18.0.15";
    let (a, b) = colliding_ports(&h, remote);
    syn(&mut h, remote, LOCAL, a);
    syn(&mut h, remote, LOCAL, b);
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), 2);
    assert_eq!(counter(&mut h, ReplyCounter::ContactsOverwritten), 1);
    assert_eq!(contact(&mut h, remote, LOCAL, port_entry(a, false)), None);
    // The answer to the overwritten contact matches nothing.
    answer(&mut h, LOCAL, remote, a, tcp::RST | tcp::ACK);
    assert_eq!(counter(&mut h, ReplyCounter::Unmatched), 1);
    assert_eq!(stats(&mut h, remote).failures, 0);
    assert_eq!(
        contact(&mut h, remote, LOCAL, port_entry(b, false)),
        Some(outcome::PENDING)
    );
    answer(&mut h, LOCAL, remote, b, tcp::RST | tcp::ACK);
    assert_eq!(stats(&mut h, remote).failures, 1);
    // A resolved contact overwritten is not counted; a repeat of the one in
    // the slot costs nothing.
    syn(&mut h, remote, LOCAL, a);
    syn(&mut h, remote, LOCAL, a);
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), 3);
    assert_eq!(counter(&mut h, ReplyCounter::ContactsOverwritten), 1);
    assert_eq!(counter(&mut h, ReplyCounter::ContactErrors), 0);
}

/// With the default settings (`admit_after` 3) the first SYN of a source
/// that is not tracked is a first contact that waits in its admission
/// slot (`tracking::RECORD_CONTACT_TAKEN`), not in the contact table:
/// this host's answer resolves it there (and writes it to the table,
/// resolved), the source's next probe of another port of the same host
/// moves it to the table (pending, for the no-answer sweep). Closed ports
/// still flag a scanner at its fourth failure.
#[test]
fn a_first_syn_waits_in_its_admission_slot_until_answered_or_moved() {
    if !require_root("a_first_syn_waits_in_its_admission_slot_until_answered_or_moved") {
        return;
    }
    let mut h = XdpHarness::load_reply(262_144, Detection::default().reply_config())
        .expect("load the programs");
    // Answered: resolved from the slot, once.
    let a = "198.18.0.31";
    syn(&mut h, a, LOCAL, 22);
    assert_eq!(contact(&mut h, a, LOCAL, port_entry(22, false)), None);
    assert_eq!(counter(&mut h, ReplyCounter::ContactsWaiting), 1);
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), 0);
    answer(&mut h, LOCAL, a, 22, tcp::RST | tcp::ACK);
    assert_eq!(
        contact(&mut h, a, LOCAL, port_entry(22, false)),
        Some(outcome::FAILURE),
        "written to the table at its answer"
    );
    answer(&mut h, LOCAL, a, 22, tcp::RST | tcp::ACK);
    assert_eq!(stats(&mut h, a).failures, 1, "one failure for two answers");
    assert_eq!(counter(&mut h, ReplyCounter::Unmatched), 1);
    // Another port, or another local address: no answer to it.
    let b = "198.18.0.32";
    syn(&mut h, b, LOCAL, 80);
    answer(&mut h, LOCAL, b, 81, tcp::RST | tcp::ACK);
    answer(&mut h, "198.18.0.3", b, 80, tcp::RST | tcp::ACK);
    assert_eq!(stats(&mut h, b).failures, 0);
    assert_eq!(counter(&mut h, ReplyCounter::Unmatched), 3);
    // Not answered yet: a repeat of it moves nothing; the source's next
    // probe of another port of the host moves it to the table, pending
    // (the sweep counts it if no answer comes); a late answer resolves it
    // there.
    syn(&mut h, b, LOCAL, 80);
    assert_eq!(contact(&mut h, b, LOCAL, port_entry(80, false)), None);
    syn(&mut h, b, LOCAL, 443);
    for port in [80, 443] {
        assert_eq!(
            contact(&mut h, b, LOCAL, port_entry(port, false)),
            Some(outcome::PENDING),
            "port {port}"
        );
    }
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), 2);
    answer(&mut h, LOCAL, b, 80, tcp::SYN | tcp::ACK);
    assert_eq!(
        contact(&mut h, b, LOCAL, port_entry(80, false)),
        Some(outcome::SUCCESS)
    );
    assert_eq!(stats(&mut h, b).successes, 1);
    // A probe of another host moves nothing: the first SYN still waits,
    // and its answer still resolves it.
    let c = "198.18.0.33";
    syn(&mut h, c, LOCAL, 25);
    syn(&mut h, c, "198.18.0.3", 26);
    assert_eq!(contact(&mut h, c, LOCAL, port_entry(25, false)), None);
    answer(&mut h, LOCAL, c, 25, tcp::RST | tcp::ACK);
    assert_eq!(
        contact(&mut h, c, LOCAL, port_entry(25, false)),
        Some(outcome::FAILURE)
    );
    // A scanner of closed ports, each answered at once: flagged at the
    // fourth failure, as with every first contact in the table.
    let d = "198.18.0.34";
    for port in 1000u16..1003 {
        syn(&mut h, d, LOCAL, port);
        answer(&mut h, LOCAL, d, port, tcp::RST | tcp::ACK);
        assert_eq!(reply_events(&mut h), 0, "port {port}");
    }
    syn(&mut h, d, LOCAL, 1003);
    answer(&mut h, LOCAL, d, 1003, tcp::RST | tcp::ACK);
    assert_eq!(stats(&mut h, d).failures, 4);
    assert_eq!(reply_events(&mut h), 1, "flagged at the fourth failure");
}

/// A flood of one-probe sources writes no contacts: each first SYN waits
/// in its admission slot (and is overwritten there by the next source
/// hashing to it), so the contact table keeps a scanner's pending
/// contacts.
#[test]
fn a_flood_of_one_probe_sources_writes_no_contacts() {
    if !require_root("a_flood_of_one_probe_sources_writes_no_contacts") {
        return;
    }
    let mut h = XdpHarness::load_reply(262_144, Detection::default().reply_config())
        .expect("load the programs");
    let remote = "198.18.0.30";
    syn(&mut h, remote, LOCAL, 22);
    // 600,000 one-probe sources (one per /64), 73 per admission slot: the
    // table is full of waiting sources.
    let flood = |h: &mut XdpHarness, from: u32, n: u32| {
        for i in from..from + n {
            let src = Ipv6Addr::new(0xfd00, 1, (i >> 16) as u16, i as u16, 0, 0, 0, 1);
            h.run(&Packet::new(&src.to_string(), "fd00::2", tcp_from(40000, 80, tcp::SYN)).build())
                .expect("xdp run");
        }
    };
    flood(&mut h, 0, 600_000);
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), 0);
    assert_eq!(counter(&mut h, ReplyCounter::ContactsWaiting), 600_001);
    // The scanner goes on: its admission slot now holds another source, so
    // its next probe waits there afresh; the one after it moves it to the
    // table, and it is admitted on the third.
    for port in 23..30u16 {
        syn(&mut h, remote, LOCAL, port);
    }
    for port in 23..30u16 {
        assert_eq!(
            contact(&mut h, remote, LOCAL, port_entry(port, false)),
            Some(outcome::PENDING),
            "port {port}"
        );
    }
    // 50,000 more one-probe sources: no contact written, and the
    // scanner's pending contacts survive.
    let before = counter(&mut h, ReplyCounter::Contacts);
    flood(&mut h, 600_000, 50_000);
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), before);
    for port in 23..30u16 {
        assert_eq!(
            contact(&mut h, remote, LOCAL, port_entry(port, false)),
            Some(outcome::PENDING),
            "port {port} still pending after the flood"
        );
    }
}

/// A slot taken long ago is no sign of a flood: a new source's first
/// probe that does not wait in its admission slot as a contact (a UDP
/// probe; a SYN always does) skips its first contact only when its
/// admission slot holds another source that started waiting within
/// `CONTENDED_NS` (about 8.6 s), not for the whole window (5 minutes), so
/// on a host that many benign sources reach, one probe each, a
/// distributed scan's one-probe sources are still recorded. Takes 9 s
/// (the kernel clock cannot be set).
#[test]
fn first_probes_skip_their_contact_only_behind_a_recent_source() {
    use scanwatch_common::{
        SourceKey,
        tracking::{CONTENDED_NS, DEFAULT_ADMISSION_SLOTS, admission, key_hash},
    };
    if !require_root("first_probes_skip_their_contact_only_behind_a_recent_source") {
        return;
    }
    let mut h = XdpHarness::load_reply(262_144, Detection::default().reply_config())
        .expect("load the programs");
    let slot_of = |ip: &str| {
        let ip: IpAddr = ip.parse().expect("ip");
        admission(
            key_hash(SourceKey::from_ip(ip).words()),
            DEFAULT_ADMISSION_SLOTS,
        )
    };
    // IPv6 sources named by their /64 (a source is its /64 by default).
    let v6 = |i: u32| format!("fd00:0:{:x}:{:x}::", i >> 16, i & 0xffff);
    let first = v6(u32::MAX);
    let (slot, tag) = slot_of(&first);
    let mut sharing = (0..u32::MAX).map(v6).filter(|ip| {
        let (s, t) = slot_of(ip);
        s == slot && t != tag
    });
    let (second, third) = (
        sharing.next().expect("a source sharing the slot"),
        sharing.next().expect("another one"),
    );
    let local = "fd00::2";
    let udp = |h: &mut XdpHarness, src: &str| {
        h.run(&Packet::new(src, local, Transport::udp(161)).build())
            .expect("xdp run");
    };
    udp(&mut h, &first);
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), 1, "a free slot");
    udp(&mut h, &second);
    assert_eq!(
        counter(&mut h, ReplyCounter::Contacts),
        1,
        "behind a source that has just started waiting: skipped"
    );
    std::thread::sleep(std::time::Duration::from_nanos(CONTENDED_NS + 400_000_000));
    udp(&mut h, &third);
    assert_eq!(
        counter(&mut h, ReplyCounter::Contacts),
        2,
        "behind a source waiting for 9 s (in its window): recorded"
    );
    assert_eq!(
        contact(&mut h, &third, local, port_entry(161, true)),
        Some(outcome::PENDING)
    );
}

/// A source probing one destination again and again (a SYN flood at one
/// port, retransmits, a client reconnecting to one service) takes its
/// first contact once: a repeat of a source's only destination in the
/// window skips the contact table, even after its contact was overwritten
/// (it is no first contact, and one destination can never cross the
/// test). A second destination is a first contact as usual, and from then
/// on repeats are looked up in the table again.
#[test]
fn repeats_of_a_sources_only_destination_skip_the_contact_table() {
    use scanwatch_common::contact_table::CONTACTS_MASK;
    let Some(mut h) = harness("repeats_of_a_sources_only_destination_skip_the_contact_table")
    else {
        return;
    };
    let remote = "198.18.0.40";
    // Another source and port whose contact takes the same slot.
    let seed = scanwatch::kernel::testrun::HARNESS_CONTACT_SEED;
    let local = SourceKey::from_ip(ip(LOCAL)).addr;
    let key = |h: &XdpHarness, src: &str, port: u16| ContactKey {
        remote: h.source_key(ip(src)).addr,
        local,
        port: port_entry(port, false),
    };
    let target = seed.slot(&key(&h, remote, 22), CONTACTS_MASK);
    let (other, other_port) = (0..65_536u32)
        .flat_map(|i| (1..=16u16).map(move |p| (i, p)))
        .map(|(i, p)| (std::net::Ipv4Addr::from(0xc612_0100 + i).to_string(), p)) // 198.18.1.0 on
        .find(|(src, p)| seed.slot(&key(&h, src, *p), CONTACTS_MASK) == target)
        .expect("a colliding contact");
    syn(&mut h, remote, LOCAL, 22);
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), 1);
    syn(&mut h, &other, LOCAL, other_port);
    assert_eq!(counter(&mut h, ReplyCounter::ContactsOverwritten), 1);
    assert_eq!(contact(&mut h, remote, LOCAL, port_entry(22, false)), None);
    for _ in 0..10 {
        syn(&mut h, remote, LOCAL, 22);
    }
    assert_eq!(
        counter(&mut h, ReplyCounter::Contacts),
        2,
        "repeats skipped"
    );
    assert_eq!(contact(&mut h, remote, LOCAL, port_entry(22, false)), None);
    syn(&mut h, remote, LOCAL, 23);
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), 3);
    assert_eq!(
        contact(&mut h, remote, LOCAL, port_entry(23, false)),
        Some(outcome::PENDING)
    );
    // Two destinations: port 22 is looked up again, and its slot holds
    // the other source's contact: a first contact, recorded.
    syn(&mut h, remote, LOCAL, 22);
    assert_eq!(counter(&mut h, ReplyCounter::Contacts), 4);
    assert_eq!(
        contact(&mut h, remote, LOCAL, port_entry(22, false)),
        Some(outcome::PENDING)
    );
}
