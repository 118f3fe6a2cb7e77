//! Crafted Ethernet frames for `BPF_PROG_TEST_RUN` tests and benchmarks.
//!
//! ```
//! use scanwatch_lab::frames::{Packet, Transport, tcp};
//! let frame = Packet::new("198.18.0.1", "198.18.0.2", Transport::tcp(80, tcp::SYN)).build();
//! assert_eq!(frame.len(), 14 + 20 + 20);
//! ```

use std::net::IpAddr;

/// TCP flag bits.
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

/// The transport layer of a crafted packet.
#[derive(Clone, Debug)]
pub enum Transport {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        /// TCP options (padded to 4 bytes by the builder).
        options: Vec<u8>,
        payload: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
    },
    /// ICMP for IPv4 sources, ICMPv6 for IPv6 sources.
    Icmp { icmp_type: u8, code: u8 },
    /// Any other protocol number with raw bytes.
    Raw { protocol: u8, bytes: Vec<u8> },
}

impl Transport {
    /// A TCP segment with `payload` and no options.
    pub fn segment(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Self {
        Self::Tcp {
            sport,
            dport,
            flags,
            options: Vec::new(),
            payload: payload.to_vec(),
        }
    }

    pub fn tcp(dport: u16, flags: u8) -> Self {
        Self::Tcp {
            sport: 40000,
            dport,
            flags,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    pub fn udp(dport: u16) -> Self {
        Self::Udp {
            sport: 40000,
            dport,
            payload: Vec::new(),
        }
    }

    pub fn icmp(icmp_type: u8) -> Self {
        Self::Icmp { icmp_type, code: 0 }
    }

    fn protocol(&self, v6: bool) -> u8 {
        match self {
            Self::Tcp { .. } => 6,
            Self::Udp { .. } => 17,
            Self::Icmp { .. } => {
                if v6 {
                    58
                } else {
                    1
                }
            }
            Self::Raw { protocol, .. } => *protocol,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Tcp {
                sport,
                dport,
                flags,
                options,
                payload,
            } => {
                let mut opts = options.clone();
                while !opts.len().is_multiple_of(4) {
                    opts.push(0);
                }
                let doff = (20 + opts.len()) / 4;
                let mut b = Vec::with_capacity(20 + opts.len() + payload.len());
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&0x1000_0000u32.to_be_bytes()); // seq
                b.extend_from_slice(&0u32.to_be_bytes()); // ack
                b.push((doff as u8) << 4);
                b.push(*flags);
                b.extend_from_slice(&1024u16.to_be_bytes()); // window
                b.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
                b.extend_from_slice(&opts);
                b.extend_from_slice(payload);
                b
            }
            Self::Udp {
                sport,
                dport,
                payload,
            } => {
                let mut b = Vec::with_capacity(8 + payload.len());
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(payload);
                b
            }
            Self::Icmp { icmp_type, code } => vec![*icmp_type, *code, 0, 0, 0, 1, 0, 1],
            Self::Raw { bytes, .. } => bytes.clone(),
        }
    }
}

/// An IPv6 extension header to put before the transport header.
#[derive(Clone, Debug)]
pub enum Ipv6Ext {
    HopByHop,
    Routing,
    DestinationOptions,
    /// Fragment header: offset in 8-byte units, more-fragments flag.
    Fragment {
        offset: u16,
        more: bool,
    },
}

impl Ipv6Ext {
    fn number(&self) -> u8 {
        match self {
            Self::HopByHop => 0,
            Self::Routing => 43,
            Self::Fragment { .. } => 44,
            Self::DestinationOptions => 60,
        }
    }
}

/// IPv4 fragmentation fields.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Frag {
    /// Offset in 8-byte units.
    pub offset: u16,
    pub more: bool,
}

/// A crafted packet: Ethernet (+VLAN tags) / IPv4 or IPv6 / transport.
#[derive(Clone, Debug)]
pub struct Packet {
    /// TPIDs of VLAN tags, outermost first.
    pub vlan_tpids: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 options (padded to 4 bytes by the builder).
    pub ipv4_options: Vec<u8>,
    pub ipv4_frag: Option<Ipv4Frag>,
    pub ipv6_ext: Vec<Ipv6Ext>,
    pub transport: Transport,
    /// Cut the transport bytes to this many (a fragment carrying part of a header).
    pub transport_len: Option<usize>,
}

impl Packet {
    /// `src` and `dst` are address literals of the same family.
    ///
    /// # Panics
    /// On an unparsable address literal (test input).
    pub fn new(src: &str, dst: &str, transport: Transport) -> Self {
        let src: IpAddr = src.parse().expect("source address literal");
        let dst: IpAddr = dst.parse().expect("destination address literal");
        Self::from_ips(src, dst, transport)
    }

    pub fn from_ips(src: IpAddr, dst: IpAddr, transport: Transport) -> Self {
        Self {
            vlan_tpids: Vec::new(),
            src,
            dst,
            ipv4_options: Vec::new(),
            ipv4_frag: None,
            ipv6_ext: Vec::new(),
            transport,
            transport_len: None,
        }
    }

    #[must_use]
    pub fn vlan(mut self, tpid: u16) -> Self {
        self.vlan_tpids.push(tpid);
        self
    }

    #[must_use]
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        self.ipv4_options = options.to_vec();
        self
    }

    #[must_use]
    pub fn ipv4_fragment(mut self, offset: u16, more: bool) -> Self {
        self.ipv4_frag = Some(Ipv4Frag { offset, more });
        self
    }

    #[must_use]
    pub fn ipv6_ext(mut self, ext: Ipv6Ext) -> Self {
        self.ipv6_ext.push(ext);
        self
    }

    #[must_use]
    pub fn transport_len(mut self, len: usize) -> Self {
        self.transport_len = Some(len);
        self
    }

    /// The Ethernet frame.
    pub fn build(&self) -> Vec<u8> {
        let mut l4 = self.transport.bytes();
        if let Some(len) = self.transport_len {
            l4.truncate(len);
        }
        let (ethertype, l3) = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (0x0800u16, self.ipv4(s.octets(), d.octets(), &l4)),
            (IpAddr::V6(s), IpAddr::V6(d)) => (0x86ddu16, self.ipv6(s.octets(), d.octets(), &l4)),
            _ => panic!("source and destination must be of one address family"),
        };
        let mut frame = Vec::with_capacity(14 + 8 + l3.len());
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst MAC
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src MAC
        for (i, tpid) in self.vlan_tpids.iter().enumerate() {
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&(10 + i as u16).to_be_bytes()); // TCI: VLAN 10, 11
        }
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(&l3);
        frame
    }

    fn ipv4(&self, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let mut opts = self.ipv4_options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(0); // end-of-options padding
        }
        let ihl = (20 + opts.len()) / 4;
        let total = 20 + opts.len() + l4.len();
        let frag = self.ipv4_frag.map_or(0x4000u16, |f| {
            (f.offset & 0x1fff) | if f.more { 0x2000 } else { 0 }
        });
        let mut h = Vec::with_capacity(total);
        h.push(0x40 | ihl as u8);
        h.push(0);
        h.extend_from_slice(&(total as u16).to_be_bytes());
        h.extend_from_slice(&0x1234u16.to_be_bytes());
        h.extend_from_slice(&frag.to_be_bytes());
        h.push(64);
        h.push(self.transport.protocol(false));
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h.extend_from_slice(&opts);
        let sum = checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend_from_slice(l4);
        h
    }

    fn ipv6(&self, src: [u8; 16], dst: [u8; 16], l4: &[u8]) -> Vec<u8> {
        let mut ext_bytes = Vec::new();
        let protocol = self.transport.protocol(true);
        for (i, ext) in self.ipv6_ext.iter().enumerate() {
            let next = self.ipv6_ext.get(i + 1).map_or(protocol, Ipv6Ext::number);
            match ext {
                Ipv6Ext::Fragment { offset, more } => {
                    ext_bytes.push(next);
                    ext_bytes.push(0);
                    let fo = (offset << 3) | u16::from(*more);
                    ext_bytes.extend_from_slice(&fo.to_be_bytes());
                    ext_bytes.extend_from_slice(&0xabcdu32.to_be_bytes());
                }
                Ipv6Ext::Routing => {
                    // Type 0 style header with one 16-byte segment slot (len = 2 units).
                    ext_bytes.extend_from_slice(&[next, 2, 0, 0, 0, 0, 0, 0]);
                    ext_bytes.extend_from_slice(&[0; 16]);
                }
                Ipv6Ext::HopByHop | Ipv6Ext::DestinationOptions => {
                    // 8 bytes: next, len 0, PadN option filling 6 bytes.
                    ext_bytes.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
                }
            }
        }
        let first = self.ipv6_ext.first().map_or(protocol, Ipv6Ext::number);
        let payload_len = ext_bytes.len() + l4.len();
        let mut h = Vec::with_capacity(40 + payload_len);
        h.extend_from_slice(&[0x60, 0, 0, 0]);
        h.extend_from_slice(&(payload_len as u16).to_be_bytes());
        h.push(first);
        h.push(64);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h.extend_from_slice(&ext_bytes);
        h.extend_from_slice(l4);
        h
    }
}

/// Internet checksum (RFC 1071).
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in bytes.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_syn_layout() {
        let f = Packet::new("198.18.0.1", "198.18.0.2", Transport::tcp(22, tcp::SYN)).build();
        assert_eq!(f.len(), 54);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(f[14], 0x45);
        assert_eq!(&f[26..30], &[198, 18, 0, 1]);
        assert_eq!(checksum(&f[14..34]), 0, "header checksum verifies");
        assert_eq!(f[14 + 20 + 13], tcp::SYN);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 22);
    }

    #[test]
    fn vlan_and_options() {
        let f = Packet::new("198.18.0.1", "198.18.0.2", Transport::udp(53))
            .vlan(TPID_8021AD)
            .vlan(TPID_8021Q)
            .ipv4_options(&[1, 1, 1])
            .build();
        assert_eq!(&f[12..14], &[0x88, 0xa8]);
        assert_eq!(&f[16..18], &[0x81, 0x00]);
        assert_eq!(&f[20..22], &[0x08, 0x00]);
        assert_eq!(f[22], 0x46, "IHL 6 with 4 bytes of options");
    }

    #[test]
    fn ipv6_chain() {
        let f = Packet::new("fd00::1", "fd00::2", Transport::tcp(80, tcp::SYN))
            .ipv6_ext(Ipv6Ext::HopByHop)
            .ipv6_ext(Ipv6Ext::Fragment {
                offset: 0,
                more: false,
            })
            .build();
        assert_eq!(f[14 + 6], 0, "first next header is hop-by-hop");
        assert_eq!(f[54], 44, "hop-by-hop points at fragment");
        assert_eq!(f[62], 6, "fragment points at TCP");
        assert_eq!(f.len(), 14 + 40 + 8 + 8 + 20);
    }
}
