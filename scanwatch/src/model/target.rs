//! Block targets and durations as the CLI and the control socket take them.

/// An address (as a host network) or a CIDR.
pub fn parse_target(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an IPv4/IPv6 address or CIDR"))
}

/// `90`, `90s`, `15m`, `1h`, `2d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 90, 90s, 15m, 1h, 2d)");
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let secs = n
        .checked_mul(mult)
        .filter(|v| (1..=365 * 86_400).contains(v))
        .ok_or_else(|| format!("{s:?}: between 1 s and 365 d"))?;
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_durations() {
        assert_eq!(
            parse_target("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_target("198.18.0.9").unwrap().to_string(),
            "198.18.0.9/32"
        );
        assert!(parse_target("10.0.0.0/33").is_err());
        assert_eq!(parse_duration("2d").unwrap().as_secs(), 172_800);
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
