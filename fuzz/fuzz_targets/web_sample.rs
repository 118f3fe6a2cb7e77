//! Web sampling: any bytes of the web ring decode to a record or an error,
//! and any payload (an HTTP request head, a TLS ClientHello, junk) goes
//! through the parsers, JA4 and the web tracker without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanwatch::{
    config::Detection,
    detect::web::{Catalogue, WebDetector, WebSettings, ja4, parse_client_hello, parse_request},
    kernel::web_maps::decode_web,
    model::{Connection, WebEvent},
};

fuzz_target!(|data: &[u8]| {
    // The ring record as the kernel wrote it (or anything else).
    if let Ok(record) = decode_web(data) {
        let _ = record.into_event();
    }
    // The payload alone, as both kinds of sample.
    let _ = parse_request(data);
    if let Ok(hello) = parse_client_hello(data) {
        let _ = ja4(&hello);
    }
    // Compiled once: its regexes are the slow part of a run.
    static CATALOGUE: std::sync::OnceLock<Catalogue> = std::sync::OnceLock::new();
    let catalogue = CATALOGUE
        .get_or_init(|| {
            Catalogue::parse(
                include_str!("../../deploy/web-scanners.toml"),
                "web-scanners.toml",
            )
            .expect("the packaged catalogue")
        })
        .clone();
    let mut d = WebDetector::new(WebSettings::from_config(&Detection::default()), catalogue);
    let conn = Connection {
        remote: "198.18.0.1:40000".parse().expect("addr"),
        local: "198.18.0.2:80".parse().expect("addr"),
    };
    for (i, status) in [404u16, 200, 999].into_iter().enumerate() {
        let t = i as u64 * 1_000_000;
        d.observe(WebEvent::Request {
            conn,
            time_ns: t,
            segment_len: data.len() as u32,
            payload: data.to_vec(),
        });
        d.observe(WebEvent::Response {
            conn,
            time_ns: t + 1,
            status,
        });
    }
    let _ = d.take_findings(u64::MAX);
    let _ = d.tls_seen(&"198.18.0.1/32".parse().expect("net"));
});
