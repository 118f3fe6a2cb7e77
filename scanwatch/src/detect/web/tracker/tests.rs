use std::net::SocketAddr;

use super::*;
use crate::config::WebSignature;

const SEC: u64 = 1_000_000_000;
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
/// dirb 2.22's default User-Agent (seen in the lab): in no catalogue entry.
const DIRB: &str = "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)";
const CURL_HELLO: &str = include_str!("../testdata/curl_7.88_clienthello.hex");
const CURL_JA4: &str = "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6";

fn settings() -> WebSettings {
    WebSettings::from_config(&Detection::default())
}

fn detector() -> WebDetector {
    let catalogue = Catalogue::parse(
        include_str!("../../../../../deploy/web-scanners.toml"),
        "web-scanners.toml",
    )
    .unwrap();
    WebDetector::new(settings(), catalogue)
}

fn conn(client: &str, port: u16) -> Connection {
    Connection {
        remote: SocketAddr::new(client.parse().unwrap(), port),
        local: "198.18.0.2:80".parse().unwrap(),
    }
}

fn request(d: &mut WebDetector, c: Connection, t: u64, path: &str, ua: &str) {
    let payload =
        format!("GET {path} HTTP/1.1\r\nHost: www.lab\r\nUser-Agent: {ua}\r\nAccept: */*\r\n\r\n")
            .into_bytes();
    d.observe(WebEvent::Request {
        conn: c,
        time_ns: t,
        segment_len: payload.len() as u32,
        payload,
    });
}

fn response(d: &mut WebDetector, c: Connection, t: u64, status: u16) {
    d.observe(WebEvent::Response {
        conn: c,
        time_ns: t,
        status,
    });
}

/// One request and its answer on a keep-alive connection.
fn fetch(d: &mut WebDetector, c: Connection, t: u64, path: &str, ua: &str, status: u16) {
    request(d, c, t, path, ua);
    response(d, c, t + 1_000_000, status);
}

fn src(ip: &str) -> IpNet {
    settings().prefixes.network(ip.parse().unwrap())
}

#[test]
fn a_wordlist_tool_named_by_its_user_agent_is_found_at_its_first_request() {
    let mut d = detector();
    let c = conn("198.18.1.1", 40000);
    for i in 0..100u64 {
        fetch(
            &mut d,
            c,
            i * SEC / 10,
            &format!("/w{i}"),
            "gobuster/3.5",
            404,
        );
    }
    // Made at the first request, due after the hold (250 ms), with the
    // evidence gathered by then.
    let hold = settings().hold_ns;
    assert_eq!(hold, 250_000_000);
    assert!(d.take_findings(hold - 1).is_empty());
    let f = d.take_findings(hold);
    // One at the first request; the behavioural one (20 paths) is the same
    // kind, suppressed.
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].requests, 100, "the source's window as it is now");
    assert_eq!(f[0].not_found_paths, 20);
    assert_eq!(f[0].sample_paths.len(), 10);
    assert!(d.take_findings(u64::MAX).is_empty());
    assert_eq!(f[0].kind, WebScanKind::WordlistScan);
    assert_eq!(f[0].source, src("198.18.1.1"));
    assert_eq!(
        f[0].tool,
        Some(ToolMatch {
            name: "gobuster".into(),
            matched_by: "user_agent"
        })
    );
    assert_eq!(f[0].user_agent.as_deref(), Some("gobuster/3.5"));
    assert_eq!(f[0].hosts, ["www.lab"]);
    let st = d.stats();
    assert_eq!(st.requests_parsed, 100);
    assert_eq!(st.responses_matched, 100);
    assert_eq!(st.findings_wordlist_scan, 1);
    assert!(st.suppressed >= 80, "{st:?}");
}

#[test]
fn a_vuln_scanner_is_found_at_once() {
    let mut d = detector();
    let c = conn("198.18.1.2", 40000);
    fetch(
        &mut d,
        c,
        SEC,
        "/?id=1",
        "sqlmap/1.7.2#stable (https://sqlmap.org)",
        200,
    );
    let f = d.take_findings(u64::MAX);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].kind, WebScanKind::VulnScanner);
    assert_eq!(f[0].tool.as_ref().map(|t| t.name.as_str()), Some("sqlmap"));
    assert_eq!(f[0].kind.technique(), "T1595.002");
}

/// dirb sends an old browser string: found by behaviour, at the 20th
/// distinct not-found path (the default `wordlist_paths`), not the 19th.
#[test]
fn wordlist_scan_by_behaviour_at_the_threshold() {
    let mut d = detector();
    let c = conn("198.18.1.3", 40000);
    for i in 0..19u64 {
        fetch(&mut d, c, i * SEC, &format!("/dir{i}/"), DIRB, 404);
        // Repeating a path does not count twice.
        fetch(&mut d, c, i * SEC + 1, &format!("/dir{i}/"), DIRB, 404);
    }
    assert!(d.take_findings(u64::MAX).is_empty());
    fetch(&mut d, c, 30 * SEC, "/dir19/", DIRB, 403);
    let f = d.take_findings(u64::MAX);
    assert_eq!(f.len(), 1, "{f:?}");
    let f = &f[0];
    assert_eq!(f.kind, WebScanKind::WordlistScan);
    assert_eq!(f.tool, None);
    assert_eq!(f.user_agent.as_deref(), Some(DIRB));
    assert_eq!(f.not_found_paths, 20);
    assert_eq!(f.requests, 39);
    assert_eq!(f.sample_paths.len(), 10);
    assert_eq!(f.sample_paths[0], "/dir0/");
    assert_eq!((f.first_ns, f.last_ns), (0, 30 * SEC + 1_000_000));
    assert_eq!(f.kind.technique(), "T1595.003");
}

#[test]
fn only_404_403_and_400_count_and_never_static_resources() {
    let mut d = detector();
    let c = conn("198.18.1.4", 40000);
    let mut t = 0;
    for status in [200, 301, 302, 401, 405, 500, 503] {
        for i in 0..30 {
            t += SEC / 100;
            fetch(&mut d, c, t, &format!("/s{status}/{i}"), DIRB, status);
        }
    }
    for ext in [
        "ico", "png", "JPG", "jpeg", "gif", "svg", "css", "js", "woff", "woff2", "ttf", "map",
        "webp",
    ] {
        for i in 0..30 {
            t += SEC / 100;
            fetch(&mut d, c, t, &format!("/static/{i}.{ext}"), DIRB, 404);
        }
    }
    assert!(d.take_findings(u64::MAX).is_empty());
    for (i, status) in [400, 403, 404].iter().cycle().take(20).enumerate() {
        t += SEC / 100;
        fetch(&mut d, c, t, &format!("/p{i}.php"), DIRB, *status);
    }
    assert_eq!(d.take_findings(u64::MAX).len(), 1);
}

#[test]
fn a_browser_with_a_missing_favicon_is_quiet() {
    let mut d = detector();
    let c = conn("198.18.1.5", 40000);
    fetch(&mut d, c, 0, "/", CHROME, 200);
    fetch(&mut d, c, 1, "/favicon.ico", CHROME, 404);
    fetch(&mut d, c, 2, "/apple-touch-icon.png", CHROME, 404);
    fetch(&mut d, c, 3, "/robots.txt", CHROME, 404);
    assert!(d.take_findings(u64::MAX).is_empty());
}

#[test]
fn two_hundred_clients_with_three_pages_and_a_missing_favicon_are_quiet() {
    let mut d = detector();
    for client in 0..200u32 {
        let ip = format!("198.18.{}.{}", 2 + client / 250, 1 + client % 250);
        let c = conn(&ip, 40000 + client as u16);
        let t = u64::from(client) * SEC / 10;
        for (i, page) in ["/", "/about.html", "/contact.html"].iter().enumerate() {
            fetch(&mut d, c, t + i as u64, page, CHROME, 200);
        }
        fetch(&mut d, c, t + 5, "/favicon.ico", CHROME, 404);
    }
    assert!(d.take_findings(u64::MAX).is_empty());
    let st = d.stats();
    assert_eq!(st.sources_tracked, 200);
    assert_eq!(st.responses_matched, 800);
}

#[test]
fn a_crawler_of_existing_pages_is_quiet() {
    let mut d = detector();
    let c = conn("198.18.1.6", 40000);
    for i in 0..50u64 {
        fetch(&mut d, c, i * SEC, &format!("/page{i}.html"), CHROME, 200);
    }
    // And a few dead links among them.
    for i in 0..5u64 {
        fetch(
            &mut d,
            c,
            60 * SEC + i,
            &format!("/old{i}.html"),
            CHROME,
            404,
        );
    }
    assert!(d.take_findings(u64::MAX).is_empty());
}

#[test]
fn windows_tumble() {
    let mut d = detector();
    let c = conn("198.18.1.7", 40000);
    let window = settings().window_ns;
    for i in 0..19u64 {
        fetch(&mut d, c, i, &format!("/a{i}"), DIRB, 404);
    }
    // The next window starts from zero.
    for i in 0..19u64 {
        fetch(&mut d, c, window + i, &format!("/b{i}"), DIRB, 404);
    }
    assert!(d.take_findings(u64::MAX).is_empty());
    fetch(&mut d, c, window + 100, "/b19", DIRB, 404);
    assert_eq!(d.take_findings(u64::MAX)[0].not_found_paths, 20);
}

#[test]
fn answers_pair_with_requests_in_order() {
    let mut d = detector();
    let c = conn("198.18.1.8", 40000);
    // Three pipelined requests, answered in order: only the 2nd and 3rd
    // were not found.
    request(&mut d, c, 0, "/exists", DIRB);
    request(&mut d, c, 1, "/missing1", DIRB);
    request(&mut d, c, 2, "/missing2", DIRB);
    response(&mut d, c, 3, 200);
    response(&mut d, c, 4, 404);
    response(&mut d, c, 5, 404);
    // An answer without a request.
    response(&mut d, c, 6, 404);
    // An unparseable request keeps its place in the queue.
    d.observe(WebEvent::Request {
        conn: c,
        time_ns: 7,
        segment_len: 3000,
        payload: b"GET /a-very-long-request-line-cut".to_vec(),
    });
    request(&mut d, c, 8, "/missing3", DIRB);
    response(&mut d, c, 9, 404);
    response(&mut d, c, 10, 404);
    let st = d.stats();
    assert_eq!(st.responses_matched, 5);
    assert_eq!(st.responses_unmatched, 1);
    assert_eq!(st.http_unparseable, 1);
    for i in 0..16 {
        fetch(&mut d, c, 20 + i, &format!("/m{i}"), DIRB, 404);
    }
    assert!(d.take_findings(u64::MAX).is_empty(), "19 distinct so far");
    fetch(&mut d, c, 40, "/m16", DIRB, 404);
    let f = d.take_findings(u64::MAX);
    assert_eq!(f.len(), 1);
    assert_eq!(
        &f[0].sample_paths[..3],
        ["/missing1", "/missing2", "/missing3"]
    );
}

#[test]
fn state_stays_bounded() {
    let mut s = settings();
    s.max_sources = 16;
    s.max_connections = 64;
    let mut d = WebDetector::new(s, Catalogue::default());
    for i in 0..1000u32 {
        let c = conn(
            &format!("198.18.{}.{}", i / 200, i % 200 + 1),
            1000 + (i % 7) as u16,
        );
        request(&mut d, c, u64::from(i), "/x", CHROME);
    }
    let st = d.stats();
    assert!(st.sources_tracked <= 16, "{st:?}");
    assert_eq!(st.sources_tracked + st.sources_evicted, 1000);
    assert!(d.conns.len() <= 64);
    assert_eq!(d.conns.len() as u64 + st.connections_evicted, 1000);
    // At most 8 requests wait on a connection.
    let c = conn("198.18.9.9", 1);
    for i in 0..20 {
        request(&mut d, c, 2000 + i, &format!("/q{i}"), CHROME);
    }
    assert_eq!(d.conns[&c].pending.len(), MAX_PENDING);
    assert_eq!(d.stats().pending_dropped, 12);
    // The distinct paths of one source stay at the threshold, samples at
    // 10 paths of at most 200 characters.
    let c = conn("198.18.9.10", 1);
    let long = "/".to_string() + &"x".repeat(300);
    for i in 0..500 {
        fetch(&mut d, c, 3000 + i, &format!("{long}{i}"), DIRB, 404);
    }
    let s = &d.sources[&src("198.18.9.10")];
    assert_eq!(s.not_found.len(), 20);
    assert_eq!(s.sample.len(), SAMPLE_PATHS);
    assert!(
        s.sample
            .iter()
            .all(|p| p.chars().count() == SAMPLE_PATH_LEN)
    );
}

#[test]
fn client_hellos_are_remembered_and_a_ja4_entry_names_the_tool() {
    let hello = super::super::tls::tests::unhex(CURL_HELLO);
    let catalogue = Catalogue::default()
        .with_overrides(&[WebSignature {
            tool: "curl".into(),
            kind: WebScanKind::VulnScanner,
            user_agent: None,
            ja4: Some(CURL_JA4.into()),
            note: None,
        }])
        .unwrap();
    let mut d = WebDetector::new(settings(), catalogue);
    let c = Connection {
        remote: "198.18.1.9:50000".parse().unwrap(),
        local: "198.18.0.2:443".parse().unwrap(),
    };
    // What the kernel captures: 512 of the 517 bytes.
    d.observe(WebEvent::Request {
        conn: c,
        time_ns: 5,
        segment_len: 517,
        payload: hello[..512].to_vec(),
    });
    let seen = d.tls_seen(&src("198.18.1.9"));
    assert_eq!(
        seen,
        [TlsSeen {
            sni: Some("lab.example".into()),
            ja4: Some(CURL_JA4.into()),
            local_port: 443,
            time_ns: 5,
        }]
    );
    let f = d.take_findings(u64::MAX);
    assert_eq!(f.len(), 1);
    assert_eq!(
        f[0].tool,
        Some(ToolMatch {
            name: "curl".into(),
            matched_by: "ja4"
        })
    );
    assert_eq!(f[0].tls, seen);
    // Junk after a handshake byte, and the HTTP/2 preface, are counted.
    d.observe(WebEvent::Request {
        conn: c,
        time_ns: 6,
        segment_len: 3,
        payload: vec![0x16, 0x03],
    });
    d.observe(WebEvent::Request {
        conn: c,
        time_ns: 7,
        segment_len: 24,
        payload: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
    });
    let st = d.stats();
    assert_eq!(
        (st.tls_hellos, st.tls_unparseable, st.http_unparseable),
        (1, 1, 1)
    );
    // At most four hellos per source.
    for t in 10..20 {
        d.observe(WebEvent::Request {
            conn: c,
            time_ns: t,
            segment_len: 517,
            payload: hello.clone(),
        });
    }
    let seen = d.tls_seen(&src("198.18.1.9"));
    assert_eq!(seen.len(), TLS_SEEN);
    assert_eq!(seen[3].time_ns, 19);
    assert!(d.tls_seen(&src("198.18.1.10")).is_empty());
}

#[test]
fn suppression_ignore_and_prefixes() {
    let mut s = settings();
    s.suppression_ns = 600 * SEC;
    s.ignore = vec!["198.18.5.0/24".parse().unwrap()];
    s.prefixes = SourcePrefixes { v4: 32, v6: 64 };
    let mut d = detector();
    d.settings = s;
    let nikto = "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000001)";
    let c = conn("198.18.1.11", 1);
    fetch(&mut d, c, 0, "/", nikto, 200);
    fetch(&mut d, c, 599 * SEC, "/", nikto, 200);
    assert_eq!(d.take_findings(u64::MAX).len(), 1);
    fetch(&mut d, c, 600 * SEC, "/", nikto, 200);
    assert_eq!(
        d.take_findings(u64::MAX).len(),
        1,
        "again after the suppression interval"
    );
    fetch(&mut d, conn("198.18.5.7", 1), 0, "/", nikto, 200);
    assert!(d.take_findings(u64::MAX).is_empty());
    assert_eq!(d.stats().ignored, 2);
    // Two addresses of one /64 are one source.
    fetch(&mut d, conn("fd00:1:2:3::a", 1), 0, "/", nikto, 200);
    fetch(&mut d, conn("fd00:1:2:3::b", 1), 1, "/", nikto, 200);
    let f = d.take_findings(u64::MAX);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].source.to_string(), "fd00:1:2:3::/64");
}

#[test]
fn settings_from_the_config() {
    let mut cfg = Detection::default();
    cfg.web.wordlist_paths = 50;
    cfg.web.max_sources = 100;
    let s = WebSettings::from_config(&cfg);
    assert_eq!(s.window_ns, 300 * SEC);
    assert_eq!(s.suppression_ns, 600 * SEC);
    assert_eq!(s.wordlist_paths, 50);
    assert_eq!((s.max_sources, s.max_connections), (100, 400));
    assert_eq!(s.prefixes, SourcePrefixes { v4: 32, v6: 64 });
}
