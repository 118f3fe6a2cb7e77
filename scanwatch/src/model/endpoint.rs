//! A plain-HTTP endpoint (`http://HOST[:PORT][/PREFIX]`), parsed once where
//! the configuration is validated and used where requests are sent.

/// The endpoint could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("{what} {url:?}: expected http://HOST:PORT[/PATH] (https is not supported)")]
pub struct EndpointError {
    pub what: &'static str,
    pub url: String,
}

/// An Alertmanager endpoint: host, port and the v2 alerts path under its prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpEndpoint {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl HttpEndpoint {
    /// Parses an Alertmanager base URL; the path is `PREFIX/api/v2/alerts`.
    pub fn alertmanager(url: &str) -> Result<Self, EndpointError> {
        Self::parse(url, "--alertmanager-url", "/api/v2/alerts")
    }

    /// Parses a CrowdSec Local API base URL; the path is the prefix (each
    /// request adds `/v1/...`).
    pub fn lapi(url: &str) -> Result<Self, EndpointError> {
        Self::parse(url, "crowdsec lapi_url", "")
    }

    fn parse(url: &str, what: &'static str, suffix: &str) -> Result<Self, EndpointError> {
        let bad = || EndpointError {
            what,
            url: url.to_string(),
        };
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(bad());
        }
        let prefix = prefix.trim_end_matches('/');
        let path = if prefix.is_empty() {
            suffix.to_string()
        } else {
            format!("/{prefix}{suffix}")
        };
        Ok(Self {
            url: url.to_string(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let am = HttpEndpoint::alertmanager("http://198.18.0.1:19093").unwrap();
        assert_eq!(
            (am.host.as_str(), am.port, am.path.as_str()),
            ("198.18.0.1", 19093, "/api/v2/alerts")
        );
        let am = HttpEndpoint::alertmanager("http://am.example:9093/prefix/").unwrap();
        assert_eq!(am.path, "/prefix/api/v2/alerts");
        let am = HttpEndpoint::alertmanager("http://[fd00::1]:9093").unwrap();
        assert_eq!((am.host.as_str(), am.port), ("fd00::1", 9093));
        assert_eq!(HttpEndpoint::alertmanager("http://am").unwrap().port, 80);
        let lapi = HttpEndpoint::lapi("http://198.18.0.1:8080/").unwrap();
        assert_eq!((lapi.port, lapi.path.as_str()), (8080, ""));
        assert!(
            HttpEndpoint::lapi("https://lapi")
                .unwrap_err()
                .to_string()
                .starts_with("crowdsec lapi_url")
        );
        for bad in [
            "https://am:9093",
            "am:9093",
            "http://",
            "http://am:notaport",
        ] {
            assert!(HttpEndpoint::alertmanager(bad).is_err(), "{bad}");
        }
    }
}
