//! Typed access to the mitigation maps: the blocklist (an LPM trie plus an
//! exact-match map of its single addresses), the feed trie, the
//! never-block trie, the lookup-skipping state, the prefilter in front of
//! the blocklist and feed lookups, and the feed names. The policy (what to
//! block, for how long) is `output::mitigation`'s.
//!
//! The prefilter (`scanwatch_common::prefilter`) may only ever rule out a
//! source that no entry covers while the kernel reads it: a network's bits
//! are set before its entries are added ([`BlockMaps::insert_block`],
//! [`BlockMaps::insert_feed`]), and bits are cleared only by a rebuild
//! from the entries left after removals ([`BlockMaps::prefilter_rebuild`]).

use std::{
    os::fd::AsFd as _,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, Map, MapData, MapError,
        lpm_trie::{Key, LpmTrie},
    },
};
use ipnet::IpNet;
use scanwatch_common::{
    BlockValue, FeedValue, LpmData, MitigationState, Name32, SourceKey,
    maps::{
        BLOCKED_HOSTS_MAP, BLOCKS_MAP, FEED_NAMES_MAP, FEEDS_MAP, MITIGATION_MAP, NEVER_BLOCK_MAP,
        PREFILTER_MAP, PREFILTER_V4_MAP,
    },
    prefilter::{Bitmap, V4_WORDS},
};

use super::mapping::Mapping;
use crate::model::error_chain;

#[derive(Debug, thiserror::Error)]
pub enum BlockMapError {
    #[error("map {name}: {detail}")]
    Map { name: &'static str, detail: String },
    /// The map has no room (ENOSPC).
    #[error("map {0} is full")]
    Full(&'static str),
    /// No such entry.
    #[error("no such entry in {0}")]
    NotFound(&'static str),
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> BlockMapError {
    move |e| match e {
        MapError::KeyNotFound => BlockMapError::NotFound(name),
        MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOSPC) => {
            BlockMapError::Full(name)
        }
        MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT) => {
            BlockMapError::NotFound(name)
        }
        e => BlockMapError::Map {
            name,
            detail: error_chain(&e),
        },
    }
}

/// The LPM key of a network: IPv4 as IPv4-mapped, prefix counted over 128 bits.
pub fn lpm_key(net: &IpNet) -> Key<LpmData> {
    match net {
        IpNet::V4(v4) => {
            let o = v4.addr().octets();
            Key::new(
                96 + u32::from(v4.prefix_len()),
                [
                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, o[0], o[1], o[2], o[3],
                ],
            )
        }
        IpNet::V6(v6) => Key::new(u32::from(v6.prefix_len()), v6.addr().octets()),
    }
}

/// The network of an LPM key.
pub fn lpm_net(key: &Key<LpmData>) -> Option<IpNet> {
    let data = key.data();
    let prefix = key.prefix_len();
    let v6 = std::net::Ipv6Addr::from(data);
    match v6.to_ipv4_mapped() {
        Some(v4) if prefix >= 96 => IpNet::new(std::net::IpAddr::V4(v4), (prefix - 96) as u8).ok(),
        _ => IpNet::new(std::net::IpAddr::V6(v6), prefix as u8).ok(),
    }
}

/// The exact-map key of a single-address network (None for wider networks).
pub fn host_key(net: &IpNet) -> Option<SourceKey> {
    match net {
        IpNet::V4(v4) if v4.prefix_len() == 32 => Some(SourceKey::v4(v4.addr().octets())),
        IpNet::V6(v6) if v6.prefix_len() == 128 => Some(SourceKey::v6(v6.addr().octets())),
        _ => None,
    }
}

/// The mitigation maps of a loaded object.
pub struct BlockMaps {
    blocks: LpmTrie<MapData, LpmData, BlockValue>,
    /// The single-address entries of `blocks` again, for the kernel's exact lookup.
    hosts: HashMap<MapData, SourceKey, BlockValue>,
    feeds: LpmTrie<MapData, LpmData, FeedValue>,
    never: LpmTrie<MapData, LpmData, u32>,
    state: Array<MapData, MitigationState>,
    feed_names: HashMap<MapData, u32, Name32>,
    prefilter: Array<MapData, u64>,
    prefilter_v4: V4Words,
    /// What the kernel's prefilter holds, word for word (a word changes
    /// here only once the kernel's has).
    bitmap: Bitmap,
    /// The state last written (its prefilter fields are `bitmap`'s).
    state_written: MitigationState,
}

/// The kernel's IPv4 prefilter (one map value of `V4_WORDS` words, a bit
/// per /24), mapped shared into the agent: a word is written in place, not
/// by a 2 MiB map update.
struct V4Words {
    /// Every access is atomic.
    mapping: Mapping,
    /// Keeps the map alive beside the mapping.
    _map: MapData,
}

impl V4Words {
    fn map(map: Map) -> Result<Self, BlockMapError> {
        let fail = |detail: String| BlockMapError::Map {
            name: PREFILTER_V4_MAP,
            detail,
        };
        let Map::Array(data) = map else {
            return Err(fail("not an array".into()));
        };
        let info = data.info().map_err(map_err(PREFILTER_V4_MAP))?;
        let len = V4_WORDS * 8;
        if info.value_size() as usize != len
            || info.max_entries() != 1
            || info.map_flags() & scanwatch_common::contact_table::BPF_F_MMAPABLE == 0
        {
            return Err(fail(format!(
                "expected one mmapable {len}-byte value, found {} of {} bytes (flags {:#x})",
                info.max_entries(),
                info.value_size(),
                info.map_flags()
            )));
        }
        let mapping = Mapping::new(data.fd().as_fd(), len, true).map_err(fail)?;
        Ok(Self {
            mapping,
            _map: data,
        })
    }

    /// Writes word `index` (below `V4_WORDS`).
    fn store(&self, index: u32, word: u64) {
        let index = index as usize;
        assert!(index < V4_WORDS, "IPv4 prefilter word {index}");
        // SAFETY: inside the mapping (checked above), 8-byte aligned.
        unsafe { AtomicU64::from_ptr(self.mapping.base::<u64>().as_ptr().add(index)) }
            .store(word, Ordering::Release);
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, BlockMapError> {
    ebpf.take_map(name).ok_or(BlockMapError::Map {
        name,
        detail: "missing from the object".into(),
    })
}

impl BlockMaps {
    /// Takes the maps out of a loaded object (the blocklist may be a reused pin).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, BlockMapError> {
        let prefilter: Array<MapData, u64> =
            Array::try_from(take(ebpf, PREFILTER_MAP)?).map_err(map_err(PREFILTER_MAP))?;
        Ok(Self {
            bitmap: Bitmap::new(prefilter.len()),
            prefilter,
            prefilter_v4: V4Words::map(take(ebpf, PREFILTER_V4_MAP)?)?,
            state_written: MitigationState::default(),
            blocks: LpmTrie::try_from(take(ebpf, BLOCKS_MAP)?).map_err(map_err(BLOCKS_MAP))?,
            hosts: HashMap::try_from(take(ebpf, BLOCKED_HOSTS_MAP)?)
                .map_err(map_err(BLOCKED_HOSTS_MAP))?,
            feeds: LpmTrie::try_from(take(ebpf, FEEDS_MAP)?).map_err(map_err(FEEDS_MAP))?,
            never: LpmTrie::try_from(take(ebpf, NEVER_BLOCK_MAP)?)
                .map_err(map_err(NEVER_BLOCK_MAP))?,
            state: Array::try_from(take(ebpf, MITIGATION_MAP)?).map_err(map_err(MITIGATION_MAP))?,
            feed_names: HashMap::try_from(take(ebpf, FEED_NAMES_MAP)?)
                .map_err(map_err(FEED_NAMES_MAP))?,
        })
    }

    /// Every entry of the blocklist trie (a reused pin holds an earlier agent's).
    pub fn blocks(&self) -> Vec<(IpNet, BlockValue)> {
        self.blocks
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| Some((lpm_net(&k)?, v)))
            .collect()
    }

    /// Writes a single-address block into the exact map (no-op for networks).
    pub fn store_host(&mut self, net: &IpNet, value: BlockValue) -> Result<(), BlockMapError> {
        match host_key(net) {
            Some(key) => self
                .hosts
                .insert(key, value, 0)
                .map_err(map_err(BLOCKED_HOSTS_MAP)),
            None => Ok(()),
        }
    }

    /// Writes a block into the trie and, for a single address, the exact
    /// map: both or neither (its prefilter bits first).
    pub fn insert_block(&mut self, net: &IpNet, value: BlockValue) -> Result<(), BlockMapError> {
        if let Err(e) = self.prefilter_add(net) {
            // Neither: an earlier entry for it goes too, as when a write
            // below fails (the caller forgets it, and so will the prefilter).
            let _ = self.remove_block(net);
            return Err(e);
        }
        let key = lpm_key(net);
        self.blocks
            .insert(&key, value, 0)
            .map_err(map_err(BLOCKS_MAP))?;
        if let Err(e) = self.store_host(net, value) {
            // A host block the kernel cannot find fast would still drop
            // (through the trie), but keep the two maps in step.
            let _ = self.blocks.remove(&key);
            return Err(e);
        }
        Ok(())
    }

    /// Removes a network from both blocklist maps.
    pub fn remove_block(&mut self, net: &IpNet) -> Result<(), BlockMapError> {
        if let Some(key) = host_key(net) {
            match self.hosts.remove(&key).map_err(map_err(BLOCKED_HOSTS_MAP)) {
                Ok(()) | Err(BlockMapError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.blocks
            .remove(&lpm_key(net))
            .map_err(map_err(BLOCKS_MAP))
    }

    /// Adds a never-block network.
    pub fn insert_never(&mut self, net: &IpNet) -> Result<(), BlockMapError> {
        self.never
            .insert(&lpm_key(net), 1, 0)
            .map_err(map_err(NEVER_BLOCK_MAP))
    }

    /// Tells the kernel which lookups it needs (the prefilter fields are
    /// this object's).
    pub fn set_state(&mut self, state: MitigationState) -> Result<(), BlockMapError> {
        self.write_state(state, self.bitmap.levels)
    }

    fn write_state(&mut self, state: MitigationState, levels: u32) -> Result<(), BlockMapError> {
        let state = MitigationState {
            prefilter_levels: levels | scanwatch_common::prefilter::ENABLED,
            prefilter_mask: self.bitmap.mask(),
            ..state
        };
        self.state
            .set(0, state, 0)
            .map_err(map_err(MITIGATION_MAP))?;
        self.state_written = state;
        Ok(())
    }

    /// Writes one prefilter word, then its copy.
    fn write_word(&mut self, index: u32, word: u64) -> Result<(), BlockMapError> {
        self.prefilter
            .set(index, word, 0)
            .map_err(map_err(PREFILTER_MAP))?;
        self.bitmap.words[index as usize] = word;
        Ok(())
    }

    /// Writes one word of the IPv4 prefilter, then its copy.
    fn write_v4_word(&mut self, index: u32, word: u64) {
        self.prefilter_v4.store(index, word);
        self.bitmap.v4[index as usize] = word;
    }

    /// Sets the prefilter bits (and levels) of `net`: before its entries
    /// are added.
    pub fn prefilter_add(&mut self, net: &IpNet) -> Result<(), BlockMapError> {
        let key = lpm_key(net);
        let slots = self.bitmap.slots(key.prefix_len(), key.data());
        for (index, bits) in slots.words {
            let word = self.bitmap.words[index as usize];
            if word & bits != bits {
                self.write_word(index, word | bits)?;
            }
        }
        for (index, bits) in slots.v4 {
            let word = self.bitmap.v4[index as usize];
            if word & bits != bits {
                self.write_v4_word(index, word | bits);
            }
        }
        let levels = slots.levels;
        if levels & !self.bitmap.levels != 0 {
            self.write_state(self.state_written, self.bitmap.levels | levels)?;
            self.bitmap.levels |= levels;
        }
        Ok(())
    }

    /// Rebuilds the prefilter from `nets`, every network left in the
    /// blocklist and feeds (after removals: the bits only they needed are
    /// cleared). Words gaining bits (none, unless an earlier write failed)
    /// are written first, then the levels, then the words losing bits.
    pub fn prefilter_rebuild<'a>(
        &mut self,
        nets: impl IntoIterator<Item = &'a IpNet>,
    ) -> Result<(), BlockMapError> {
        let mut next = Bitmap::new(self.prefilter.len());
        for net in nets {
            let key = lpm_key(net);
            next.add(key.prefix_len(), key.data());
        }
        for (index, new) in next.words.iter().enumerate() {
            let old = self.bitmap.words[index];
            if new & !old != 0 {
                self.write_word(index as u32, old | new)?;
            }
        }
        for (index, new) in next.v4.iter().enumerate() {
            let old = self.bitmap.v4[index];
            if new & !old != 0 {
                self.write_v4_word(index as u32, old | new);
            }
        }
        let gained = self.bitmap.levels | next.levels;
        if gained != self.bitmap.levels {
            self.write_state(self.state_written, gained)?;
            self.bitmap.levels = gained;
        }
        for (index, new) in next.words.iter().enumerate() {
            if self.bitmap.words[index] != *new {
                self.write_word(index as u32, *new)?;
            }
        }
        for (index, new) in next.v4.iter().enumerate() {
            if self.bitmap.v4[index] != *new {
                self.write_v4_word(index as u32, *new);
            }
        }
        if next.levels != self.bitmap.levels {
            self.write_state(self.state_written, next.levels)?;
            self.bitmap.levels = next.levels;
        }
        Ok(())
    }

    /// The prefilter as the kernel holds it.
    pub const fn prefilter(&self) -> &Bitmap {
        &self.bitmap
    }

    /// Writes a feed entry (its prefilter bits first).
    pub fn insert_feed(&mut self, net: &IpNet, value: FeedValue) -> Result<(), BlockMapError> {
        self.prefilter_add(net)?;
        self.feeds
            .insert(&lpm_key(net), value, 0)
            .map_err(map_err(FEEDS_MAP))
    }

    pub fn remove_feed(&mut self, net: &IpNet) -> Result<(), BlockMapError> {
        self.feeds.remove(&lpm_key(net)).map_err(map_err(FEEDS_MAP))
    }

    /// Records feed `id`'s name for readers (`scanwatch top`).
    pub fn set_feed_name(&mut self, id: u32, name: &str) -> Result<(), BlockMapError> {
        self.feed_names
            .insert(id, Name32::new(name), 0)
            .map_err(map_err(FEED_NAMES_MAP))
    }

    /// The name of feed `id`.
    pub fn feed_name(&self, id: u32) -> Option<String> {
        self.feed_names.get(&id, 0).ok().map(|n| n.as_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpm_keys_round_trip() {
        for s in [
            "198.18.0.9/32",
            "10.0.0.0/8",
            "0.0.0.0/0",
            "fd00::1/128",
            "2001:db8::/32",
            "::/0",
        ] {
            let net: IpNet = s.parse().unwrap();
            assert_eq!(lpm_net(&lpm_key(&net)).unwrap().to_string(), s);
        }
        assert_eq!(lpm_key(&"10.0.0.0/8".parse().unwrap()).prefix_len(), 104);
        assert_eq!(
            host_key(&"198.18.0.1/32".parse().unwrap()),
            Some(SourceKey::v4([198, 18, 0, 1]))
        );
        assert_eq!(host_key(&"198.18.0.0/24".parse().unwrap()), None);
    }
}
