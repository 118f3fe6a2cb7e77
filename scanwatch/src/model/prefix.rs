//! Sources by prefix (`[detection] ipv4_prefix`, `ipv6_prefix`): the kernel
//! counts every address of one network as one source, keyed by the
//! network's first address. This is how a key is shown and what it covers.

use std::net::IpAddr;

use ipnet::IpNet;

/// The prefix lengths sources are counted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourcePrefixes {
    /// IPv4 prefix length (32: per address).
    pub v4: u8,
    /// IPv6 prefix length (128: per address; 64: per subnet, the default).
    pub v6: u8,
}

impl SourcePrefixes {
    /// One source per address.
    pub const HOSTS: Self = Self { v4: 32, v6: 128 };

    /// The network a source address (or key) belongs to. IPv4-mapped IPv6
    /// addresses are IPv4.
    pub fn network(&self, ip: IpAddr) -> IpNet {
        match unmap(ip) {
            IpAddr::V4(v4) => IpNet::new(IpAddr::V4(v4), self.v4.min(32)),
            IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), self.v6.min(128)),
        }
        .map_or_else(|_| IpNet::from(ip), |n| n.trunc())
    }

    /// How a source is shown (alerts, `top`, metrics): the address for a
    /// per-address source, the network in CIDR notation otherwise.
    pub fn label(&self, ip: IpAddr) -> String {
        label(&self.network(ip))
    }

    /// The kernel's masks: the IPv4 mask as the four address bytes, and the
    /// IPv6 mask as sixteen.
    pub fn masks(&self) -> ([u8; 4], [u8; 16]) {
        let v4 = u32::MAX
            .checked_shl(32 - u32::from(self.v4.min(32)))
            .unwrap_or(0)
            .to_be_bytes();
        let v6 = u128::MAX
            .checked_shl(128 - u32::from(self.v6.min(128)))
            .unwrap_or(0)
            .to_be_bytes();
        (v4, v6)
    }
}

impl Default for SourcePrefixes {
    fn default() -> Self {
        Self::HOSTS
    }
}

/// How a source network is shown: the address alone for a single address,
/// CIDR notation otherwise.
pub fn label(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// IPv4-mapped IPv6 as IPv4.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The first address of `ip`'s network under `prefixes` (the key the kernel uses).
pub fn key_address(prefixes: &SourcePrefixes, ip: IpAddr) -> IpAddr {
    prefixes.network(ip).network()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_networks() {
        let p = SourcePrefixes { v4: 32, v6: 64 };
        assert_eq!(p.label("198.18.0.9".parse().unwrap()), "198.18.0.9");
        assert_eq!(p.label("::ffff:198.18.0.9".parse().unwrap()), "198.18.0.9");
        assert_eq!(
            p.label("2001:db8:1:2:aa::9".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            p.network("2001:db8:1:2::".parse().unwrap()).to_string(),
            "2001:db8:1:2::/64"
        );
        let p = SourcePrefixes { v4: 24, v6: 128 };
        assert_eq!(p.label("198.18.0.9".parse().unwrap()), "198.18.0.0/24");
        assert_eq!(p.label("fd00::1".parse().unwrap()), "fd00::1");
        assert_eq!(
            key_address(&p, "198.18.0.9".parse().unwrap()),
            "198.18.0.0".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn masks() {
        let (v4, v6) = SourcePrefixes { v4: 24, v6: 64 }.masks();
        assert_eq!(v4, [255, 255, 255, 0]);
        assert_eq!(v6[..8], [0xff; 8]);
        assert_eq!(v6[8..], [0; 8]);
        let (v4, v6) = SourcePrefixes::HOSTS.masks();
        assert_eq!(v4, [255; 4]);
        assert_eq!(v6, [255; 16]);
        let (v4, _) = SourcePrefixes { v4: 0, v6: 0 }.masks();
        assert_eq!(v4, [0; 4]);
    }
}
