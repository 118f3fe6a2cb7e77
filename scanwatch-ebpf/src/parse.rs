//! Probe classification of the XDP program, on top of the shared walk
//! ([`crate::packet::walk`]: Ethernet, VLAN tags, IPv4 with options and
//! fragments, IPv6 with a bounded extension-header walk): TCP flags, UDP,
//! ICMP and ICMPv6 types. The frame must hold the length its IP header
//! claims ([`WHOLE_DATAGRAM`]).

use aya_ebpf::programs::XdpContext;
use scanwatch_common::{
    Counter, ProbeKind, SourceKey, classify_icmp, classify_icmpv6, classify_tcp,
    fingerprint::{FINGERPRINTED, TcpProbe, signatures},
    sketch::{host_fingerprint, host_fingerprint_v4, port_entry},
};

use crate::packet::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Ip, Packet, ParseError, WHOLE_DATAGRAM,
    walk,
};
use crate::{DETECT_CONFIG, window::setting};

impl ParseError {
    /// The interface counter of a packet the XDP program could not parse.
    #[inline(always)]
    pub fn counter(self) -> Counter {
        match self {
            Self::Truncated => Counter::Truncated,
            Self::Malformed => Counter::Malformed,
            Self::Ipv6ExtChainTooLong => Counter::Ipv6ExtChainTooLong,
        }
    }
}

/// A probe as the window code sees it: its kind, who sent it, and where to.
pub struct Probe {
    pub kind: ProbeKind,
    pub source: SourceKey,
    /// Fingerprint of the destination address (`sketch::host_fingerprint`).
    pub host: u16,
    /// Destination port entry (`sketch::port_entry`) of TCP/UDP probes, else 0.
    pub port: u32,
    /// The scanner-tool signatures of a TCP probe with a whole header, with
    /// `fingerprint::FINGERPRINTED`; else 0.
    pub sigs: u8,
}

impl Ip {
    /// `sketch::host_fingerprint` of the destination address.
    #[inline(always)]
    pub fn dst_fingerprint(self, pkt: Packet<'_, XdpContext>) -> Result<u16, ParseError> {
        if self.v6 {
            Ok(host_fingerprint(pkt.bytes::<16>(self.l3 + 24)?))
        } else {
            Ok(host_fingerprint_v4(*pkt.bytes::<4>(self.l3 + 16)?))
        }
    }
}

/// A probe found by the parser: its kind, port entry and IP header.
#[derive(Clone, Copy)]
pub struct Found {
    pub kind: ProbeKind,
    /// Destination port entry (`sketch::port_entry`) of TCP/UDP probes, else 0.
    pub port: u32,
    pub ip: Ip,
    /// As [`Probe::sigs`].
    pub sigs: u8,
}

pub enum Outcome {
    NotIp,
    /// A parsed IP packet that is not a probe.
    NotProbe(Ip),
    Probe(Found),
}

#[inline(always)]
pub fn parse(pkt: Packet<'_, XdpContext>) -> Result<Outcome, ParseError> {
    let Some(ip) = walk::<WHOLE_DATAGRAM, _>(pkt)? else {
        // Includes a third VLAN tag: not something we parse.
        return Ok(Outcome::NotIp);
    };
    // One inlined copy of the classification per family, each knowing its
    // family (as the per-family parsers before the shared walk did): one
    // copy for both keeps the two families' values apart in more registers
    // and stack slots, and branches on `v6` again at every address read.
    if ip.v6 {
        classify(pkt, Ip { v6: true, ..ip })
    } else {
        classify(pkt, Ip { v6: false, ..ip })
    }
}

#[inline(always)]
fn classify(pkt: Packet<'_, XdpContext>, ip: Ip) -> Result<Outcome, ParseError> {
    if ip.later_fragment() {
        return Ok(probe(ProbeKind::Fragment, ip));
    }
    match ip.proto {
        IPPROTO_TCP => tcp(pkt, ip),
        IPPROTO_UDP => udp(pkt, ip),
        IPPROTO_ICMP if !ip.v6 => icmp(pkt, ip),
        IPPROTO_ICMPV6 if ip.v6 => icmp(pkt, ip),
        _ => Ok(Outcome::NotProbe(ip)),
    }
}

#[inline(always)]
fn probe(kind: ProbeKind, ip: Ip) -> Outcome {
    Outcome::Probe(Found {
        kind,
        port: 0,
        ip,
        sigs: 0,
    })
}

#[inline(always)]
fn port_probe(kind: ProbeKind, ip: Ip, port: u16, udp: bool) -> Outcome {
    Outcome::Probe(Found {
        kind,
        port: port_entry(port, udp),
        ip,
        sigs: 0,
    })
}

/// The IP lengths leave less room than the transport header needs: in a
/// first fragment a fragmentation trick, else a malformed packet.
#[inline(always)]
fn short(ip: Ip) -> Result<Outcome, ParseError> {
    if ip.first_fragment() {
        Ok(probe(ProbeKind::Fragment, ip))
    } else {
        Err(ParseError::Malformed)
    }
}

#[inline(always)]
fn tcp(pkt: Packet<'_, XdpContext>, ip: Ip) -> Result<Outcome, ParseError> {
    if !ip.l4_holds(20) {
        return tiny_fragment(pkt, ip);
    }
    let tcp = pkt.bytes::<20>(ip.l4)?;
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    if data_offset < 20 || (!ip.l4_holds(data_offset) && !ip.first_fragment()) {
        return Err(ParseError::Malformed);
    }
    let Some(kind) = classify_tcp(tcp[13]) else {
        return Ok(Outcome::NotProbe(ip));
    };
    let port = u16::from_be_bytes([tcp[2], tcp[3]]);
    Ok(Outcome::Probe(Found {
        kind,
        port: port_entry(port, false),
        ip,
        // A load-time constant: the verifier drops the branch not taken.
        sigs: if tool_signatures_on() {
            tool_signatures(&tcp_fields(pkt, ip, tcp, data_offset)?)
        } else {
            0
        },
    }))
}

/// Whether TCP probes carry their scanner-tool signatures
/// (`[detection] tool_signatures`): a load-time constant. The general
/// walk and `fast::tracked_syn` both ask here.
#[inline(always)]
pub fn tool_signatures_on() -> bool {
    setting(&raw const DETECT_CONFIG.tool_signatures) != 0
}

/// A TCP probe's `sigs` (with the tool signatures on): the signatures of
/// its header fields, with `FINGERPRINTED`.
#[inline(always)]
pub fn tool_signatures(fields: &TcpProbe) -> u8 {
    FINGERPRINTED | signatures(fields)
}

/// The fields the scanner-tool signatures read (`scanwatch_common::fingerprint`).
#[inline(always)]
fn tcp_fields(
    pkt: Packet<'_, XdpContext>,
    ip: Ip,
    tcp: &[u8; 20],
    data_offset: usize,
) -> Result<TcpProbe, ParseError> {
    let options_head = if data_offset >= 24 && ip.l4_holds(24) {
        *pkt.bytes::<4>(ip.l4 + 20)?
    } else {
        [0; 4]
    };
    let v4 = if ip.v6 {
        None
    } else {
        let h = pkt.bytes::<20>(ip.l3)?;
        Some((
            u16::from_be_bytes([h[4], h[5]]),
            u32::from_be_bytes([h[16], h[17], h[18], h[19]]),
        ))
    };
    Ok(TcpProbe::of_header(tcp, v4, options_head))
}

/// A first fragment that ends inside the TCP header (`nmap -f`): no stack
/// sends one (RFC 1858, RFC 3128), so it is a stealth probe in itself, and
/// a port probe of its destination port when the fragment holds the ports.
/// Not a first fragment: a malformed packet.
#[inline(always)]
fn tiny_fragment(pkt: Packet<'_, XdpContext>, ip: Ip) -> Result<Outcome, ParseError> {
    if !ip.first_fragment() {
        return Err(ParseError::Malformed);
    }
    if !ip.l4_holds(4) {
        return Ok(probe(ProbeKind::Stealth, ip));
    }
    let ports = pkt.bytes::<4>(ip.l4)?;
    Ok(port_probe(
        ProbeKind::Stealth,
        ip,
        u16::from_be_bytes([ports[2], ports[3]]),
        false,
    ))
}

#[inline(always)]
fn udp(pkt: Packet<'_, XdpContext>, ip: Ip) -> Result<Outcome, ParseError> {
    if !ip.l4_holds(8) {
        return short(ip);
    }
    let udp = pkt.bytes::<8>(ip.l4)?;
    Ok(port_probe(
        ProbeKind::Udp,
        ip,
        u16::from_be_bytes([udp[2], udp[3]]),
        true,
    ))
}

#[inline(always)]
fn icmp(pkt: Packet<'_, XdpContext>, ip: Ip) -> Result<Outcome, ParseError> {
    if !ip.l4_holds(4) {
        return short(ip);
    }
    // Read the 4-byte header rather than one byte: LLVM turns a 1-byte
    // bounds check into a comparison the verifier cannot use.
    let icmp_type = pkt.bytes::<4>(ip.l4)?[0];
    let kind = if ip.v6 {
        classify_icmpv6(icmp_type)
    } else {
        classify_icmp(icmp_type)
    };
    Ok(match kind {
        Some(kind) => probe(kind, ip),
        None => Outcome::NotProbe(ip),
    })
}
