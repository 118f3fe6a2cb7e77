//! A minimal pcapng writer and reader (the blocks scanwatch writes): a
//! Section Header Block, an Interface Description Block per interface
//! (Ethernet, snap length 128, nanosecond timestamps) and Enhanced Packet
//! Blocks with a comment. Little-endian, every block and option padded to
//! 32 bits, as the pcapng specification (draft-ietf-opsawg-pcapng) says.
//! No I/O: blocks are byte vectors.

/// Block types.
pub const SHB: u32 = 0x0A0D_0D0A;
pub const IDB: u32 = 0x0000_0001;
pub const EPB: u32 = 0x0000_0006;
/// The byte-order magic of the section header.
pub const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u16 = 1;
/// Bytes of a packet kept (the kernel's record holds this many).
pub const SNAPLEN: u32 = scanwatch_common::evidence::EVIDENCE_BYTES as u32;

const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;

/// Longest comment kept (an option's length is 16 bits; ours are short).
const MAX_OPTION: usize = 1024;

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Appends one option (code, length, value padded to 32 bits).
fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    let value = &value[..value.len().min(MAX_OPTION)];
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + pad4(value.len()), 0);
}

/// A block: type, total length, `body` (already padded), total length.
fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let total = (12 + body.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&total.to_le_bytes());
    out
}

/// Options followed by the end-of-options marker.
fn options(list: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    if list.is_empty() {
        return out;
    }
    for (code, value) in list {
        option(&mut out, *code, value);
    }
    option(&mut out, OPT_END, &[]);
    out
}

/// The Section Header Block (version 1.0, section length unknown), naming
/// the writing application.
pub fn section_header(application: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&(-1i64).to_le_bytes());
    body.extend_from_slice(&options(&[(SHB_USERAPPL, application.as_bytes())]));
    block(SHB, &body)
}

/// An Interface Description Block: Ethernet, [`SNAPLEN`], its name and
/// nanosecond timestamps (`if_tsresol` 9).
pub fn interface(name: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&SNAPLEN.to_le_bytes());
    let mut opts: Vec<(u16, &[u8])> = Vec::new();
    if !name.is_empty() {
        opts.push((IF_NAME, name.as_bytes()));
    }
    opts.push((IF_TSRESOL, &[9]));
    body.extend_from_slice(&options(&opts));
    block(IDB, &body)
}

/// One packet for an Enhanced Packet Block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Index of its interface's IDB in the section.
    pub interface_id: u32,
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The bytes kept (at most [`SNAPLEN`]).
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub original_len: u32,
    pub comment: &'a str,
}

/// An Enhanced Packet Block.
pub fn packet(p: &Packet<'_>) -> Vec<u8> {
    let data = &p.data[..p.data.len().min(SNAPLEN as usize)];
    let mut body = Vec::with_capacity(20 + data.len() + 4 + p.comment.len() + 8);
    body.extend_from_slice(&p.interface_id.to_le_bytes());
    body.extend_from_slice(&((p.time_ns >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(p.time_ns as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&p.original_len.max(data.len() as u32).to_le_bytes());
    body.extend_from_slice(data);
    body.resize(body.len() + pad4(data.len()), 0);
    if !p.comment.is_empty() {
        body.extend_from_slice(&options(&[(OPT_COMMENT, p.comment.as_bytes())]));
    }
    block(EPB, &body)
}

/// A packet read back from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPacket {
    pub interface: String,
    pub time_ns: u64,
    pub data: Vec<u8>,
    pub original_len: u32,
    pub comment: String,
}

/// What is wrong with a file, at which byte.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a pcapng file scanwatch can read: {what} at byte {at}")]
pub struct ReadError {
    pub what: &'static str,
    pub at: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The options of a block body from `at`: (code, value).
fn read_options(body: &[u8], mut at: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while let (Some(code), Some(len)) = (u16_at(body, at), u16_at(body, at + 2)) {
        let len = usize::from(len);
        if code == OPT_END {
            break;
        }
        let Some(value) = body.get(at + 4..at + 4 + len) else {
            break;
        };
        out.push((code, value));
        at += 4 + len + pad4(len);
    }
    out
}

/// Reads the packets of a little-endian pcapng file (its interfaces by
/// name, nanosecond or microsecond timestamps); unknown blocks are skipped.
pub fn read(bytes: &[u8]) -> Result<Vec<ReadPacket>, ReadError> {
    let err = |what, at| ReadError { what, at };
    if u32_at(bytes, 0) != Some(SHB) || u32_at(bytes, 8) != Some(BYTE_ORDER_MAGIC) {
        return Err(err("no little-endian section header", 0));
    }
    // (name, ns per timestamp unit) of each interface.
    let mut interfaces: Vec<(String, u64)> = Vec::new();
    let mut packets = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (Some(kind), Some(len)) = (u32_at(bytes, at), u32_at(bytes, at + 4)) else {
            return Err(err("truncated block header", at));
        };
        let len = len as usize;
        if len < 12 || !len.is_multiple_of(4) || at + len > bytes.len() {
            return Err(err("bad block length", at));
        }
        if u32_at(bytes, at + len - 4) != Some(len as u32) {
            return Err(err("trailing block length differs", at));
        }
        let body = &bytes[at + 8..at + len - 4];
        match kind {
            IDB => interfaces.push(read_interface(body)),
            EPB => packets.push(read_packet(body, &interfaces).ok_or(err("bad packet block", at))?),
            _ => {}
        }
        at += len;
    }
    Ok(packets)
}

fn read_interface(body: &[u8]) -> (String, u64) {
    let mut name = String::new();
    let mut unit_ns = 1_000;
    for (code, value) in read_options(body, 8) {
        match (code, value) {
            (IF_NAME, v) => name = String::from_utf8_lossy(v).into_owned(),
            (IF_TSRESOL, [r]) if r & 0x80 == 0 && *r <= 9 => {
                unit_ns = 10u64.pow(9 - u32::from(*r));
            }
            _ => {}
        }
    }
    (name, unit_ns)
}

fn read_packet(body: &[u8], interfaces: &[(String, u64)]) -> Option<ReadPacket> {
    let id = u32_at(body, 0)? as usize;
    let (name, unit_ns) = interfaces.get(id)?;
    let ts = u64::from(u32_at(body, 4)?) << 32 | u64::from(u32_at(body, 8)?);
    let captured = u32_at(body, 12)? as usize;
    let original_len = u32_at(body, 16)?;
    let data = body.get(20..20 + captured)?.to_vec();
    let comment = read_options(body, 20 + captured + pad4(captured))
        .into_iter()
        .find(|(c, _)| *c == OPT_COMMENT)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    Some(ReadPacket {
        interface: name.clone(),
        time_ns: ts.saturating_mul(*unit_ns),
        data,
        original_len,
        comment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32s(b: &[u8]) -> Vec<u32> {
        b.chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn section_header_layout() {
        let b = section_header("scanwatch 1.2.3");
        // 24 fixed bytes + userappl (4 + 15 + 1 pad) + end (4) + trailing length.
        assert_eq!(b.len(), 24 + 20 + 4 + 4);
        let w = u32s(&b);
        assert_eq!(w[0], SHB);
        assert_eq!(w[1] as usize, b.len());
        assert_eq!(w[2], BYTE_ORDER_MAGIC);
        assert_eq!(&b[12..16], &[1, 0, 0, 0], "version 1.0");
        assert_eq!(&b[16..24], &[0xff; 8], "section length unknown");
        assert_eq!(u16_at(&b, 24), Some(SHB_USERAPPL));
        assert_eq!(u16_at(&b, 26), Some(15));
        assert_eq!(&b[28..43], b"scanwatch 1.2.3");
        assert_eq!(b[43], 0, "padded");
        assert_eq!(&b[44..48], &[0; 4], "end of options");
        assert_eq!(*w.last().unwrap() as usize, b.len());
    }

    #[test]
    fn interface_layout() {
        let b = interface("veth0");
        let w = u32s(&b);
        assert_eq!(w[0], IDB);
        assert_eq!(w[1] as usize, b.len());
        assert_eq!(u16_at(&b, 8), Some(LINKTYPE_ETHERNET));
        assert_eq!(w[3], SNAPLEN);
        assert_eq!(SNAPLEN, 128);
        // if_name "veth0" (5 bytes, 3 pad), if_tsresol 9 (1 byte, 3 pad), end.
        assert_eq!(u16_at(&b, 16), Some(IF_NAME));
        assert_eq!(u16_at(&b, 18), Some(5));
        assert_eq!(&b[20..28], b"veth0\0\0\0");
        assert_eq!(u16_at(&b, 28), Some(IF_TSRESOL));
        assert_eq!(u16_at(&b, 30), Some(1));
        assert_eq!(&b[32..36], &[9, 0, 0, 0]);
        assert_eq!(&b[36..40], &[0; 4]);
        assert_eq!(b.len(), 44);
        assert_eq!(*w.last().unwrap() as usize, b.len());
    }

    #[test]
    fn packet_layout_and_padding() {
        for captured in [0usize, 1, 2, 3, 4, 54, 60, 127, 128, 200] {
            let data: Vec<u8> = (0..captured).map(|i| i as u8).collect();
            let b = packet(&Packet {
                interface_id: 2,
                time_ns: 0x0001_0002_0003_0004,
                data: &data,
                original_len: 1500,
                comment: "alert x",
            });
            let kept = captured.min(128);
            let padded = kept + pad4(kept);
            assert_eq!(padded % 4, 0);
            // 28 fixed, data padded, comment (4 + 7 + 1), end (4), trailing length.
            assert_eq!(b.len(), 28 + padded + 12 + 4 + 4, "captured {captured}");
            assert_eq!(b.len() % 4, 0);
            let w = u32s(&b);
            assert_eq!(w[0], EPB);
            assert_eq!(w[1] as usize, b.len());
            assert_eq!(w[2], 2);
            assert_eq!((w[3], w[4]), (0x0001_0002, 0x0003_0004));
            assert_eq!(w[5] as usize, kept);
            assert_eq!(w[6], 1500);
            assert_eq!(&b[28..28 + kept], &data[..kept]);
            assert!(b[28 + kept..28 + padded].iter().all(|x| *x == 0));
            assert_eq!(u16_at(&b, 28 + padded), Some(OPT_COMMENT));
            assert_eq!(u16_at(&b, 30 + padded), Some(7));
            assert_eq!(*w.last().unwrap() as usize, b.len());
        }
        // The original length is never below what was captured.
        let b = packet(&Packet {
            interface_id: 0,
            time_ns: 0,
            data: &[1, 2, 3],
            original_len: 0,
            comment: "",
        });
        assert_eq!(u32s(&b)[6], 3);
        assert_eq!(b.len(), 28 + 4 + 4, "no options without a comment");
    }

    #[test]
    fn reads_back_what_it_writes() {
        let mut file = section_header("scanwatch");
        file.extend(interface("eth0"));
        file.extend(interface("eth1"));
        let frames = [vec![0xaa; 60], vec![0xbb; 128], vec![0xcc; 3]];
        for (i, f) in frames.iter().enumerate() {
            file.extend(packet(&Packet {
                interface_id: (i % 2) as u32,
                time_ns: 1_800_000_000_123_456_789 + i as u64,
                data: f,
                original_len: 1514,
                comment: &format!("packet {i}"),
            }));
        }
        let packets = read(&file).unwrap();
        assert_eq!(packets.len(), 3);
        assert_eq!(packets[1].interface, "eth1");
        assert_eq!(packets[2].time_ns, 1_800_000_000_123_456_791);
        assert_eq!(packets[2].data, frames[2]);
        assert_eq!(packets[0].comment, "packet 0");
        assert_eq!(packets[0].original_len, 1514);
        // Truncated or damaged files are errors, not panics.
        for cut in 0..file.len() {
            let _ = read(&file[..cut]);
        }
        assert!(read(&file[..file.len() - 2]).is_err());
        assert_eq!(read(b"nope").unwrap_err().at, 0);
    }
}
