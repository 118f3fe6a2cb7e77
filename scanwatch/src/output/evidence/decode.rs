//! A short decode of an evidence packet (Ethernet, VLAN tags, IPv4/IPv6,
//! TCP/UDP/ICMP): addresses, protocol, ports, TCP flags, TTL and window,
//! for `scanwatch evidence`. No I/O; a frame too short for a field leaves
//! it out.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// What one packet shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// `TCP`, `UDP`, `ICMP`, `ICMPv6`, `proto N` or the EtherType.
    pub protocol: String,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// TCP flags as letters (`S`, `SA`, `FPU`, ...).
    pub flags: Option<String>,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: Option<u8>,
    pub window: Option<u16>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
    /// A fragment past the first (no transport header).
    pub fragment: bool,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// TCP flag letters, FIN first (as tcpdump's order: F S R P . U E W).
pub fn tcp_flags(flags: u8) -> String {
    const LETTERS: [(u8, char); 8] = [
        (0x01, 'F'),
        (0x02, 'S'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x10, 'A'),
        (0x20, 'U'),
        (0x40, 'E'),
        (0x80, 'W'),
    ];
    let s: String = LETTERS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, c)| *c)
        .collect();
    if s.is_empty() { "none".into() } else { s }
}

/// Decodes an Ethernet frame's start.
pub fn decode(frame: &[u8]) -> Decoded {
    let mut d = Decoded::default();
    let mut at = 12;
    let mut ethertype = be16(frame, at);
    // Up to three VLAN tags (802.1Q, 802.1ad).
    for _ in 0..3 {
        if matches!(ethertype, Some(0x8100 | 0x88a8)) {
            at += 4;
            ethertype = be16(frame, at);
        }
    }
    at += 2;
    let (proto, l4) = match ethertype {
        Some(0x0800) => match ipv4(frame, at, &mut d) {
            Some(v) => v,
            None => return d,
        },
        Some(0x86dd) => match ipv6(frame, at, &mut d) {
            Some(v) => v,
            None => return d,
        },
        Some(t) => {
            d.protocol = format!("ethertype 0x{t:04x}");
            return d;
        }
        None => {
            d.protocol = "truncated".into();
            return d;
        }
    };
    transport(frame, proto, l4, &mut d);
    d
}

fn ipv4(frame: &[u8], at: usize, d: &mut Decoded) -> Option<(u8, usize)> {
    let ip = frame.get(at..at + 20)?;
    d.ttl = Some(ip[8]);
    d.src = Some(IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])));
    d.dst = Some(IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19])));
    let offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    d.fragment = offset != 0;
    Some((ip[9], at + usize::from(ip[0] & 0x0f) * 4))
}

fn ipv6(frame: &[u8], at: usize, d: &mut Decoded) -> Option<(u8, usize)> {
    let ip = frame.get(at..at + 40)?;
    d.ttl = Some(ip[7]);
    let addr = |o: usize| -> Option<IpAddr> {
        let b: [u8; 16] = ip.get(o..o + 16)?.try_into().ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(b)))
    };
    d.src = addr(8);
    d.dst = addr(24);
    let (mut next, mut l4) = (ip[6], at + 40);
    // Extension headers (hop-by-hop, routing, fragment, destination options).
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let h = frame.get(l4..l4 + 2)?;
                next = h[0];
                l4 += (usize::from(h[1]) + 1) * 8;
            }
            44 => {
                let h = frame.get(l4..l4 + 4)?;
                d.fragment = u16::from_be_bytes([h[2], h[3]]) >> 3 != 0;
                next = h[0];
                l4 += 8;
            }
            _ => break,
        }
    }
    Some((next, l4))
}

fn transport(frame: &[u8], proto: u8, at: usize, d: &mut Decoded) {
    d.protocol = match proto {
        6 => "TCP",
        17 => "UDP",
        1 => "ICMP",
        58 => "ICMPv6",
        other => {
            d.protocol = format!("proto {other}");
            return;
        }
    }
    .into();
    if d.fragment {
        return;
    }
    match proto {
        6 | 17 => {
            d.src_port = be16(frame, at);
            d.dst_port = be16(frame, at + 2);
            if proto == 6 {
                d.flags = frame.get(at + 13).map(|f| tcp_flags(*f));
                d.window = be16(frame, at + 14);
            }
        }
        _ => {
            if let Some(h) = frame.get(at..at + 2) {
                d.icmp = Some((h[0], h[1]));
            }
        }
    }
}

impl fmt::Display for Decoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = |a: Option<IpAddr>, port: Option<u16>| match (a, port) {
            (Some(IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
            (Some(a), Some(p)) => format!("{a}:{p}"),
            (Some(a), None) => a.to_string(),
            (None, _) => "?".into(),
        };
        write!(
            f,
            "{} -> {} {}",
            addr(self.src, self.src_port),
            addr(self.dst, self.dst_port),
            self.protocol
        )?;
        if let Some(flags) = &self.flags {
            write!(f, " flags {flags}")?;
        }
        if let Some((t, c)) = self.icmp {
            write!(f, " type {t} code {c}")?;
        }
        if self.fragment {
            write!(f, " fragment")?;
        }
        if let Some(ttl) = self.ttl {
            write!(f, " ttl {ttl}")?;
        }
        if let Some(w) = self.window {
            write!(f, " win {w}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Ethernet + IPv4 (TTL 255) + TCP SYN 40000 -> 80, window 1024.
    pub(crate) fn syn_v4() -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[22] = 255;
        f[23] = 6;
        f[26..30].copy_from_slice(&[198, 18, 0, 5]);
        f[30..34].copy_from_slice(&[198, 18, 0, 2]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[46] = 0x50;
        f[47] = 0x02;
        f[48..50].copy_from_slice(&1024u16.to_be_bytes());
        f
    }

    #[test]
    fn tcp_syn() {
        let d = decode(&syn_v4());
        assert_eq!(
            d.to_string(),
            "198.18.0.5:40000 -> 198.18.0.2:80 TCP flags S ttl 255 win 1024"
        );
    }

    #[test]
    fn vlan_ipv6_udp_and_icmp() {
        let mut f = vec![0u8; 14 + 4 + 40 + 8];
        f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        f[16..18].copy_from_slice(&0x86ddu16.to_be_bytes());
        let ip = 18;
        f[ip] = 0x60;
        f[ip + 6] = 17;
        f[ip + 7] = 64;
        f[ip + 8] = 0xfd;
        f[ip + 23] = 5;
        f[ip + 24] = 0xfd;
        f[ip + 39] = 2;
        f[ip + 40..ip + 42].copy_from_slice(&53u16.to_be_bytes());
        f[ip + 42..ip + 44].copy_from_slice(&161u16.to_be_bytes());
        assert_eq!(
            decode(&f).to_string(),
            "[fd00::5]:53 -> [fd00::2]:161 UDP ttl 64"
        );
        let mut icmp = syn_v4();
        icmp[23] = 1;
        icmp[34] = 8;
        icmp[35] = 0;
        assert_eq!(
            decode(&icmp).to_string(),
            "198.18.0.5 -> 198.18.0.2 ICMP type 8 code 0 ttl 255"
        );
    }

    #[test]
    fn short_and_odd_frames_never_panic() {
        let f = syn_v4();
        for cut in 0..f.len() {
            let _ = decode(&f[..cut]).to_string();
        }
        assert_eq!(decode(&f[..10]).protocol, "truncated");
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(decode(&arp).protocol, "ethertype 0x0806");
        assert_eq!(tcp_flags(0x12), "SA");
        assert_eq!(tcp_flags(0x29), "FPU");
        assert_eq!(tcp_flags(0), "none");
    }
}
