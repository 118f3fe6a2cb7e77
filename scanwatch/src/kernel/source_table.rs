//! The source table (`SOURCES`, an mmap-able array of `SourceStats`
//! slots, the key in each slot) as the agent reads it: one source through
//! its two candidate slots (as the kernel finds it), or every slot through
//! a read-only mapping of the whole table (no syscall per slot).
//!
//! The mapped pages are the kernel's (no copy), but the kernel maps them
//! all at once and a process's RSS counts them (as the OOM killer does):
//! lookups read their two slots with syscalls, and each walk maps the table
//! and unmaps it when done, so the agent's RSS holds the table only while
//! it counts.

use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};

use aya::maps::{Array, MapData};
use scanwatch_common::{
    SourceKey, SourceStats,
    maps::SOURCES_MAP,
    tracking::{SOURCE_TAGS_MAP, bucket, index_tag, key_hash, slots, source_tag, tag_place},
};

use super::maps_error::{MapsError, map_err};

/// `first_seen_ns` of a slot the kernel is setting up (not a source yet).
const BUSY: u64 = 1;

/// A read-only mapping of the table (read with volatile copies).
struct TableMapping {
    mapping: super::mapping::Mapping,
    slots: u32,
}

impl TableMapping {
    fn new(fd: BorrowedFd<'_>, slots: u32) -> Result<Self, MapsError> {
        let bytes = slots as usize * std::mem::size_of::<SourceStats>();
        let mapping =
            super::mapping::Mapping::new(fd, bytes, false).map_err(|e| MapsError::Map {
                name: SOURCES_MAP,
                detail: format!("cannot map the table: {e}"),
            })?;
        Ok(Self { mapping, slots })
    }

    /// A copy of slot `i` (the kernel may be changing it meanwhile).
    fn get(&self, i: u32) -> Option<SourceStats> {
        if i >= self.slots {
            return None;
        }
        // SAFETY: i is inside the mapping; a volatile copy of plain data.
        Some(unsafe {
            std::ptr::read_volatile(self.mapping.base::<SourceStats>().as_ptr().add(i as usize))
        })
    }
}

/// A walk over every slot of its own mapping, unmapped when dropped.
struct Walk {
    mapping: TableMapping,
    next: u32,
}

impl Iterator for Walk {
    type Item = SourceStats;

    fn next(&mut self) -> Option<SourceStats> {
        while self.next < self.mapping.slots {
            let s = self.mapping.get(self.next);
            self.next += 1;
            if let Some(s) = s.filter(|s| s.first_seen_ns > BUSY) {
                return Some(s);
            }
        }
        None
    }
}

/// Another descriptor of the source map.
fn dup_fd(fd: BorrowedFd<'_>) -> Result<OwnedFd, MapsError> {
    fd.try_clone_to_owned().map_err(|e| MapsError::Map {
        name: SOURCES_MAP,
        detail: format!("cannot duplicate the fd: {e}"),
    })
}

/// The source table.
pub struct SourceTable {
    array: Array<MapData, SourceStats>,
    /// The tag index, where this process may write sources ([`Self::insert`]).
    tags: Option<Array<MapData, u64>>,
    /// The map's fd again, for the walks' mappings.
    fd: OwnedFd,
    slots: u32,
}

impl SourceTable {
    /// The table of the map `data` (an array of `slots` slots).
    pub fn new(data: MapData, slots: u32) -> Result<Self, MapsError> {
        let fd = dup_fd(data.fd().as_fd())?;
        let array = Array::try_from(aya::maps::Map::Array(data)).map_err(map_err(SOURCES_MAP))?;
        Ok(Self {
            array,
            tags: None,
            fd,
            slots,
        })
    }

    /// The tag index (`SOURCE_TAGS`), for [`Self::insert`].
    pub fn set_tags(&mut self, map: aya::maps::Map) -> Result<(), MapsError> {
        self.tags = Some(Array::try_from(map).map_err(map_err(SOURCE_TAGS_MAP))?);
        Ok(())
    }

    pub const fn slots(&self) -> u32 {
        self.slots
    }

    /// A copy of slot `i` (one syscall), if it holds a source.
    fn slot(&self, i: u32) -> Option<SourceStats> {
        self.array.get(&i, 0).ok()
    }

    /// The slot holding `key`'s source, with its index, if it is tracked.
    pub fn find(&self, key: &SourceKey) -> Option<(u32, SourceStats)> {
        let words = key.words();
        let (a, b) = slots(key_hash(words), self.slots());
        [a, b].into_iter().find_map(|i| {
            let s = self.slot(i)?;
            (s.key == words && s.first_seen_ns > BUSY).then_some((i, s))
        })
    }

    /// Another handle on the same table (for another thread), without
    /// the tag index (it cannot [`Self::insert`]).
    pub fn try_clone(&self) -> Result<Self, MapsError> {
        let data = MapData::from_fd(dup_fd(self.fd.as_fd())?).map_err(map_err(SOURCES_MAP))?;
        Self::new(data, self.slots)
    }

    /// Marks `key`'s source, if it is tracked, as decided by the
    /// reply-aware test for the rest of its window
    /// ([`SourceStats::REPLY_DECIDED`], what the egress program sets at a
    /// crossing it steps itself; the agent's no-answer sweep calls this for
    /// its own): one fetch-or of the slot's `crossed` word through a
    /// writable mapping of the slot's page, so no count the kernel adds
    /// meanwhile is lost. Whether the source was tracked.
    pub fn mark_decided(&self, key: &SourceKey) -> Result<bool, MapsError> {
        let Some((i, _)) = self.find(key) else {
            return Ok(false);
        };
        let size = std::mem::size_of::<SourceStats>();
        let offset = i as usize * size;
        let page = super::mapping::Mapping::page_size();
        let start = offset / page * page;
        // A slot (256 bytes) never straddles a page.
        let mapping =
            super::mapping::Mapping::at(self.fd.as_fd(), start, page, true).map_err(|e| {
                MapsError::Map {
                    name: SOURCES_MAP,
                    detail: format!("cannot map slot {i}: {e}"),
                }
            })?;
        // SAFETY: the slot lies inside the mapped page (offset - start +
        // size <= page, as size divides the page size).
        let slot = unsafe {
            mapping
                .base::<u8>()
                .as_ptr()
                .add(offset - start)
                .cast::<SourceStats>()
        };
        // SAFETY: a volatile copy of plain data inside the mapping.
        let held = unsafe { std::ptr::read_volatile(&raw const (*slot).key) };
        if held != key.words() {
            return Ok(false); // taken by another source meanwhile
        }
        // SAFETY: `crossed` is an aligned u64 of the mapping, which the
        // kernel also changes only atomically or in a slot it owns.
        let crossed = unsafe { std::sync::atomic::AtomicU64::from_ptr(&raw mut (*slot).crossed) };
        crossed.fetch_or(
            SourceStats::REPLY_DECIDED,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(true)
    }

    /// Every tracked source: a walk of a fresh mapping (no syscall per
    /// slot), unmapped when the iterator is dropped.
    pub fn sources(&self) -> Result<impl Iterator<Item = SourceStats> + use<>, MapsError> {
        Ok(Walk {
            mapping: TableMapping::new(self.fd.as_fd(), self.slots())?,
            next: 0,
        })
    }

    /// Writes `stats` (with its key) where the kernel would look for it: its
    /// slot if tracked, else a free one of its two, else the first; and its
    /// tag in the tag index (tests and tools: e.g. filling the table).
    pub fn insert(&mut self, stats: &SourceStats) -> Result<(), MapsError> {
        let key = stats.source();
        let hash = key_hash(stats.key);
        let (a, b) = slots(hash, self.slots());
        let index = match self.find(&key) {
            Some((i, _)) => i,
            None if self.slot(a).is_some_and(|s| !s.is_used()) => a,
            None if self.slot(b).is_some_and(|s| !s.is_used()) => b,
            None => a,
        };
        let tags = self
            .tags
            .as_mut()
            .ok_or(MapsError::Missing(SOURCE_TAGS_MAP))?;
        let (word, pair) = tag_place(bucket(hash, self.slots));
        let old = tags.get(&word, 0).map_err(map_err(SOURCE_TAGS_MAP))?;
        let shift = 16 * pair + 8 * (index - a);
        let tag = index_tag(source_tag(hash));
        let new = (old & !(0xffu64 << shift)) | (u64::from(tag) << shift);
        tags.set(word, new, 0).map_err(map_err(SOURCE_TAGS_MAP))?;
        self.array
            .set(index, stats, 0)
            .map_err(map_err(SOURCES_MAP))
    }
}
