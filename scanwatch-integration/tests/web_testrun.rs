//! Web sampling's kernel half through BPF_PROG_TEST_RUN: XDP hands the
//! agent the first payload segment of each HTTP/1.x request and TLS
//! ClientHello to a web port, the TC egress program each HTTP/1.x
//! response's status; nothing else is sampled, a full ring loses records
//! (counted), never packets. Needs root (CAP_BPF); fails rather than skips
//! without it.

use scanwatch::kernel::{testrun::XdpHarness, web_maps::WebRecord};
use scanwatch_common::web::{WEB_SAMPLE_BYTES, WebConfig, WebCounter};
use scanwatch_lab::{
    frames::{Packet, Transport, tcp},
    privileged::require_root,
};

const CLIENT: &str = "198.18.0.1";
const SERVER: &str = "198.18.0.2";
const XDP_PASS: u32 = 2;
const TC_ACT_UNSPEC: i32 = -1;
const PSH_ACK: u8 = tcp::ACK | 0x08;

fn harness(test: &str) -> Option<XdpHarness> {
    if !require_root(test) {
        return None;
    }
    Some(XdpHarness::load_web(4096, WebConfig::with_ports(&[80, 8443])).expect("load"))
}

fn segment(src: &str, dst: &str, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    Packet::new(src, dst, Transport::segment(sport, dport, flags, payload)).build()
}

fn request(dport: u16, payload: &[u8]) -> Vec<u8> {
    segment(CLIENT, SERVER, 41000, dport, PSH_ACK, payload)
}

fn counter(h: &XdpHarness, c: WebCounter) -> u64 {
    h.web_counters().expect("counters").counters[c as usize]
}

#[test]
fn requests_and_client_hellos_to_web_ports_are_sampled() {
    let Some(mut h) = harness("requests_and_client_hellos_to_web_ports_are_sampled") else {
        return;
    };
    let get = b"GET /admin/.env HTTP/1.1\r\nHost: lab\r\nUser-Agent: gobuster/3.5\r\n\r\n";
    assert_eq!(h.run(&request(80, get)).expect("run"), XDP_PASS);
    let mut hello = vec![0x16, 0x03, 0x01, 0x00, 0xf0, 0x01, 0x00, 0x00, 0xec];
    hello.resize(700, 0xab);
    assert_eq!(h.run(&request(8443, &hello)).expect("run"), XDP_PASS);
    let records = h.web_records();
    assert_eq!(records.len(), 2, "{records:?}");
    let Ok(WebRecord::Request { head, payload }) = &records[0] else {
        panic!("not a request: {:?}", records[0]);
    };
    assert_eq!(payload.as_slice(), get.as_slice());
    assert_eq!((head.remote_port, head.local_port), (41000, 80));
    assert_eq!(head.segment_len as usize, get.len());
    assert_eq!(&head.remote[12..], &[198, 18, 0, 1]);
    assert_eq!(&head.local[12..], &[198, 18, 0, 2]);
    let Ok(WebRecord::Request { head, payload }) = &records[1] else {
        panic!("not a request: {:?}", records[1]);
    };
    // A long segment: its first WEB_SAMPLE_BYTES only.
    assert_eq!(payload.as_slice(), &hello[..WEB_SAMPLE_BYTES]);
    assert_eq!(head.segment_len, 700);
    assert_eq!(counter(&h, WebCounter::RequestsSampled), 2);
}

#[test]
fn ipv6_requests_and_answers_carry_their_addresses() {
    let Some(mut h) = harness("ipv6_requests_and_answers_carry_their_addresses") else {
        return;
    };
    let get = b"GET /.git/config HTTP/1.1\r\nHost: [fd00::2]\r\n\r\n";
    assert_eq!(
        h.run(&segment("fd00::1", "fd00::2", 41000, 80, PSH_ACK, get))
            .expect("run"),
        XDP_PASS
    );
    h.run_egress(&segment(
        "fd00::2",
        "fd00::1",
        80,
        41000,
        PSH_ACK,
        b"HTTP/1.1 404 Not Found\r\n\r\n",
    ))
    .expect("run");
    let events: Vec<_> = h
        .web_records()
        .into_iter()
        .map(|r| r.expect("decodes").into_event())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert_eq!(e.conn().remote, "[fd00::1]:41000".parse().expect("addr"));
        assert_eq!(e.conn().local, "[fd00::2]:80".parse().expect("addr"));
    }
}

#[test]
fn other_segments_are_not_sampled() {
    let Some(mut h) = harness("other_segments_are_not_sampled") else {
        return;
    };
    let get = b"GET / HTTP/1.1\r\n\r\n";
    for frame in [
        // Not a web port.
        request(22, get),
        request(443, get),
        // Not the start of a request: a body, TLS application data.
        request(80, b"name=admin&password=x"),
        request(8443, &[0x17, 0x03, 0x03, 0x00, 0x20, 0x01, 0x02]),
        // A pure ACK, and payload shorter than a method.
        request(80, b""),
        request(80, b"GET"),
        // A SYN is a probe, never a sample.
        segment(CLIENT, SERVER, 41000, 80, tcp::SYN, b""),
        // The server's answer arriving at a client on this host.
        segment(
            SERVER,
            CLIENT,
            80,
            41000,
            PSH_ACK,
            b"HTTP/1.1 200 OK\r\n\r\n",
        ),
    ] {
        assert_eq!(h.run(&frame).expect("run"), XDP_PASS);
    }
    assert_eq!(h.web_records(), Vec::new());
    assert_eq!(counter(&h, WebCounter::RequestsSampled), 0);
}

#[test]
fn sampling_off_samples_nothing() {
    if !require_root("sampling_off_samples_nothing") {
        return;
    }
    let mut h = XdpHarness::load_web(4096, WebConfig::DISABLED).expect("load");
    h.run(&request(80, b"GET / HTTP/1.1\r\n\r\n")).expect("run");
    h.run_egress(&segment(
        SERVER,
        CLIENT,
        80,
        41000,
        PSH_ACK,
        b"HTTP/1.1 404 Not Found\r\n",
    ))
    .expect("run");
    assert_eq!(h.web_records(), Vec::new());
}

#[test]
fn response_status_codes_from_web_ports_are_reported() {
    let Some(mut h) = harness("response_status_codes_from_web_ports_are_reported") else {
        return;
    };
    let answer = |port: u16, body: &[u8]| segment(SERVER, CLIENT, port, 41000, PSH_ACK, body);
    for frame in [
        answer(80, b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\n\r\n"),
        answer(80, b"HTTP/1.0 200 OK\r\n\r\n"),
        // Not a status line, not a web port, too short.
        answer(80, b"<html>404</html>\r\n"),
        answer(22, b"HTTP/1.1 404 Not Found\r\n"),
        answer(80, b"HTTP/1.1 40"),
    ] {
        assert_eq!(h.run_egress(&frame).expect("run"), TC_ACT_UNSPEC);
    }
    let statuses: Vec<(u16, u16, u16)> = h
        .web_records()
        .into_iter()
        .map(|r| match r {
            Ok(WebRecord::Response { head, status }) => (head.local_port, head.remote_port, status),
            other => panic!("not a response: {other:?}"),
        })
        .collect();
    assert_eq!(statuses, vec![(80, 41000, 404), (80, 41000, 200)]);
    assert_eq!(counter(&h, WebCounter::ResponsesSampled), 2);
}

#[test]
fn a_full_ring_loses_samples_counted_never_packets() {
    let Some(mut h) = harness("a_full_ring_loses_samples_counted_never_packets") else {
        return;
    };
    let frame = request(80, b"GET /x HTTP/1.1\r\nHost: lab\r\n\r\n");
    // 1 MiB of 584-byte records (576 and the ring's 8-byte header): about
    // 1,795 fit; nobody reads the ring meanwhile.
    let runs = 3_000u32;
    let (action, _) = h.run_repeat(&frame, runs).expect("run");
    assert_eq!(action, XDP_PASS);
    let sampled = counter(&h, WebCounter::RequestsSampled);
    let dropped = counter(&h, WebCounter::RequestsDropped);
    assert_eq!(sampled + dropped, u64::from(runs));
    assert!(
        dropped > 1000 && sampled > 1000,
        "{sampled} sampled, {dropped} dropped"
    );
    assert_eq!(h.web_records().len() as u64, sampled);
    let counters = h.counters().expect("counters");
    assert_eq!(
        counters.get(scanwatch_common::Counter::Packets),
        u64::from(runs)
    );
}
