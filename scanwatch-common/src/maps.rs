//! Key and value layouts of the BPF maps, shared by kernel and agent.
//!
//! All types are `#[repr(C)]`, contain no implicit padding (explicit `_pad`
//! or reserved fields instead) and are plain old data, so the agent can read
//! them with `aya::Pod`. Each one's size, alignment and lack of padding are
//! checked at compile time (`assert_layout!`), for the host and bpf alike.

use crate::{
    classify::{PROBE_KINDS, ProbeKind},
    layout::assert_layout,
    sketch::{HOST_BITS, HOST_SET, ICMP_BITS, PORT_BITS, PORT_SET, UDP_BITS},
};

/// Name of the source table (`Array<SourceStats>`, mmap-able; the key is in the slot).
pub const SOURCES_MAP: &str = "SOURCES";
/// Name of the per-interface per-CPU counters (array indexed by slot -> `IfaceCounters`).
pub const IFACE_COUNTERS_MAP: &str = "IFACE_COUNTERS";
/// Name of the ifindex -> counters slot table (array indexed by ifindex % `IFINDEX_SLOTS`).
/// Slot 0 collects packets of interfaces the agent did not assign (tests).
pub const IFACE_SLOTS_MAP: &str = "IFACE_SLOTS";
/// Entries of the slot table.
pub const IFINDEX_SLOTS: u32 = 4096;
/// Name of the kernel's own copy of the slot table: a global of
/// `IFINDEX_SLOTS` bytes (slot by ifindex % `IFINDEX_SLOTS`) in a data
/// section of its own, a one-entry array map the agent writes whole.
/// Read in place by every packet (no map lookup); `IFACE_SLOTS` stays for
/// readers (`scanwatch top`).
pub const IFACE_SLOT_BYTES_MAP: &str = ".data.iface_slots";
/// Name of the ifindex -> interface name map written by the agent (`u32` -> `IfaceName`).
pub const IFACE_NAMES_MAP: &str = "IFACE_NAMES";
/// The prefix lengths sources are counted by (IPv4, IPv6), written by the
/// agent for readers (`scanwatch top`); unused in the kernel.
pub const SOURCE_PREFIXES_MAP: &str = "SOURCE_PREFIXES";
/// Name of the ring buffer of threshold crossings (`ScanEvent`).
pub const EVENTS_MAP: &str = "EVENTS";
/// Size of the events ring buffer in bytes.
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// Name of the load-time detection settings (`DetectConfig`) global.
pub const DETECT_CONFIG_GLOBAL: &str = "DETECT_CONFIG";
/// Name of the blocklist (LPM trie: `LpmKey` -> `BlockValue`), pinned and kept across restarts.
pub const BLOCKS_MAP: &str = "BLOCKS";
/// Name of the threat-intel feed entries (LPM trie: `LpmKey` -> `FeedValue`).
pub const FEEDS_MAP: &str = "FEEDS";
/// Blocked single addresses: an exact-match copy of the host entries of
/// [`BLOCKS_MAP`], so the drop path pays a hash lookup, not a trie walk.
/// Not pinned: the agent refills it from the blocklist at start.
pub const BLOCKED_HOSTS_MAP: &str = "BLOCKED_HOSTS";
/// Name of the never-block networks (LPM trie: `LpmKey` -> `u32`).
pub const NEVER_BLOCK_MAP: &str = "NEVER_BLOCK";
/// Name of the one-entry array telling the kernel which lookups it can
/// skip (`MitigationState`): the data section the kernel's global of that
/// state lives in.
pub const MITIGATION_MAP: &str = ".data.mitigation";
/// Name of the prefilter bitmap (array of `u64` words, see [`crate::prefilter`]):
/// sources it rules out skip the blocklist and feed lookups.
pub const PREFILTER_MAP: &str = "PREFILTER";
/// Name of the IPv4 prefilter (an mmapable array of one value of
/// `prefilter::V4_WORDS` words: a bit per /24).
pub const PREFILTER_V4_MAP: &str = "PREFILTER_V4";
/// Words of the prefilter at the default capacities.
pub const DEFAULT_PREFILTER_WORDS: u32 =
    crate::prefilter::words_for(DEFAULT_BLOCKLIST_CAPACITY, DEFAULT_FEED_CAPACITY);
/// Name of the feed id -> name map written by the agent (`u32` -> `Name32`).
pub const FEED_NAMES_MAP: &str = "FEED_NAMES";
/// Default blocklist capacity.
pub const DEFAULT_BLOCKLIST_CAPACITY: u32 = 65_536;
/// Default capacity of the feed trie.
pub const DEFAULT_FEED_CAPACITY: u32 = 262_144;
/// Capacity of the never-block trie.
pub const NEVER_BLOCK_CAPACITY: u32 = 4_096;
/// Most feeds.
pub const MAX_FEEDS: u32 = 64;
/// Name of the XDP program in the object file.
pub const XDP_PROGRAM: &str = "scanwatch";

/// Default number of tracked sources.
pub const DEFAULT_SOURCE_MAP_SIZE: u32 = 262_144;
/// Smallest accepted `--map-size`.
pub const MIN_SOURCE_MAP_SIZE: u32 = 1_024;
/// Largest accepted `--map-size` (16 Mi sources, about 4.5 GiB of kernel memory).
pub const MAX_SOURCE_MAP_SIZE: u32 = 16_777_216;
/// Capacity of the per-interface maps (interfaces one agent can watch).
pub const MAX_INTERFACES: u32 = 256;
// A slot is one byte of the kernel's slot table (`IFACE_SLOT_BYTES_MAP`).
const _: () = assert!(MAX_INTERFACES <= 256);
/// Longest IPv6 extension-header chain the parser walks before giving up.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// A source address. IPv4 sources are stored IPv4-mapped (`::ffff:a.b.c.d`),
/// so IPv4 and IPv6 share one key type and one map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// Address bytes in network order.
    pub addr: [u8; 16],
}

assert_layout!(SourceKey { addr }, size 16, align 1);

impl SourceKey {
    /// An IPv4 source, given as its four bytes in network order.
    #[inline(always)]
    pub const fn v4(a: [u8; 4]) -> Self {
        Self {
            addr: [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
            ],
        }
    }

    /// An IPv6 source.
    #[inline(always)]
    pub const fn v6(addr: [u8; 16]) -> Self {
        Self { addr }
    }

    /// The address as two native-endian words (how the source table stores
    /// and compares keys).
    #[inline(always)]
    pub const fn words(&self) -> [u64; 2] {
        let a = self.addr;
        [
            u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
            u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
        ]
    }

    /// The key of [`Self::words`].
    #[inline(always)]
    pub const fn from_words(w: [u64; 2]) -> Self {
        let (h, l) = (w[0].to_ne_bytes(), w[1].to_ne_bytes());
        Self {
            addr: [
                h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5],
                l[6], l[7],
            ],
        }
    }
}

#[cfg(not(target_arch = "bpf"))]
impl SourceKey {
    /// The address as a std `IpAddr` (IPv4-mapped keys become IPv4).
    pub fn ip(&self) -> std::net::IpAddr {
        let v6 = std::net::Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(v6),
        }
    }

    /// The key for a std address.
    pub fn from_ip(ip: std::net::IpAddr) -> Self {
        match ip {
            std::net::IpAddr::V4(v4) => Self::v4(v4.octets()),
            std::net::IpAddr::V6(v6) => Self::v6(v6.octets()),
        }
    }
}

/// Threshold crossings the kernel reports, as bits of
/// [`SourceStats::reported`] and [`ScanEvent::triggers`].
pub mod trigger {
    /// Distinct destination ports (TCP and UDP) reached the `port_scan` threshold.
    pub const PORTS: u32 = 1 << 0;
    /// Distinct UDP destination ports reached the `udp_scan` threshold.
    pub const UDP_PORTS: u32 = 1 << 1;
    /// Distinct destination hosts reached the `host_sweep` threshold.
    pub const HOSTS: u32 = 1 << 2;
    /// Distinct hosts sent ICMP probes reached the `ping_sweep` threshold.
    pub const ICMP_HOSTS: u32 = 1 << 3;
    /// Stealth probes in the window reached the `stealth_scan` threshold.
    pub const STEALTH: u32 = 1 << 4;
    /// SYNs within one rate bucket (2^30 ns, about 1.07 s) reached the `syn_flood_source` threshold.
    pub const SYN_RATE: u32 = 1 << 5;
    pub const ALL: u32 = PORTS | UDP_PORTS | HOSTS | ICMP_HOSTS | STEALTH | SYN_RATE;
    /// The source's reply-aware sequential test (TRW, [`crate::trw`])
    /// crossed its upper boundary. In [`super::ScanEvent::triggers`] (sent
    /// by the TC egress program or the agent's no-answer sweep), never in
    /// [`super::SourceStats::reported`]; in [`super::SourceStats::crossed`]
    /// it is [`super::SourceStats::REPLY_DECIDED`].
    pub const REPLY_SCAN: u32 = 1 << 6;
}

/// What the kernel keeps per tracked source (an address, or a prefix):
/// one slot of the `SOURCES` table, 256 bytes with its key. A source gets a
/// slot once it has sent [`DetectConfig::admit_after`] probes in a window
/// (before that, its probes wait in the `ADMISSION` table; see
/// [`crate::tracking`]). The window's counts, exact sets and bitmaps are
/// reset when a new window starts. See [`crate::sketch`] for the sets and
/// bitmaps. Fields shared between CPUs are updated atomically: 32-bit adds,
/// 64-bit compare-and-swap and fetch-or (the generic BPF cpu has no 32-bit
/// fetch operations).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceStats {
    /// The source's key ([`SourceKey::addr`]) as two native-endian words.
    pub key: [u64; 2],
    /// Kernel-clock nanoseconds of the first probe seen; 0 marks a free
    /// slot (a slot is claimed by compare-and-swap of this word).
    pub first_seen_ns: u64,
    /// Kernel-clock nanoseconds of the latest probe.
    pub last_seen_ns: u64,
    /// Start of the current detection window (kernel-clock ns).
    pub window_start_ns: u64,
    /// One word of per-window bookkeeping, from the lowest byte: the
    /// trigger bits already reported (one ring-buffer event per bit per
    /// window) and [`Self::REPLY_DECIDED`]; the scanner-tool signatures some probe matched and those
    /// some probe missed (two bytes, [`crate::fingerprint`]); the evidence
    /// packets sent ([`crate::evidence`]); the window's SYN count
    /// (`probes`) before the current rate bucket's first SYN (high 32
    /// bits: the bucket's SYNs are the count less this).
    pub crossed: u64,
    /// Interface index the latest probe arrived on.
    pub last_ifindex: u32,
    /// Rate bucket (kernel-clock ns >> 30, low 16 bits) of the SYN count in `crossed`.
    pub rate_bucket: u16,
    /// Id of a `tag` feed listing this source (0: none), looked up when the
    /// source is admitted and at each new window.
    pub known_bad: u16,
    /// Entries in the exact sets: ports, of which UDP, hosts, of which ICMP
    /// (one byte each, low to high; see [`lens`]).
    pub lens: u32,
    /// Bits set in the port, UDP, host and ICMP bitmaps (one byte each).
    pub bits: u32,
    /// Probes in this window, by kind ([`ProbeKind::index`]).
    pub probes: [u32; PROBE_KINDS],
    /// The exact port and host sets, interleaved word by word: port word
    /// `i` (two `u32` entries, low half first) at [`port_word`], host word
    /// `j` (four `u16` entries, lowest first) at [`host_word`]. The first
    /// word of each then shares the 128-byte-aligned pair of cache lines
    /// that holds the key, times, counts and `probes`: a probe repeating a
    /// source's first port and host touches that pair only.
    pub sets: [u64; SET_WORDS],
    pub port_bits: [u64; PORT_BITS as usize / 64],
    pub udp_bits: [u64; UDP_BITS as usize / 64],
    pub host_bits: [u64; HOST_BITS as usize / 64],
    pub icmp_bits: [u64; ICMP_BITS as usize / 64],
}

assert_layout!(
    SourceStats {
        key,
        first_seen_ns,
        last_seen_ns,
        window_start_ns,
        crossed,
        last_ifindex,
        rate_bucket,
        known_bad,
        lens,
        bits,
        probes,
        sets,
        port_bits,
        udp_bits,
        host_bits,
        icmp_bits,
    },
    size 256,
    align 8
);

const _: () = assert!(
    SourceStats::REPLY_DECIDED & trigger::ALL as u64 == 0 && SourceStats::REPLY_DECIDED < 0x100,
    "REPLY_DECIDED lies in crossed's lowest byte, beside the reported bits"
);

/// Words of the port set (two entries each).
pub const PORT_WORDS: usize = PORT_SET / 2;
/// Words of the host set (four entries each).
pub const HOST_WORDS: usize = HOST_SET / 4;
/// Words of [`SourceStats::sets`].
pub const SET_WORDS: usize = PORT_WORDS + HOST_WORDS;
/// Word distance between consecutive words of one set in [`SourceStats::sets`].
pub const SET_STRIDE: usize = 2;

/// Index in [`SourceStats::sets`] of word `i` of the port set.
#[inline(always)]
pub const fn port_word(i: usize) -> usize {
    SET_STRIDE * i
}

/// Index in [`SourceStats::sets`] of word `j` of the host set.
#[inline(always)]
pub const fn host_word(j: usize) -> usize {
    SET_STRIDE * j + 1
}

const _: () =
    assert!(port_word(PORT_WORDS - 1) < SET_WORDS && host_word(HOST_WORDS - 1) < SET_WORDS);
const _: () = assert!(PORT_WORDS == HOST_WORDS + 1);

/// The byte lanes of [`SourceStats::lens`] and [`SourceStats::bits`].
pub mod lens {
    /// Ports (lens: exact-set entries; bits: port bitmap).
    pub const PORTS: u32 = 0;
    /// UDP ports.
    pub const UDP: u32 = 8;
    /// Hosts.
    pub const HOSTS: u32 = 16;
    /// Hosts sent ICMP probes.
    pub const ICMP: u32 = 24;

    /// The value of `lane` in `word`.
    #[inline(always)]
    pub const fn get(word: u32, lane: u32) -> u32 {
        (word >> lane) & 0xff
    }
}

impl SourceStats {
    /// A free slot: all zero.
    pub const ZERO: Self = Self {
        key: [0; 2],
        first_seen_ns: 0,
        last_seen_ns: 0,
        window_start_ns: 0,
        crossed: 0,
        last_ifindex: 0,
        rate_bucket: 0,
        known_bad: 0,
        lens: 0,
        bits: 0,
        probes: [0; PROBE_KINDS],
        sets: [0; SET_WORDS],
        port_bits: [0; PORT_BITS as usize / 64],
        udp_bits: [0; UDP_BITS as usize / 64],
        host_bits: [0; HOST_BITS as usize / 64],
        icmp_bits: [0; ICMP_BITS as usize / 64],
    };

    /// Bit of [`Self::crossed`]: the source's reply-aware test decided in
    /// this window that it scans (set by the TC egress program when the
    /// walk crosses its upper boundary, or by the agent's no-answer sweep
    /// at a crossing of its own; cleared with the window). For the
    /// rest of the window XDP records none of its first contacts and the
    /// egress program reads none of its answers
    /// ([`crate::trw::ReplyCounter::AfterVerdict`]): a 65,535-port scan
    /// costs the contact table a few slots, not all of them.
    pub const REPLY_DECIDED: u64 = trigger::REPLY_SCAN as u64;

    /// Size in 8-byte words (the kernel clears a slot word by word).
    pub const WORDS: usize = core::mem::size_of::<Self>() / 8;
    /// Word index of `window_start_ns`: a new window clears the words from
    /// `crossed` on (the counts, sets and bitmaps), keeping key and times.
    pub const WINDOW_WORDS_FROM: usize = 5;

    /// A fresh entry for `key` whose first probe arrives at `now_ns`, on
    /// `ifindex` (the caller then records the probe itself).
    #[inline(always)]
    pub const fn new(key: &SourceKey, now_ns: u64, ifindex: u32) -> Self {
        Self {
            key: key.words(),
            first_seen_ns: now_ns,
            last_seen_ns: now_ns,
            window_start_ns: now_ns,
            last_ifindex: ifindex,
            ..Self::ZERO
        }
    }

    /// The source's key.
    pub const fn source(&self) -> SourceKey {
        SourceKey::from_words(self.key)
    }

    /// Whether the slot holds a source.
    pub const fn is_used(&self) -> bool {
        self.first_seen_ns != 0
    }

    /// Probes in the window, all kinds.
    pub fn total_probes(&self) -> u64 {
        self.probes.iter().map(|p| u64::from(*p)).sum()
    }

    /// Probes of one kind in the window.
    pub const fn probes_of(&self, kind: ProbeKind) -> u64 {
        self.probes[kind as usize] as u64
    }

    /// Trigger bits reported in this window.
    pub const fn reported(&self) -> u32 {
        self.crossed as u32 & trigger::ALL
    }

    /// Whether the reply-aware test decided in this window that the
    /// source scans ([`Self::REPLY_DECIDED`]).
    pub const fn reply_decided(&self) -> bool {
        self.crossed & Self::REPLY_DECIDED != 0
    }

    /// The words of the port set, in order.
    pub fn port_words(&self) -> impl Iterator<Item = u64> + '_ {
        (0..PORT_WORDS).map(|i| self.sets[port_word(i)])
    }

    /// The words of the host set, in order.
    pub fn host_words(&self) -> impl Iterator<Item = u64> + '_ {
        (0..HOST_WORDS).map(|j| self.sets[host_word(j)])
    }

    /// The port set's entries (empty slots skipped).
    pub fn ports_in_set(&self) -> impl Iterator<Item = u32> + '_ {
        Self::entries32(self.port_words())
    }

    /// The host set's entries (empty slots skipped).
    pub fn hosts_in_set(&self) -> impl Iterator<Item = u16> + '_ {
        Self::entries16(self.host_words())
    }

    /// The entries of an exact set stored two `u32` per word (empty slots are 0).
    fn entries32(words: impl IntoIterator<Item = u64>) -> impl Iterator<Item = u32> {
        words
            .into_iter()
            .flat_map(|w| [w as u32, (w >> 32) as u32])
            .filter(|e| *e != 0)
    }

    /// The entries of an exact set stored four `u16` per word (empty slots are 0).
    fn entries16(words: impl IntoIterator<Item = u64>) -> impl Iterator<Item = u16> {
        words
            .into_iter()
            .flat_map(|w| {
                [
                    w as u16,
                    (w >> 16) as u16,
                    (w >> 32) as u16,
                    (w >> 48) as u16,
                ]
            })
            .filter(|e| *e != 0)
    }
}

/// Load-time detection settings, read by the kernel (a global the agent
/// sets before loading). A threshold the kernel cannot reach is `u32::MAX`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectConfig {
    /// Length of the tumbling per-source window.
    pub window_ns: u64,
    /// `port_scan`: crossing when the exact set holds this many ports, or
    /// (for thresholds above the set's size) when this many bitmap bits are set.
    pub ports_exact: u32,
    pub ports_bits: u32,
    pub udp_exact: u32,
    pub udp_bits: u32,
    pub hosts_exact: u32,
    pub hosts_bits: u32,
    pub icmp_exact: u32,
    pub icmp_bits: u32,
    /// Stealth probes in the window.
    pub stealth: u32,
    /// SYNs in one rate bucket.
    pub syn_rate: u32,
    /// Sources by prefix: the mask of an IPv4 source's four address bytes
    /// (`[detection] ipv4_prefix`), ...
    pub v4_mask: [u8; 4],
    /// Probes in a window before a source is admitted to the source table
    /// (1 to [`crate::tracking::MAX_ADMIT_AFTER`]; below every threshold).
    pub admit_after: u32,
    /// ...and of an IPv6 source's sixteen (`ipv6_prefix`).
    pub v6_mask: [u8; 16],
    /// Slots of the source table (its size, set at load time).
    pub source_slots: u32,
    /// Evidence packets a source and window at most (0: none; see
    /// [`crate::evidence`]).
    pub evidence_packets: u32,
    /// Test TCP probes against the scanner-tool signatures
    /// ([`crate::fingerprint`]); 0 only to measure what the test costs.
    pub tool_signatures: u32,
    /// Slots of the admission table (a power of two, its size, set at load
    /// time: `[detection] admission_slots`).
    pub admission_slots: u32,
}

assert_layout!(
    DetectConfig {
        window_ns,
        ports_exact,
        ports_bits,
        udp_exact,
        udp_bits,
        hosts_exact,
        hosts_bits,
        icmp_exact,
        icmp_bits,
        stealth,
        syn_rate,
        v4_mask,
        admit_after,
        v6_mask,
        source_slots,
        evidence_packets,
        tool_signatures,
        admission_slots,
    },
    size 88,
    align 8
);

impl DetectConfig {
    /// Never crosses anything (used until the agent sets real values).
    pub const DISABLED: Self = Self {
        window_ns: 300_000_000_000,
        ports_exact: u32::MAX,
        ports_bits: u32::MAX,
        udp_exact: u32::MAX,
        udp_bits: u32::MAX,
        hosts_exact: u32::MAX,
        hosts_bits: u32::MAX,
        icmp_exact: u32::MAX,
        icmp_bits: u32::MAX,
        stealth: u32::MAX,
        syn_rate: u32::MAX,
        v4_mask: [0xff; 4],
        admit_after: 1,
        v6_mask: [0xff; 16],
        source_slots: DEFAULT_SOURCE_MAP_SIZE,
        evidence_packets: 0,
        tool_signatures: 1,
        admission_slots: crate::tracking::DEFAULT_ADMISSION_SLOTS,
    };

    /// The key a source is counted under: its address masked to its
    /// prefix (IPv4-mapped for IPv4; `v6` tells the family).
    #[inline(always)]
    pub fn source_key(&self, addr: [u8; 16], v6: bool) -> SourceKey {
        masked_key(addr, v6, self.v4_mask, self.v6_mask)
    }
}

/// [`DetectConfig::source_key`] with the masks given.
#[inline(always)]
pub fn masked_key(addr: [u8; 16], v6: bool, v4_mask: [u8; 4], v6_mask: [u8; 16]) -> SourceKey {
    if v6 {
        let (hi, lo) = halves(addr);
        let (mhi, mlo) = halves(v6_mask);
        SourceKey::from_words([hi & mhi, lo & mlo])
    } else {
        let v4 = u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]])
            & u32::from_ne_bytes(v4_mask);
        SourceKey::v4(v4.to_ne_bytes())
    }
}

/// The words ([`SourceKey::words`]) of the key an IPv4 source (its four
/// address bytes `a`) is counted under: [`masked_key`] computed in
/// registers, for the kernel's first-SYN path, which never builds the
/// key's bytes (`scanwatch-ebpf/src/fast.rs`).
#[inline(always)]
pub const fn v4_key_words(a: [u8; 4], v4_mask: [u8; 4]) -> [u64; 2] {
    let b = (u32::from_ne_bytes(a) & u32::from_ne_bytes(v4_mask)).to_ne_bytes();
    [
        0,
        u64::from_ne_bytes([0, 0, 0xff, 0xff, b[0], b[1], b[2], b[3]]),
    ]
}

/// [`v4_key_words`] for an IPv6 source: its address and the mask as
/// native-endian words ([`SourceKey::words`] of each).
#[inline(always)]
pub const fn v6_key_words(addr: [u64; 2], v6_mask: [u64; 2]) -> [u64; 2] {
    [addr[0] & v6_mask[0], addr[1] & v6_mask[1]]
}

// The kernel reads `v6_mask` as two words in place.
const _: () = assert!(core::mem::offset_of!(DetectConfig, v6_mask) % 8 == 0);

/// The two native-endian halves of 16 address bytes (for masking with
/// 64-bit operations).
#[inline(always)]
const fn halves(a: [u8; 16]) -> (u64, u64) {
    (
        u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    )
}

/// LPM trie key data: an address (IPv4-mapped for IPv4, like [`SourceKey`]).
/// The prefix length counts from the start of the 16 bytes, so an IPv4 /24
/// is prefix 96 + 24.
pub type LpmData = [u8; 16];

/// Where a block came from.
pub mod block_origin {
    pub const DETECTION: u32 = 1;
    pub const MANUAL: u32 = 2;
    /// A CrowdSec decision applied by the agent's bouncer (`[crowdsec]`).
    pub const CROWDSEC: u32 = 3;
}

/// A blocklist entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockValue {
    /// Kernel-clock ns when the block ends (0: never); the kernel
    /// ignores expired entries by itself.
    pub expires_ns: u64,
    /// Kernel-clock ns when it was made.
    pub created_ns: u64,
    /// [`block_origin`].
    pub origin: u32,
    /// How many times this source has been blocked (repeat offenders get longer blocks).
    pub offenses: u32,
    /// Why, NUL-padded UTF-8.
    pub reason: [u8; 48],
}

assert_layout!(
    BlockValue {
        expires_ns,
        created_ns,
        origin,
        offenses,
        reason,
    },
    size 72,
    align 8
);

/// What a feed does with a matching source.
pub mod feed_action {
    pub const TAG: u32 = 1;
    pub const DROP: u32 = 2;
}

/// A feed entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedValue {
    /// 1-based feed id (see `FEED_NAMES`).
    pub feed_id: u32,
    /// [`feed_action`].
    pub action: u32,
}

assert_layout!(FeedValue { feed_id, action }, size 8, align 4);

/// Which mitigation lookups the kernel must do (all zero: none).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MitigationState {
    /// Entries in `BLOCKS` that are networks (not single addresses): the
    /// trie is walked only when there are some.
    pub net_blocks: u32,
    /// Entries of `drop` feeds in `FEEDS`.
    pub drop_feeds: u32,
    /// Entries of `tag` feeds in `FEEDS`.
    pub tag_feeds: u32,
    /// Entries in `BLOCKED_HOSTS`.
    pub host_blocks: u32,
    /// Which prefilter levels hold keys ([`crate::prefilter`]; without
    /// [`crate::prefilter::ENABLED`], no prefilter: every lookup is made).
    pub prefilter_levels: u32,
    /// Words of the prefilter bitmap minus one (a power of two minus one).
    pub prefilter_mask: u32,
}

impl MitigationState {
    /// Anything blocked or fed to drop: a packet's source must then be
    /// tested (the prefilter, then the lookups) before it is passed.
    #[inline(always)]
    pub const fn drops(&self) -> bool {
        (self.host_blocks | self.net_blocks | self.drop_feeds) != 0
    }
}

assert_layout!(
    MitigationState {
        net_blocks,
        drop_feeds,
        tag_feeds,
        host_blocks,
        prefilter_levels,
        prefilter_mask,
    },
    size 24,
    align 4
);

/// A 32-byte NUL-padded name.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Name32 {
    pub name: [u8; 32],
}

assert_layout!(Name32 { name }, size 32, align 1);

#[cfg(not(target_arch = "bpf"))]
impl Name32 {
    /// Truncates to 32 bytes (at a character boundary).
    pub fn new(s: &str) -> Self {
        let mut name = [0u8; 32];
        let mut end = s.len().min(32);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        name[..end].copy_from_slice(&s.as_bytes()[..end]);
        Self { name }
    }

    pub fn as_string(&self) -> String {
        nul_padded(&self.name)
    }
}

/// A NUL-padded byte string as text.
#[cfg(not(target_arch = "bpf"))]
pub fn nul_padded(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A threshold crossing, sent through the `EVENTS` ring buffer at most once
/// per source, trigger and window.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanEvent {
    pub source: SourceKey,
    pub time_ns: u64,
    pub window_start_ns: u64,
    pub ifindex: u32,
    /// The trigger bits that crossed with this probe.
    pub triggers: u32,
}

assert_layout!(
    ScanEvent {
        source,
        time_ns,
        window_start_ns,
        ifindex,
        triggers,
    },
    size 40,
    align 8
);

/// Per-interface counters. Every packet increments `Packets` and exactly one
/// of the outcome counters (the six probe kinds, `NotProbe`, `NotIp`,
/// `Truncated`, `Malformed`, `Ipv6ExtChainTooLong`), so the outcomes sum to
/// `Packets`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    ProbeSyn = 0,
    ProbeStealth = 1,
    ProbeUdp = 2,
    ProbeIcmpEcho = 3,
    ProbeIcmpOtherProbe = 4,
    ProbeFragment = 5,
    /// Parsed IP packet that is not a probe (established flows, replies, ND, other protocols).
    NotProbe = 6,
    /// Not IPv4/IPv6 (ARP, LLDP, ...), or more than two VLAN tags.
    NotIp = 7,
    /// The frame ends before a header it needs, or before the length its IP header claims.
    Truncated = 8,
    /// A header field is impossible (IP version, IHL, TCP data offset, lengths).
    Malformed = 9,
    /// IPv6 extension-header chain longer than [`MAX_IPV6_EXT_HEADERS`].
    Ipv6ExtChainTooLong = 10,
    /// All packets.
    Packets = 11,
    /// Sources admitted into the source table (they sent `admit_after` probes in a window).
    SourcesCreated = 12,
    /// Probes not recorded because their source's slot changed hands while
    /// they were being recorded (should stay near zero).
    SourceUpdateErrors = 13,
    /// Threshold crossings lost because the ring buffer was full.
    EventsDropped = 14,
    /// Threshold crossings sent to the agent.
    EventsSent = 15,
    /// Packets dropped because their source is blocked.
    DroppedBlocklist = 16,
    /// Packets dropped because their source is in a `drop` feed.
    DroppedFeed = 17,
    /// Packets passed only because their source is in `never_block`.
    NeverBlockSpared = 18,
    /// Tracked sources whose slot went to a newly admitted source.
    SourcesEvicted = 19,
    /// Sources on their way to admission (fewer than `admit_after` probes
    /// in the window) whose waiting probes were overwritten by another
    /// source hashing to the same admission slot.
    AdmissionOverwritten = 20,
    /// Evidence packets handed to the agent.
    EvidenceSent = 21,
    /// Evidence packets lost because the evidence ring was full.
    EvidenceDropped = 22,
}

/// Number of counter slots (room left for later counters).
pub const COUNTER_SLOTS: usize = 24;

impl Counter {
    /// Every counter, in slot order.
    pub const ALL: [Self; 23] = [
        Self::ProbeSyn,
        Self::ProbeStealth,
        Self::ProbeUdp,
        Self::ProbeIcmpEcho,
        Self::ProbeIcmpOtherProbe,
        Self::ProbeFragment,
        Self::NotProbe,
        Self::NotIp,
        Self::Truncated,
        Self::Malformed,
        Self::Ipv6ExtChainTooLong,
        Self::Packets,
        Self::SourcesCreated,
        Self::SourceUpdateErrors,
        Self::EventsDropped,
        Self::EventsSent,
        Self::DroppedBlocklist,
        Self::DroppedFeed,
        Self::NeverBlockSpared,
        Self::SourcesEvicted,
        Self::AdmissionOverwritten,
        Self::EvidenceSent,
        Self::EvidenceDropped,
    ];

    /// The counter slot of a probe kind.
    #[inline(always)]
    pub const fn probe(kind: ProbeKind) -> Self {
        match kind {
            ProbeKind::Syn => Self::ProbeSyn,
            ProbeKind::Stealth => Self::ProbeStealth,
            ProbeKind::Udp => Self::ProbeUdp,
            ProbeKind::IcmpEcho => Self::ProbeIcmpEcho,
            ProbeKind::IcmpOtherProbe => Self::ProbeIcmpOtherProbe,
            ProbeKind::Fragment => Self::ProbeFragment,
        }
    }

    /// Stable snake_case name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ProbeSyn => "syn",
            Self::ProbeStealth => "stealth",
            Self::ProbeUdp => "udp",
            Self::ProbeIcmpEcho => "icmp_echo",
            Self::ProbeIcmpOtherProbe => "icmp_other_probe",
            Self::ProbeFragment => "fragment",
            Self::NotProbe => "not_probe",
            Self::NotIp => "not_ip",
            Self::Truncated => "truncated",
            Self::Malformed => "malformed",
            Self::Ipv6ExtChainTooLong => "ipv6_ext_chain_too_long",
            Self::Packets => "packets",
            Self::SourcesCreated => "sources_created",
            Self::SourceUpdateErrors => "source_update_errors",
            Self::EventsDropped => "events_dropped",
            Self::EventsSent => "events_sent",
            Self::DroppedBlocklist => "dropped_blocklist",
            Self::DroppedFeed => "dropped_feed",
            Self::NeverBlockSpared => "never_block_spared",
            Self::SourcesEvicted => "sources_evicted",
            Self::AdmissionOverwritten => "admission_overwritten",
            Self::EvidenceSent => "evidence_sent",
            Self::EvidenceDropped => "evidence_dropped",
        }
    }
}

/// Per-interface counters, one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceCounters {
    pub counters: [u64; COUNTER_SLOTS],
}

assert_layout!(IfaceCounters { counters }, size 192, align 8);

impl IfaceCounters {
    pub const ZERO: Self = Self {
        counters: [0; COUNTER_SLOTS],
    };

    /// Value of one counter.
    pub const fn get(&self, c: Counter) -> u64 {
        self.counters[c as usize]
    }

    /// Adds another copy (used to sum the per-CPU values).
    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.counters.iter_mut().zip(other.counters.iter()) {
            *a = a.wrapping_add(*b);
        }
    }
}

/// An interface name, NUL-padded (IFNAMSIZ).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceName {
    pub name: [u8; 16],
}

assert_layout!(IfaceName { name }, size 16, align 1);

#[cfg(not(target_arch = "bpf"))]
impl IfaceName {
    /// Builds a name; `None` when it does not fit IFNAMSIZ (15 bytes + NUL).
    pub fn new(name: &str) -> Option<Self> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() > 15 {
            return None;
        }
        let mut out = [0u8; 16];
        out[..bytes.len()].copy_from_slice(bytes);
        Some(Self { name: out })
    }

    /// The name as a string (lossy on invalid UTF-8).
    pub fn as_string(&self) -> String {
        let end = self.name.iter().position(|b| *b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are repr(C), Copy, without padding, valid for any bit pattern.
    unsafe impl aya::Pod for super::SourceKey {}
    unsafe impl aya::Pod for super::DetectConfig {}
    unsafe impl aya::Pod for super::BlockValue {}
    unsafe impl aya::Pod for super::FeedValue {}
    unsafe impl aya::Pod for super::MitigationState {}
    unsafe impl aya::Pod for super::Name32 {}
    unsafe impl aya::Pod for super::ScanEvent {}
    unsafe impl aya::Pod for super::SourceStats {}
    unsafe impl aya::Pod for super::IfaceCounters {}
    unsafe impl aya::Pod for super::IfaceName {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_keys_are_masked_to_the_prefix() {
        let cfg = DetectConfig {
            v4_mask: [255, 255, 255, 0],
            v6_mask: [
                255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
            ..DetectConfig::DISABLED
        };
        let v4 = SourceKey::v4([198, 18, 0, 9]);
        assert_eq!(
            cfg.source_key(v4.addr, false),
            SourceKey::v4([198, 18, 0, 0])
        );
        let v6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 1, 0, 2, 0xaa, 0, 0, 0, 0, 0, 0, 9];
        let mut net = v6;
        net[8..].fill(0);
        assert_eq!(cfg.source_key(v6, true), SourceKey { addr: net });
        let hosts = DetectConfig::DISABLED;
        assert_eq!(hosts.source_key(v6, true), SourceKey { addr: v6 });
        assert_eq!(hosts.source_key(v4.addr, false), v4);
    }

    #[test]
    fn key_words_in_registers_match_the_masked_key() {
        let v4_masks = [
            [255, 255, 255, 255],
            [255, 255, 255, 0],
            [255, 0, 0, 0],
            [0; 4],
        ];
        for (a, m) in [[198, 18, 0, 9], [1, 2, 3, 4], [255, 255, 255, 255]]
            .into_iter()
            .zip(v4_masks)
        {
            let key = masked_key(SourceKey::v4(a).addr, false, m, [0xff; 16]);
            assert_eq!(v4_key_words(a, m), key.words(), "{a:?}/{m:?}");
        }
        let addr: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 1, 0, 2, 0xaa, 0, 0, 0, 0, 0, 0, 9];
        for bits in [128u32, 64, 48, 1, 0] {
            let mut mask = [0u8; 16];
            for (i, byte) in mask.iter_mut().enumerate() {
                // The bits of this byte inside the prefix, from the top.
                let n = bits.saturating_sub(8 * i as u32).min(8);
                *byte = (0xff00u16 >> n) as u8;
            }
            let key = masked_key(addr, true, [0xff; 4], mask);
            assert_eq!(
                v6_key_words(SourceKey { addr }.words(), SourceKey { addr: mask }.words()),
                key.words(),
                "/{bits}"
            );
        }
    }

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(core::mem::size_of::<SourceKey>(), 16);
        assert_eq!(core::mem::size_of::<SourceStats>(), 256);
        assert_eq!(SourceStats::WORDS, 32);
        // A repeat's words (key to `probes`, the first word of each set)
        // lie in the first 128 bytes.
        assert!(core::mem::offset_of!(SourceStats, sets) + 8 * (host_word(0) + 1) <= 128);
        // The words a new window clears start at `crossed`.
        assert_eq!(
            core::mem::offset_of!(SourceStats, crossed),
            8 * SourceStats::WINDOW_WORDS_FROM
        );
        assert_eq!(core::mem::size_of::<DetectConfig>(), 88);
        assert_eq!(core::mem::size_of::<ScanEvent>(), 40);
        assert_eq!(core::mem::size_of::<BlockValue>(), 72);
        assert_eq!(core::mem::size_of::<FeedValue>(), 8);
        assert_eq!(core::mem::size_of::<MitigationState>(), 24);
        assert_eq!(Name32::new("a-feed-name").as_string(), "a-feed-name");
        assert_eq!(Name32::new(&"x".repeat(40)).as_string().len(), 32);
        assert_eq!(core::mem::size_of::<IfaceCounters>(), 8 * COUNTER_SLOTS);
        assert_eq!(core::mem::size_of::<IfaceName>(), 16);
    }

    #[test]
    fn counters_cover_probe_kinds_in_order() {
        for kind in ProbeKind::ALL {
            assert_eq!(Counter::probe(kind) as usize, kind.index());
            assert_eq!(Counter::probe(kind).name(), kind.name());
        }
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert!((*c as usize) < COUNTER_SLOTS);
        }
    }

    #[test]
    fn ipv4_keys_are_mapped() {
        let k = SourceKey::v4([198, 18, 0, 1]);
        assert_eq!(k.ip().to_string(), "198.18.0.1");
        let k6 = SourceKey::from_ip("fd00::1".parse().unwrap());
        assert_eq!(k6.ip().to_string(), "fd00::1");
        assert_eq!(SourceKey::from_ip(k.ip()), k);
    }

    #[test]
    fn new_entry() {
        let key = SourceKey::v4([198, 18, 0, 9]);
        let s = SourceStats::new(&key, 5, 3);
        assert_eq!(s.total_probes(), 0);
        assert_eq!(s.source(), key);
        assert_eq!(SourceKey::from_words(key.words()), key);
        assert!(s.is_used() && !SourceStats::ZERO.is_used());
        assert_eq!(
            (
                s.first_seen_ns,
                s.last_seen_ns,
                s.last_ifindex,
                s.window_start_ns
            ),
            (5, 5, 3, 5)
        );
    }

    #[test]
    fn iface_names() {
        assert_eq!(IfaceName::new("veth0").unwrap().as_string(), "veth0");
        assert!(IfaceName::new("").is_none());
        assert!(IfaceName::new("a-very-long-interface").is_none());
    }
}
