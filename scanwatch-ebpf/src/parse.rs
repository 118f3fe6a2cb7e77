//! Bounds-checked header parsing: Ethernet, up to two VLAN tags, IPv4 (with
//! options and fragments), IPv6 (with a bounded extension-header walk), TCP,
//! UDP, ICMP and ICMPv6. No length in the packet is trusted: every read is
//! checked against `data_end`, and the frame must hold the length its IP
//! header claims.

use aya_ebpf::programs::XdpContext;
use scanwatch_common::{
    Counter, ProbeKind, SourceKey, classify_icmp, classify_icmpv6, classify_tcp,
    maps::MAX_IPV6_EXT_HEADERS,
    sketch::{addr_hash, addr_hash_v4, port_entry},
};

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const ETH_P_QINQ_OLD: u16 = 0x9100;
const MAX_VLAN_TAGS: usize = 2;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;

/// Offsets beyond this are never read (keeps the verifier's ranges small;
/// no header we parse lies beyond it in a sane packet).
const MAX_HEADER_OFFSET: usize = 1024;

/// Why a packet could not be parsed.
#[derive(Clone, Copy)]
pub enum ParseError {
    Truncated,
    Malformed,
    Ipv6ExtChainTooLong,
}

impl ParseError {
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
    /// Hash of the destination address (`sketch::addr_hash`).
    pub dst_hash: u32,
    /// Destination port entry (`sketch::port_entry`) of TCP/UDP probes, else 0.
    pub port: u32,
}

/// Where an IP header starts. The addresses are read from the packet only
/// when needed ([`Ip::source`], [`Ip::dst_hash`]): benign traffic from
/// sources nobody blocks never builds a key or a hash.
#[derive(Clone, Copy)]
pub struct Ip {
    l3: usize,
    v6: bool,
}

impl Ip {
    /// The source address, IPv4-mapped for IPv4.
    #[inline(always)]
    pub fn source(self, ctx: &XdpContext) -> Result<SourceKey, ParseError> {
        if self.v6 {
            // SAFETY: ptr_at checked the 16 bytes lie inside the packet.
            Ok(SourceKey::v6(unsafe {
                *ptr_at::<[u8; 16]>(ctx, self.l3 + 8)?
            }))
        } else {
            // SAFETY: as above, 4 bytes.
            Ok(SourceKey::v4(unsafe {
                *ptr_at::<[u8; 4]>(ctx, self.l3 + 12)?
            }))
        }
    }

    /// The destination (local) address, IPv4-mapped for IPv4 (first
    /// contacts of the reply-aware detector).
    #[inline(always)]
    pub fn dst(self, ctx: &XdpContext) -> Result<[u8; 16], ParseError> {
        if self.v6 {
            // SAFETY: ptr_at checked the 16 bytes lie inside the packet.
            Ok(unsafe { *ptr_at::<[u8; 16]>(ctx, self.l3 + 24)? })
        } else {
            // SAFETY: as above, 4 bytes.
            Ok(SourceKey::v4(unsafe { *ptr_at::<[u8; 4]>(ctx, self.l3 + 16)? }).addr)
        }
    }

    /// `sketch::addr_hash` of the destination address.
    #[inline(always)]
    pub fn dst_hash(self, ctx: &XdpContext) -> Result<u32, ParseError> {
        if self.v6 {
            // SAFETY: ptr_at checked the 16 bytes lie inside the packet.
            Ok(addr_hash(unsafe {
                &*ptr_at::<[u8; 16]>(ctx, self.l3 + 24)?
            }))
        } else {
            // SAFETY: as above, 4 bytes.
            Ok(addr_hash_v4(unsafe {
                *ptr_at::<[u8; 4]>(ctx, self.l3 + 16)?
            }))
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
}

pub enum Outcome {
    NotIp,
    /// A parsed IP packet that is not a probe.
    NotProbe(Ip),
    Probe(Found),
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ParseError> {
    let start = ctx.data();
    // A volatile load of data_end: otherwise LLVM proves this check redundant
    // from the IP length checks (which compare scalars the verifier does not
    // relate to the packet) and removes it, and the verifier rejects the read.
    // SAFETY: ctx.ctx is the kernel's valid xdp_md for this invocation.
    let end =
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*ctx.ctx).data_end)) } as usize;
    let len = core::mem::size_of::<T>();
    if offset > MAX_HEADER_OFFSET {
        return Err(ParseError::Malformed);
    }
    if start + offset + len > end {
        return Err(ParseError::Truncated);
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
fn read_be16(ctx: &XdpContext, offset: usize) -> Result<u16, ParseError> {
    // SAFETY: ptr_at checked both bytes lie inside the packet; [u8; 2] has align 1.
    Ok(u16::from_be_bytes(unsafe {
        *ptr_at::<[u8; 2]>(ctx, offset)?
    }))
}

#[inline(always)]
fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

pub fn parse(ctx: &XdpContext) -> Result<Outcome, ParseError> {
    let mut ethertype = read_be16(ctx, 12)?;
    let mut l3 = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD || ethertype == ETH_P_QINQ_OLD {
            ethertype = read_be16(ctx, l3 + 2)?;
            l3 += 4;
        }
    }
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(ctx, l3),
        ETH_P_IPV6 => parse_ipv6(ctx, l3),
        // Includes a third VLAN tag: not something we parse.
        _ => Ok(Outcome::NotIp),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3: usize) -> Result<Outcome, ParseError> {
    // Fields are read in place: no copy of the header.
    // SAFETY: ptr_at checked all 20 bytes lie inside the packet.
    let hdr = unsafe { &*ptr_at::<[u8; 20]>(ctx, l3)? };
    let version_ihl = hdr[0];
    if version_ihl >> 4 != 4 {
        return Err(ParseError::Malformed);
    }
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if ihl < 20 {
        return Err(ParseError::Malformed);
    }
    let total_len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
    if total_len < ihl {
        return Err(ParseError::Malformed);
    }
    if l3 + total_len > frame_len(ctx) {
        return Err(ParseError::Truncated);
    }
    let ip = Ip { l3, v6: false };
    let frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    if frag & 0x1fff != 0 {
        return Ok(probe(ProbeKind::Fragment, ip));
    }
    let l4 = L4 {
        offset: l3 + ihl,
        len: total_len - ihl,
        first_fragment: frag & 0x2000 != 0,
    };
    match hdr[9] {
        IPPROTO_ICMP => l4.icmp(ctx, ip, false),
        proto => l4.tcp_udp(ctx, proto, ip),
    }
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3: usize) -> Result<Outcome, ParseError> {
    // Version, payload length, next header: the fixed header is 40 bytes.
    // SAFETY: ptr_at checked all 40 bytes lie inside the packet.
    let hdr = unsafe { &*ptr_at::<[u8; 40]>(ctx, l3)? };
    if hdr[0] >> 4 != 6 {
        return Err(ParseError::Malformed);
    }
    let payload_len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
    let mut next = hdr[6];
    let ip = Ip { l3, v6: true };

    let payload_start = l3 + 40;
    // Payload length 0 means a jumbogram (hop-by-hop option): trust the frame.
    let payload_end = if payload_len == 0 {
        frame_len(ctx)
    } else {
        payload_start + payload_len
    };
    if payload_end > frame_len(ctx) {
        return Err(ParseError::Truncated);
    }

    let mut offset = payload_start;
    let mut first_fragment = false;
    let mut walked = 0;
    while walked < MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // SAFETY: ptr_at checked both bytes lie inside the packet.
                let ext = unsafe { *ptr_at::<[u8; 2]>(ctx, offset)? };
                next = ext[0];
                offset += (usize::from(ext[1]) + 1) * 8;
            }
            IPPROTO_AH => {
                // SAFETY: as above.
                let ext = unsafe { *ptr_at::<[u8; 2]>(ctx, offset)? };
                next = ext[0];
                offset += (usize::from(ext[1]) + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                // SAFETY: ptr_at checked all 8 bytes lie inside the packet.
                let ext = unsafe { *ptr_at::<[u8; 8]>(ctx, offset)? };
                next = ext[0];
                let frag = u16::from_be_bytes([ext[2], ext[3]]);
                if frag >> 3 != 0 {
                    return Ok(probe(ProbeKind::Fragment, ip));
                }
                first_fragment = frag & 1 != 0;
                offset += 8;
            }
            _ => break,
        }
        if offset > payload_end {
            // An extension header claims more than the payload holds.
            return Err(ParseError::Malformed);
        }
        walked += 1;
    }
    if walked == MAX_IPV6_EXT_HEADERS && is_ipv6_ext(next) {
        return Err(ParseError::Ipv6ExtChainTooLong);
    }
    let l4 = L4 {
        offset,
        len: payload_end - offset,
        first_fragment,
    };
    match next {
        IPPROTO_ICMPV6 => l4.icmp(ctx, ip, true),
        proto => l4.tcp_udp(ctx, proto, ip),
    }
}

#[inline(always)]
fn is_ipv6_ext(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
    )
}

#[inline(always)]
fn probe(kind: ProbeKind, ip: Ip) -> Outcome {
    Outcome::Probe(Found { kind, port: 0, ip })
}

#[inline(always)]
fn port_probe(kind: ProbeKind, ip: Ip, port: u16, udp: bool) -> Outcome {
    Outcome::Probe(Found {
        kind,
        port: port_entry(port, udp),
        ip,
    })
}

/// Where the transport header starts and how many bytes the IP layer says it has.
struct L4 {
    offset: usize,
    len: usize,
    /// A first fragment (more fragments follow): a short transport header is
    /// a fragmentation trick, not a malformed packet.
    first_fragment: bool,
}

impl L4 {
    /// The IP lengths leave less room than the transport header needs.
    #[inline(always)]
    fn short(&self, ip: Ip) -> Result<Outcome, ParseError> {
        if self.first_fragment {
            Ok(probe(ProbeKind::Fragment, ip))
        } else {
            Err(ParseError::Malformed)
        }
    }

    #[inline(always)]
    fn tcp_udp(&self, ctx: &XdpContext, proto: u8, ip: Ip) -> Result<Outcome, ParseError> {
        match proto {
            IPPROTO_TCP => {
                if self.len < 20 {
                    return self.short(ip);
                }
                // SAFETY: ptr_at checked the fixed TCP header lies inside the packet.
                let tcp = unsafe { &*ptr_at::<[u8; 20]>(ctx, self.offset)? };
                let data_offset = usize::from(tcp[12] >> 4) * 4;
                if data_offset < 20 || (data_offset > self.len && !self.first_fragment) {
                    return Err(ParseError::Malformed);
                }
                Ok(match classify_tcp(tcp[13]) {
                    Some(kind) => port_probe(kind, ip, u16::from_be_bytes([tcp[2], tcp[3]]), false),
                    None => Outcome::NotProbe(ip),
                })
            }
            IPPROTO_UDP => {
                if self.len < 8 {
                    return self.short(ip);
                }
                // SAFETY: ptr_at checked the UDP header lies inside the packet.
                let udp = unsafe { &*ptr_at::<[u8; 8]>(ctx, self.offset)? };
                Ok(port_probe(
                    ProbeKind::Udp,
                    ip,
                    u16::from_be_bytes([udp[2], udp[3]]),
                    true,
                ))
            }
            _ => Ok(Outcome::NotProbe(ip)),
        }
    }

    #[inline(always)]
    fn icmp(&self, ctx: &XdpContext, ip: Ip, v6: bool) -> Result<Outcome, ParseError> {
        if self.len < 4 {
            return self.short(ip);
        }
        // Read the 4-byte header rather than one byte: LLVM turns a 1-byte
        // bounds check into a comparison the verifier cannot use.
        // SAFETY: ptr_at checked the 4 bytes lie inside the packet.
        let icmp_type = unsafe { *ptr_at::<[u8; 4]>(ctx, self.offset)? }[0];
        let kind = if v6 {
            classify_icmpv6(icmp_type)
        } else {
            classify_icmp(icmp_type)
        };
        Ok(match kind {
            Some(kind) => probe(kind, ip),
            None => Outcome::NotProbe(ip),
        })
    }
}
