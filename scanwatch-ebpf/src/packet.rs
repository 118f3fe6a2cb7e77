//! Packet access and the Ethernet -> VLAN -> IP walk shared by both
//! programs: the XDP program classifies probes from it (`parse.rs`), the TC
//! egress program matches answers (`contacts.rs`).
//!
//! [`Packet`] reads the frame of either context; every read is checked
//! against `data_end` and no offset beyond [`MAX_HEADER_OFFSET`] is read.
//! [`walk`] goes through Ethernet, up to two VLAN tags, the IPv4 header
//! (with options) or the IPv6 header and a bounded chain of extension
//! headers, and returns where each layer starts ([`Ip`]): the L3 offset,
//! family, transport protocol, L4 offset, how many transport bytes the IP
//! layer gives, and the fragment offset and more-fragments flag as they
//! are. No length in the packet is trusted and no checksum is validated.

use aya_ebpf::programs::{TcContext, XdpContext};
use scanwatch_common::{SourceKey, maps::MAX_IPV6_EXT_HEADERS};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
pub const ETH_P_QINQ_OLD: u16 = 0x9100;
/// VLAN tags walked; a frame with a third is not IP to us.
pub const MAX_VLAN_TAGS: usize = 2;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;

/// Offsets beyond this are never read (keeps the verifier's ranges small;
/// no header either program reads lies beyond it in a sane packet).
pub const MAX_HEADER_OFFSET: usize = 1024;

/// [`walk`] mode: the frame must hold the whole datagram its IP header
/// claims (XDP sees whole frames), else [`ParseError::Truncated`].
pub const WHOLE_DATAGRAM: bool = true;
/// [`walk`] mode: the frame may end before the datagram does (TC sees the
/// skb's linear part only: GSO packets, paged data), so the IP lengths are
/// not checked against it. Reads stay bounds-checked.
pub const LINEAR_PART: bool = false;

/// Why a packet could not be walked or read.
#[derive(Clone, Copy)]
pub enum ParseError {
    /// The frame ends before a header, or before the length its IP header claims.
    Truncated,
    /// A header field is impossible, or an offset lies beyond [`MAX_HEADER_OFFSET`].
    Malformed,
    /// More IPv6 extension headers than [`MAX_IPV6_EXT_HEADERS`].
    Ipv6ExtChainTooLong,
}

/// A program context that holds a packet.
pub trait Frame {
    /// Address of the first byte (`data`).
    fn data(&self) -> usize;
    /// Address just past the last byte (`data_end`), plain load.
    fn data_end(&self) -> usize;
    /// `data_end` by a volatile load, read anew for every bounds check:
    /// otherwise LLVM proves a check redundant from the IP length checks
    /// (which compare scalars the verifier does not relate to the packet)
    /// and removes it, and the verifier rejects the read.
    fn data_end_volatile(&self) -> usize;
}

impl Frame for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    #[inline(always)]
    fn data_end_volatile(&self) -> usize {
        // SAFETY: self.ctx is the kernel's valid xdp_md for this invocation.
        unsafe { core::ptr::read_volatile(&raw const (*self.ctx).data_end) as usize }
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn data_end_volatile(&self) -> usize {
        // SAFETY: self.skb.skb is the kernel's valid __sk_buff for this invocation.
        unsafe { core::ptr::read_volatile(&raw const (*self.skb.skb).data_end) as usize }
    }
}

/// The packet of an XDP or TC context, read with bounds checks.
pub struct Packet<'a, C> {
    ctx: &'a C,
}

// Not derived: the derive would require `C: Copy`, and contexts are not.
impl<C> Clone for Packet<'_, C> {
    #[inline(always)]
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for Packet<'_, C> {}

impl<'a, C: Frame> Packet<'a, C> {
    #[inline(always)]
    pub fn new(ctx: &'a C) -> Self {
        Self { ctx }
    }

    /// Bytes in the frame (for TC: in the skb's linear part).
    #[inline(always)]
    pub fn len(self) -> usize {
        self.ctx.data_end() - self.ctx.data()
    }

    /// A pointer to a `T` at `offset`, once the `size_of::<T>()` bytes
    /// there are known to lie inside the packet.
    #[inline(always)]
    pub fn ptr_at<T>(self, offset: usize) -> Result<*const T, ParseError> {
        let start = self.ctx.data();
        let end = self.ctx.data_end_volatile();
        if offset > MAX_HEADER_OFFSET {
            return Err(ParseError::Malformed);
        }
        if start + offset + core::mem::size_of::<T>() > end {
            return Err(ParseError::Truncated);
        }
        Ok((start + offset) as *const T)
    }

    /// `N` bytes at `offset`, read in place (no copy until the caller makes one).
    #[inline(always)]
    pub fn bytes<const N: usize>(self, offset: usize) -> Result<&'a [u8; N], ParseError> {
        // SAFETY: ptr_at checked the N bytes lie inside the packet, which
        // stays in place for the program run; [u8; N] has align 1.
        Ok(unsafe { &*self.ptr_at::<[u8; N]>(offset)? })
    }

    /// The big-endian `u16` at `offset`.
    #[inline(always)]
    pub fn be16(self, offset: usize) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(*self.bytes::<2>(offset)?))
    }
}

/// Where the layers of an IP packet start, as [`walk`] found them. The
/// addresses are not read by the walk: [`Ip::src_addr`] and [`Ip::dst_addr`]
/// read them when (and only when) a program needs them.
#[derive(Clone, Copy)]
pub struct Ip {
    /// Offset of the IP header.
    pub l3: usize,
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Transport protocol: the IPv4 protocol, or the IPv6 next header after
    /// the extension headers walked (for a later fragment: the fragment
    /// header's next header).
    pub proto: u8,
    /// Offset of the transport header (past IPv4 options, IPv6 extension headers).
    pub l4: usize,
    /// Transport bytes the IP header claims from `l4` on (0 for a later
    /// fragment, which has no transport header). With [`WHOLE_DATAGRAM`]
    /// they all lie inside the frame; with [`LINEAR_PART`] they need not.
    pub l4_len: usize,
    /// Fragment offset in 8-byte units: 0 for an unfragmented packet or a
    /// first fragment. A later fragment stops the walk (`l4` is then only
    /// where its payload starts).
    pub frag_offset: u16,
    /// More fragments follow (IPv4 MF flag, IPv6 fragment header M flag).
    pub more_fragments: bool,
}

impl Ip {
    /// A fragment other than the first: no transport header.
    #[inline(always)]
    pub fn later_fragment(&self) -> bool {
        self.frag_offset != 0
    }

    /// The first fragment of several: a transport header, perhaps cut short
    /// (a TCP header may end after the ports, before the flags).
    #[inline(always)]
    pub fn first_fragment(&self) -> bool {
        self.frag_offset == 0 && self.more_fragments
    }

    /// The IP lengths leave room for an `n`-byte transport header (false
    /// for a later fragment).
    #[inline(always)]
    pub fn l4_holds(&self, n: usize) -> bool {
        self.l4_len >= n
    }

    /// The source address, IPv4-mapped for IPv4, read once (prefixes of it
    /// are masks of these bytes).
    #[inline(always)]
    pub fn src_addr<C: Frame>(self, pkt: Packet<'_, C>) -> Result<[u8; 16], ParseError> {
        if self.v6 {
            Ok(*pkt.bytes::<16>(self.l3 + 8)?)
        } else {
            Ok(SourceKey::v4(*pkt.bytes::<4>(self.l3 + 12)?).addr)
        }
    }

    /// The destination address, IPv4-mapped for IPv4.
    #[inline(always)]
    pub fn dst_addr<C: Frame>(self, pkt: Packet<'_, C>) -> Result<[u8; 16], ParseError> {
        if self.v6 {
            Ok(*pkt.bytes::<16>(self.l3 + 24)?)
        } else {
            Ok(SourceKey::v4(*pkt.bytes::<4>(self.l3 + 16)?).addr)
        }
    }

    /// The source address as a map key.
    #[inline(always)]
    pub fn source<C: Frame>(self, pkt: Packet<'_, C>) -> Result<SourceKey, ParseError> {
        Ok(SourceKey {
            addr: self.src_addr(pkt)?,
        })
    }
}

/// Walks Ethernet, up to [`MAX_VLAN_TAGS`] VLAN tags (802.1Q, 802.1ad, the
/// old 0x9100 QinQ) and the IP header(s). `Ok(None)`: not IPv4 or IPv6
/// (including a third VLAN tag). `DATAGRAM` is [`WHOLE_DATAGRAM`] or
/// [`LINEAR_PART`].
#[inline(always)]
pub fn walk<const DATAGRAM: bool, C: Frame>(pkt: Packet<'_, C>) -> Result<Option<Ip>, ParseError> {
    let mut ethertype = pkt.be16(12)?;
    let mut l3 = ETH_HLEN;
    // IP first: an untagged frame pays one or two tests, a tagged one
    // three more per tag.
    let mut tags = 0;
    loop {
        if ethertype == ETH_P_IPV4 {
            return ipv4::<DATAGRAM, C>(pkt, l3).map(Some);
        }
        if ethertype == ETH_P_IPV6 {
            return ipv6::<DATAGRAM, C>(pkt, l3).map(Some);
        }
        if tags == MAX_VLAN_TAGS
            || !(ethertype == ETH_P_8021Q
                || ethertype == ETH_P_8021AD
                || ethertype == ETH_P_QINQ_OLD)
        {
            return Ok(None);
        }
        ethertype = pkt.be16(l3 + 2)?;
        l3 += 4;
        tags += 1;
    }
}

#[inline(always)]
fn ipv4<const DATAGRAM: bool, C: Frame>(pkt: Packet<'_, C>, l3: usize) -> Result<Ip, ParseError> {
    // Fields are read in place: no copy of the header.
    let hdr = pkt.bytes::<20>(l3)?;
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
    if DATAGRAM && l3 + total_len > pkt.len() {
        return Err(ParseError::Truncated);
    }
    let frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    let frag_offset = frag & 0x1fff;
    Ok(Ip {
        l3,
        v6: false,
        proto: hdr[9],
        l4: l3 + ihl,
        l4_len: if frag_offset != 0 { 0 } else { total_len - ihl },
        frag_offset,
        more_fragments: frag & 0x2000 != 0,
    })
}

#[inline(always)]
fn ipv6<const DATAGRAM: bool, C: Frame>(pkt: Packet<'_, C>, l3: usize) -> Result<Ip, ParseError> {
    // Version, payload length, next header: the fixed header is 40 bytes.
    let hdr = pkt.bytes::<40>(l3)?;
    if hdr[0] >> 4 != 6 {
        return Err(ParseError::Malformed);
    }
    let payload_len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
    let mut next = hdr[6];

    let payload_start = l3 + 40;
    // Payload length 0 means a jumbogram (hop-by-hop option): trust the frame.
    let payload_end = if payload_len == 0 {
        pkt.len()
    } else {
        payload_start + payload_len
    };
    if DATAGRAM && payload_end > pkt.len() {
        return Err(ParseError::Truncated);
    }

    let mut offset = payload_start;
    let mut more_fragments = false;
    let mut walked = 0;
    while walked < MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let ext = pkt.bytes::<2>(offset)?;
                next = ext[0];
                offset += (usize::from(ext[1]) + 1) * 8;
            }
            IPPROTO_AH => {
                let ext = pkt.bytes::<2>(offset)?;
                next = ext[0];
                offset += (usize::from(ext[1]) + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                let ext = pkt.bytes::<8>(offset)?;
                next = ext[0];
                let frag = u16::from_be_bytes([ext[2], ext[3]]);
                offset += 8;
                if frag >> 3 != 0 {
                    // A later fragment: what follows is payload, not headers.
                    return Ok(Ip {
                        l3,
                        v6: true,
                        proto: next,
                        l4: offset,
                        l4_len: 0,
                        frag_offset: frag >> 3,
                        more_fragments: frag & 1 != 0,
                    });
                }
                more_fragments = frag & 1 != 0;
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
    Ok(Ip {
        l3,
        v6: true,
        proto: next,
        l4: offset,
        l4_len: payload_end - offset,
        frag_offset: 0,
        more_fragments,
    })
}

#[inline(always)]
fn is_ipv6_ext(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
    )
}
