use super::*;

/// Real ClientHellos captured in a lab namespace (tcpdump, then tshark's
/// `tcp.payload`): curl 7.88.1 with OpenSSL 3.0 (`curl -k
/// https://lab.example/`), and `openssl s_client -servername lab.example
/// -alpn h2,http/1.1`. Their JA4 values come from
/// `testdata/reference_ja4.py`: FoxIO's algorithm (`to_ja4` of ja4.py)
/// over tshark's own dissection of the same capture.
const CURL: &str = include_str!("../testdata/curl_7.88_clienthello.hex");
const CURL_JA4: &str = "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6";
const S_CLIENT: &str = include_str!("../testdata/openssl_3.0_s_client_clienthello.hex");
const S_CLIENT_JA4: &str = "t13d3111h2_e8f1e7e78f70_1f22a2ca17c4";

pub(crate) fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim();
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

#[test]
fn real_hellos_give_the_reference_ja4() {
    let curl = unhex(CURL);
    assert_eq!(curl.len(), 517);
    let h = parse_client_hello(&curl).unwrap();
    assert!(!h.truncated);
    assert_eq!(h.sni.as_deref(), Some("lab.example"));
    assert_eq!(h.alpn_names(), ["h2", "http/1.1"]);
    assert_eq!(h.version(), 0x0304);
    assert_eq!(h.ciphers.len(), 31);
    assert_eq!(h.extensions.len(), 12);
    assert_eq!(h.signature_algorithms.len(), 20);
    assert_eq!(ja4(&h).as_deref(), Some(CURL_JA4));

    let h = parse_client_hello(&unhex(S_CLIENT)).unwrap();
    assert_eq!(h.sni.as_deref(), Some("lab.example"));
    assert_eq!(ja4(&h).as_deref(), Some(S_CLIENT_JA4));
}

#[test]
fn a_hello_cut_in_its_last_padding_still_has_its_ja4() {
    // The kernel captures 512 bytes: curl's 517-byte record loses 5 bytes
    // of its last extension (padding).
    let curl = unhex(CURL);
    let h = parse_client_hello(&curl[..512]).unwrap();
    assert!(h.truncated);
    assert!(h.ja4_complete);
    assert_eq!(h.sni.as_deref(), Some("lab.example"));
    assert_eq!(ja4(&h).as_deref(), Some(CURL_JA4));
}

#[test]
fn every_prefix_parses_or_errs_and_never_gives_a_wrong_ja4() {
    for hello in [unhex(CURL), unhex(S_CLIENT)] {
        let full = ja4(&parse_client_hello(&hello).unwrap()).unwrap();
        let mut with_ja4 = 0;
        for cut in 0..hello.len() {
            match parse_client_hello(&hello[..cut]) {
                Ok(h) => {
                    assert!(h.truncated, "cut at {cut}");
                    if let Some(j) = ja4(&h) {
                        assert_eq!(j, full, "cut at {cut}");
                        with_ja4 += 1;
                    }
                }
                Err(e) => assert!(
                    matches!(e, TlsError::Truncated(_) | TlsError::NotHandshake),
                    "cut at {cut}: {e}"
                ),
            }
        }
        // Only cuts inside the trailing padding keep the fingerprint.
        assert!(with_ja4 < 200, "{with_ja4}");
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let curl = unhex(CURL);
    for round in 0..20_000 {
        let len = (next() % 600) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 && len > 9 {
            // A plausible header, so that parsing goes deep.
            data[..9].copy_from_slice(&curl[..9]);
        }
        if round % 3 == 0 {
            // The real hello with a few bytes flipped.
            data = curl.clone();
            for _ in 0..4 {
                let i = (next() % data.len() as u64) as usize;
                data[i] = next() as u8;
            }
        }
        if let Ok(h) = parse_client_hello(&data) {
            let _ = ja4(&h);
        }
    }
}

#[test]
fn not_a_client_hello() {
    assert_eq!(
        parse_client_hello(b"GET / HTTP/1.1\r\n"),
        Err(TlsError::NotHandshake)
    );
    assert_eq!(parse_client_hello(b""), Err(TlsError::NotHandshake));
    // A ServerHello (handshake type 2).
    assert_eq!(
        parse_client_hello(&[0x16, 3, 3, 0, 4, 2, 0, 0, 0]),
        Err(TlsError::NotClientHello)
    );
    // An HTTP/2 connection preface.
    assert_eq!(
        parse_client_hello(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        Err(TlsError::NotHandshake)
    );
}

fn hello(ciphers: &[u16], extensions: &[u16], sigs: &[u16]) -> ClientHello {
    ClientHello {
        legacy_version: 0x0303,
        supported_versions: vec![0x3a3a, 0x0304, 0x0303],
        ciphers: ciphers.to_vec(),
        extensions: extensions.to_vec(),
        sni: Some("example.com".into()),
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        signature_algorithms: sigs.to_vec(),
        truncated: false,
        ja4_complete: true,
    }
}

/// The example of JA4.md (its `JA4_r` lists), with GREASE values added
/// (they are ignored).
#[test]
fn the_spec_example() {
    let h = hello(
        &[
            0x0a0a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
            0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
        ],
        &[
            0x1a1a, 0x0000, 0x0017, 0xff01, 0x000a, 0x000b, 0x0023, 0x0010, 0x0005, 0x000d, 0x0012,
            0x0033, 0x002d, 0x002b, 0x001b, 0x0015, 0x4469, 0x2a2a,
        ],
        &[
            0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
        ],
    );
    assert_eq!(
        ja4(&h).as_deref(),
        Some("t13d1516h2_8daaf6152771_e5627efa2ab1")
    );
}

#[test]
fn codes_for_versions_sni_and_alpn() {
    let mut h = hello(&[0x1301], &[0x0000, 0x0010], &[]);
    assert!(ja4(&h).unwrap().starts_with("t13d0102h2_"));
    h.supported_versions.clear();
    h.extensions = vec![0x0010];
    h.alpn = vec![vec![0xab, b'x', 0xcd]];
    assert!(ja4(&h).unwrap().starts_with("t12i0101ad_"));
    h.alpn.clear();
    h.ciphers.clear();
    h.extensions.clear();
    assert_eq!(ja4(&h).unwrap(), "t12i000000_000000000000_000000000000");
    h.ja4_complete = false;
    assert_eq!(ja4(&h), None);
    assert!(is_grease(0xfafa) && !is_grease(0xfa0a) && !is_grease(0x1301));
}
