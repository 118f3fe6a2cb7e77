//! Threat-intel feed files: one IPv4/IPv6 address or CIDR per line, `#`
//! and `;` start comments (FireHOL `.netset`, Spamhaus DROP). Bad lines are
//! skipped and reported with file and line; nothing else is lost.

use std::path::{Path, PathBuf};

use ipnet::IpNet;

/// A line that is not an address or CIDR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub text: String,
}

/// What a feed file held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedFeed {
    pub nets: Vec<IpNet>,
    pub bad: Vec<BadLine>,
}

/// Parses feed text.
pub fn parse(text: &str) -> ParsedFeed {
    let mut out = ParsedFeed::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(['#', ';']).next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let net = line
            .parse::<IpNet>()
            .or_else(|_| line.parse::<std::net::IpAddr>().map(IpNet::from));
        match net {
            Ok(net) => out.nets.push(net.trunc()),
            Err(_) => out.bad.push(BadLine {
                line: i + 1,
                text: raw.chars().take(80).collect(),
            }),
        }
    }
    out.nets.sort_unstable();
    out.nets.dedup();
    out
}

#[derive(Debug, thiserror::Error)]
#[error("feed {name}: cannot read {path}: {source}")]
pub struct FeedReadError {
    pub name: String,
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Reads and parses a feed file.
pub fn read(name: &str, path: &Path) -> Result<ParsedFeed, FeedReadError> {
    std::fs::read_to_string(path)
        .map(|t| parse(&t))
        .map_err(|source| FeedReadError {
            name: name.to_string(),
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firehol_and_spamhaus_styles() {
        let text = "\
# FireHOL level1
# comment line
1.10.16.0/20
198.18.7.9
2001:db8::/32 # trailing comment
1.19.0.0/16 ; SBL434604
; Spamhaus comment line

not-an-address
300.1.1.1
10.0.0.0/33
198.18.7.9
1.2.3.4/24
";
        let p = parse(text);
        assert_eq!(
            p.nets.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "1.2.3.0/24",
                "1.10.16.0/20",
                "1.19.0.0/16",
                "198.18.7.9/32",
                "2001:db8::/32"
            ]
        );
        assert_eq!(
            p.bad,
            vec![
                BadLine {
                    line: 9,
                    text: "not-an-address".into()
                },
                BadLine {
                    line: 10,
                    text: "300.1.1.1".into()
                },
                BadLine {
                    line: 11,
                    text: "10.0.0.0/33".into()
                },
            ]
        );
    }

    #[test]
    fn empty_and_missing() {
        assert_eq!(parse(""), ParsedFeed::default());
        let e = read("x", Path::new("/nonexistent/feed.netset")).unwrap_err();
        assert!(
            e.to_string()
                .contains("feed x: cannot read /nonexistent/feed.netset")
        );
    }
}
