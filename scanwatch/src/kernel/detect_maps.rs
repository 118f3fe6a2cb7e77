//! Typed access to the detection maps (sources, interface counters and
//! names, the crossing ring buffer), either straight from the loaded
//! object (the agent) or from their pins (`scanwatch top`, other processes).

use std::{collections::BTreeMap, path::Path};

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf},
};
use scanwatch_common::{
    IfaceCounters, IfaceName, ScanEvent, SourceKey, SourceStats,
    evidence::{EVIDENCE_MAP, EvidenceRecord},
    maps::{
        EVENTS_MAP, IFACE_COUNTERS_MAP, IFACE_NAMES_MAP, IFACE_SLOT_BYTES_MAP, IFACE_SLOTS_MAP,
        IFINDEX_SLOTS, MAX_INTERFACES, SOURCE_PREFIXES_MAP, SOURCES_MAP,
    },
};

use scanwatch_common::tracking::SOURCE_TAGS_MAP;

use super::{
    pins::{PinDir, existing_pin},
    source_table::SourceTable,
};
use crate::model::{SourcePrefixes, error_chain, kernel_now_ns};

pub use super::maps_error::MapsError;
pub(super) use super::maps_error::map_err;

/// Records the prefix lengths sources are counted by in the object's
/// `SOURCE_PREFIXES` map and pins it (for `scanwatch top`).
pub fn pin_prefixes(
    ebpf: &mut Ebpf,
    prefixes: SourcePrefixes,
    pins: &PinDir,
) -> Result<(), MapsError> {
    let map = ebpf
        .map_mut(SOURCE_PREFIXES_MAP)
        .ok_or(MapsError::Missing(SOURCE_PREFIXES_MAP))?;
    let mut array: Array<&mut MapData, u32> =
        Array::try_from(&mut *map).map_err(map_err(SOURCE_PREFIXES_MAP))?;
    for (i, len) in [prefixes.v4, prefixes.v6].into_iter().enumerate() {
        array
            .set(i as u32, u32::from(len), 0)
            .map_err(map_err(SOURCE_PREFIXES_MAP))?;
    }
    map.pin(pins.pin_path(SOURCE_PREFIXES_MAP))
        .map_err(|e| MapsError::Map {
            name: SOURCE_PREFIXES_MAP,
            detail: format!("cannot pin: {}", error_chain(&e)),
        })
}

/// The prefix lengths a running agent pinned in `dir` (per address when it
/// pinned none).
pub fn pinned_prefixes(dir: &Path) -> SourcePrefixes {
    let read = || -> Option<SourcePrefixes> {
        let data = MapData::from_pin(dir.join(SOURCE_PREFIXES_MAP)).ok()?;
        let array: Array<MapData, u32> = Array::try_from(Map::Array(data)).ok()?;
        let len = |i: u32| array.get(&i, 0).ok().and_then(|v| u8::try_from(v).ok());
        Some(SourcePrefixes {
            v4: len(0)?,
            v6: len(1)?,
        })
    };
    read().unwrap_or(SourcePrefixes::HOSTS)
}

/// A `T` from the start of a ring-buffer record; `None` when the record is
/// too short.
pub fn read_record<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; `Pod` types are valid for any bits.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record (a [`ScanEvent`] the XDP program sent);
/// `None` when it is too short.
pub fn decode_event(bytes: &[u8]) -> Option<ScanEvent> {
    read_record(bytes)
}

/// The threshold-crossing ring buffer of a loaded object (not pinned: only
/// the agent that loaded the program reads it).
pub fn take_events(ebpf: &mut Ebpf) -> Result<RingBuf<MapData>, MapsError> {
    let map = ebpf
        .take_map(EVENTS_MAP)
        .ok_or(MapsError::Missing(EVENTS_MAP))?;
    RingBuf::try_from(map).map_err(map_err(EVENTS_MAP))
}

/// Decodes one record of the evidence ring (an [`EvidenceRecord`] the XDP
/// program sent); `None` when it is too short.
pub fn decode_evidence(bytes: &[u8]) -> Option<EvidenceRecord> {
    read_record(bytes)
}

/// The evidence-packet ring buffer of a loaded object (not pinned, as the
/// crossing ring).
pub fn take_evidence(ebpf: &mut Ebpf) -> Result<RingBuf<MapData>, MapsError> {
    let map = ebpf
        .take_map(EVIDENCE_MAP)
        .ok_or(MapsError::Missing(EVIDENCE_MAP))?;
    RingBuf::try_from(map).map_err(map_err(EVIDENCE_MAP))
}

/// The agent's maps.
pub struct ScanwatchMaps {
    sources: SourceTable,
    counters: PerCpuArray<MapData, IfaceCounters>,
    slots: Array<MapData, u32>,
    names: HashMap<MapData, u32, IfaceName>,
    source_capacity: u32,
    source_map_id: u32,
}

impl ScanwatchMaps {
    /// Takes the maps out of a loaded object, records the interface names,
    /// then pins each map in `pins` (the names map last, so a reader that
    /// finds it finds a complete set).
    pub fn take_and_pin(
        ebpf: &mut Ebpf,
        pins: &PinDir,
        iface_names: &[(u32, &str)],
    ) -> Result<Self, MapsError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(MapsError::Missing(name));
        let sources = take(SOURCES_MAP)?;
        let counters = take(IFACE_COUNTERS_MAP)?;
        let slots = take(IFACE_SLOTS_MAP)?;
        let mut names = take(IFACE_NAMES_MAP)?;
        let tags = take(SOURCE_TAGS_MAP)?;
        {
            let mut typed: HashMap<&mut MapData, u32, IfaceName> =
                HashMap::try_from(&mut names).map_err(map_err(IFACE_NAMES_MAP))?;
            for (ifindex, name) in iface_names {
                let value = IfaceName::new(name).ok_or_else(|| MapsError::Map {
                    name: IFACE_NAMES_MAP,
                    detail: format!("interface name {name:?} does not fit IFNAMSIZ"),
                })?;
                typed
                    .insert(ifindex, value, 0)
                    .map_err(map_err(IFACE_NAMES_MAP))?;
            }
        }
        for (name, map) in [
            (SOURCES_MAP, &sources),
            (SOURCE_TAGS_MAP, &tags),
            (IFACE_COUNTERS_MAP, &counters),
            (IFACE_SLOTS_MAP, &slots),
            (IFACE_NAMES_MAP, &names),
        ] {
            map.pin(pins.pin_path(name)).map_err(|e| MapsError::Map {
                name,
                detail: format!("cannot pin: {}", error_chain(&e)),
            })?;
        }
        let mut maps = Self::from_maps(sources, counters, slots, names)?;
        maps.sources.set_tags(tags)?;
        Ok(maps)
    }

    /// Gives each watched interface its own counters slot (1, 2, ...), before
    /// attaching, so that no packet is counted under slot 0: in the slot
    /// table readers use and in the kernel's copy of it (one byte a slot,
    /// written whole).
    pub fn assign_slots(ebpf: &mut Ebpf, ifindexes: &[u32]) -> Result<(), MapsError> {
        let bytes = slot_bytes(ifindexes)?;
        {
            let map = ebpf
                .map_mut(IFACE_SLOTS_MAP)
                .ok_or(MapsError::Missing(IFACE_SLOTS_MAP))?;
            let mut slots: Array<&mut MapData, u32> =
                Array::try_from(map).map_err(map_err(IFACE_SLOTS_MAP))?;
            for ifindex in ifindexes {
                let index = ifindex % IFINDEX_SLOTS;
                slots
                    .set(index, u32::from(bytes[index as usize]), 0)
                    .map_err(map_err(IFACE_SLOTS_MAP))?;
            }
        }
        let map = ebpf
            .map_mut(IFACE_SLOT_BYTES_MAP)
            .ok_or(MapsError::Missing(IFACE_SLOT_BYTES_MAP))?;
        let mut kernel: Array<&mut MapData, [u8; IFINDEX_SLOTS as usize]> =
            Array::try_from(map).map_err(map_err(IFACE_SLOT_BYTES_MAP))?;
        kernel
            .set(0, bytes, 0)
            .map_err(map_err(IFACE_SLOT_BYTES_MAP))
    }

    /// Takes the maps out of a loaded object without pinning (tests).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(MapsError::Missing(name));
        let sources = take(SOURCES_MAP)?;
        let counters = take(IFACE_COUNTERS_MAP)?;
        let slots = take(IFACE_SLOTS_MAP)?;
        let names = take(IFACE_NAMES_MAP)?;
        let tags = take(SOURCE_TAGS_MAP)?;
        let mut maps = Self::from_maps(sources, counters, slots, names)?;
        maps.sources.set_tags(tags)?;
        Ok(maps)
    }

    /// Opens the maps a running agent pinned in `dir`.
    pub fn open_pinned(dir: &Path) -> Result<Self, MapsError> {
        let open = |name: &'static str| -> Result<Map, MapsError> {
            let path = existing_pin(dir, name)?;
            let data = MapData::from_pin(&path).map_err(map_err(name))?;
            Map::from_map_data(data).map_err(map_err(name))
        };
        let mut maps = Self::from_maps(
            open(SOURCES_MAP)?,
            open(IFACE_COUNTERS_MAP)?,
            open(IFACE_SLOTS_MAP)?,
            open(IFACE_NAMES_MAP)?,
        )?;
        maps.sources.set_tags(open(SOURCE_TAGS_MAP)?)?;
        Ok(maps)
    }

    fn from_maps(sources: Map, counters: Map, slots: Map, names: Map) -> Result<Self, MapsError> {
        let Map::Array(data) = sources else {
            return Err(MapsError::Map {
                name: SOURCES_MAP,
                detail: "not an array map".into(),
            });
        };
        let info = data.info().map_err(map_err(SOURCES_MAP))?;
        let (source_capacity, source_map_id) = (info.max_entries(), info.id());
        Ok(Self {
            sources: SourceTable::new(data, source_capacity)?,
            counters: PerCpuArray::try_from(counters).map_err(map_err(IFACE_COUNTERS_MAP))?,
            slots: Array::try_from(slots).map_err(map_err(IFACE_SLOTS_MAP))?,
            names: HashMap::try_from(names).map_err(map_err(IFACE_NAMES_MAP))?,
            source_capacity,
            source_map_id,
        })
    }

    /// Kernel memory charged for the source map (`memlock` in the map's
    /// fdinfo), as the kernel reports it rather than computed by hand.
    pub fn source_map_memory_bytes(&self) -> Option<u64> {
        map_memlock_bytes(self.source_map_id)
    }

    /// Maximum number of tracked sources (the source table's slots).
    pub const fn source_capacity(&self) -> u32 {
        self.source_capacity
    }

    /// ifindex -> name, as the agent recorded them.
    pub fn iface_names(&self) -> BTreeMap<u32, String> {
        self.names
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v.as_string()))
            .collect()
    }

    fn slot_counters(&self, slot: u32) -> Result<IfaceCounters, MapsError> {
        let per_cpu = self
            .counters
            .get(&slot, 0)
            .map_err(map_err(IFACE_COUNTERS_MAP))?;
        let mut sum = IfaceCounters::ZERO;
        for cpu in per_cpu.iter() {
            sum.add(cpu);
        }
        Ok(sum)
    }

    /// Counters summed over CPUs and every slot (all interfaces).
    pub fn total_counters(&self) -> Result<IfaceCounters, MapsError> {
        let mut total = IfaceCounters::ZERO;
        for slot in 0..MAX_INTERFACES {
            total.add(&self.slot_counters(slot)?);
        }
        Ok(total)
    }

    /// Per-interface counters summed over CPUs, by ifindex (the interfaces
    /// the agent named); key 0 holds slot 0 (unassigned interfaces) when it
    /// counted anything.
    pub fn iface_counters(&self) -> Result<BTreeMap<u32, IfaceCounters>, MapsError> {
        let mut out = BTreeMap::new();
        for ifindex in self.iface_names().keys() {
            let slot = self
                .slots
                .get(&(ifindex % IFINDEX_SLOTS), 0)
                .map_err(map_err(IFACE_SLOTS_MAP))?;
            if slot != 0 {
                out.insert(*ifindex, self.slot_counters(slot)?);
            }
        }
        let unassigned = self.slot_counters(0)?;
        if unassigned.get(scanwatch_common::Counter::Packets) != 0 {
            out.insert(0, unassigned);
        }
        Ok(out)
    }

    /// Every tracked source: a walk of the whole table through a mapping
    /// of its own (no syscall per slot), for `top`, counts and tests.
    pub fn sources(&self) -> Result<Vec<(SourceKey, SourceStats)>, MapsError> {
        Ok(self.sources.sources()?.map(|s| (s.source(), s)).collect())
    }

    /// Counts tracked sources, in total and by the interface of their latest
    /// probe.
    pub fn count_sources(&self) -> Result<(u64, BTreeMap<u32, u64>), MapsError> {
        let mut total = 0u64;
        let mut by_iface = BTreeMap::new();
        for s in self.sources.sources()? {
            total += 1;
            *by_iface.entry(s.last_ifindex).or_insert(0u64) += 1;
        }
        Ok((total, by_iface))
    }

    /// Writes one source's entry (its key is in it) where the kernel looks
    /// for it (tests and tools: e.g. filling the table).
    pub fn insert_source(&mut self, stats: &SourceStats) -> Result<(), MapsError> {
        self.sources.insert(stats)
    }

    /// Fills the source table with `count` idle sources fdNN::<i> (NN =
    /// `tag`), as if that many had probed once: load tests and benchmarks.
    pub fn insert_idle_sources(&mut self, count: u32, tag: u8) -> Result<(), MapsError> {
        let now = kernel_now_ns();
        for i in 0..count {
            let mut addr = [0u8; 16];
            addr[0] = 0xfd;
            addr[1] = tag;
            addr[12..].copy_from_slice(&i.to_be_bytes());
            self.insert_source(&SourceStats::new(&SourceKey::v6(addr), now, 0))?;
        }
        Ok(())
    }

    /// One source's entry, if tracked.
    pub fn source(&self, key: &SourceKey) -> Option<SourceStats> {
        self.sources.find(key).map(|(_, s)| s)
    }

    /// Another handle on the source table, for another thread (the
    /// no-answer sweep marks the sources it decides:
    /// [`SourceTable::mark_decided`]).
    pub fn source_table(&self) -> Result<SourceTable, MapsError> {
        self.sources.try_clone()
    }
}

/// The `memlock` figure of the map with id `map_id`, read from the fdinfo of
/// one of this process's descriptors for it.
pub fn map_memlock_bytes(map_id: u32) -> Option<u64> {
    let want = format!("map_id:\t{map_id}");
    for entry in std::fs::read_dir("/proc/self/fdinfo").ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if text.lines().any(|l| l == want) {
            return text
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse().ok());
        }
    }
    None
}

/// The counters slot of each of `ifindexes` (1, 2, ... in their order) at
/// ifindex % `IFINDEX_SLOTS`, 0 elsewhere: the kernel's slot table. An
/// error when two interfaces share an index or there are more than
/// `MAX_INTERFACES - 1` of them.
fn slot_bytes(ifindexes: &[u32]) -> Result<[u8; IFINDEX_SLOTS as usize], MapsError> {
    let mut bytes = [0u8; IFINDEX_SLOTS as usize];
    for (i, ifindex) in ifindexes.iter().enumerate() {
        let slot = u8::try_from(i + 1)
            .ok()
            .filter(|s| u32::from(*s) < MAX_INTERFACES);
        let entry = &mut bytes[(ifindex % IFINDEX_SLOTS) as usize];
        let (Some(slot), 0) = (slot, *entry) else {
            return Err(MapsError::Map {
                name: IFACE_SLOTS_MAP,
                detail: format!(
                    "interface index {ifindex} shares a counters slot with another watched interface (or more than {} interfaces)",
                    MAX_INTERFACES - 1
                ),
            });
        };
        *entry = slot;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_get_slots_in_order_and_never_share_one() {
        let bytes = slot_bytes(&[2, 7, 4095]).expect("three interfaces");
        assert_eq!((bytes[2], bytes[7], bytes[4095]), (1, 2, 3));
        assert_eq!(bytes.iter().filter(|b| **b != 0).count(), 3);
        // 4098 % 4096 == 2: the same index as interface 2.
        let err = slot_bytes(&[2, 4098]).expect_err("shared index");
        assert!(err.to_string().contains("interface index 4098"), "{err}");
        let most: Vec<u32> = (1..MAX_INTERFACES).collect();
        let bytes = slot_bytes(&most).expect("255 interfaces");
        assert_eq!(bytes[255], 255);
        let too_many: Vec<u32> = (1..=MAX_INTERFACES).collect();
        assert!(slot_bytes(&too_many).is_err(), "256 interfaces");
    }

    #[test]
    fn decodes_events() {
        let e = ScanEvent {
            source: SourceKey::v4([198, 18, 0, 1]),
            time_ns: 5,
            window_start_ns: 4,
            ifindex: 2,
            triggers: 1,
        };
        // SAFETY: reading the bytes of a plain struct.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const e).cast::<u8>(),
                std::mem::size_of::<ScanEvent>(),
            )
        };
        assert_eq!(decode_event(bytes), Some(e));
        assert_eq!(decode_event(&bytes[..10]), None);
    }

    #[test]
    fn decodes_evidence_records() {
        let mut r = EvidenceRecord {
            source: SourceKey::v4([198, 18, 0, 5]),
            time_ns: 7,
            ifindex: 3,
            frame_len: 60,
            captured: 60,
            _pad: 0,
            bytes: [0; scanwatch_common::evidence::EVIDENCE_BYTES],
        };
        r.bytes[0] = 0xaa;
        // SAFETY: reading the bytes of a plain struct.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const r).cast::<u8>(),
                std::mem::size_of::<EvidenceRecord>(),
            )
        };
        assert_eq!(decode_evidence(bytes), Some(r));
        assert_eq!(decode_evidence(&bytes[..167]), None);
    }
}
