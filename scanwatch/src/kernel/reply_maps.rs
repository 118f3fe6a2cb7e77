//! Typed access to the reply-aware detector's maps: first contacts (the
//! mapped table, [`super::contact_table`]), each source's Threshold Random
//! Walk state and the egress counters. See `scanwatch_common::trw` for the
//! test itself and [`super::sweep`] for the no-answer sweep.

use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};

use aya::{
    Ebpf,
    maps::{HashMap, Map, MapData, MapError, PerCpuArray},
};
use scanwatch_common::{
    SourceKey,
    contact_table::ContactSeed,
    trw::{
        CONTACTS_MAP, ContactKey, ContactValue, REPLY_COUNTERS_MAP, REPLY_SOURCES_MAP, ReplyConfig,
        ReplyCounters, ReplyStats,
    },
};

use super::contact_table::ContactTable;
use crate::model::error_chain;

#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("map {0} missing from the object")]
    Missing(&'static str),
    #[error("map {name}: {detail}")]
    Map { name: &'static str, detail: String },
}

pub(super) fn map_err(name: &'static str) -> impl Fn(MapError) -> ReplyError {
    move |e| ReplyError::Map {
        name,
        detail: error_chain(&e),
    }
}

/// The reply maps (each handle owns its own file descriptor).
pub struct ReplyMaps {
    pub(super) contacts: ContactTable,
    pub(super) sources: HashMap<MapData, SourceKey, ReplyStats>,
    counters: PerCpuArray<MapData, ReplyCounters>,
    /// Spare descriptors of the three maps, for [`ReplyMaps::try_clone`].
    fds: [OwnedFd; 3],
    pub(super) cfg: ReplyConfig,
}

fn dup(fd: BorrowedFd<'_>, name: &'static str) -> Result<OwnedFd, ReplyError> {
    fd.try_clone_to_owned().map_err(|e| ReplyError::Map {
        name,
        detail: format!("cannot duplicate the map fd: {e}"),
    })
}

fn map_fd(map: &Map, name: &'static str) -> Result<OwnedFd, ReplyError> {
    let data = match map {
        Map::HashMap(d) | Map::LruHashMap(d) | Map::PerCpuArray(d) | Map::Array(d) => d,
        _ => {
            return Err(ReplyError::Map {
                name,
                detail: "unexpected map type".into(),
            });
        }
    };
    dup(data.fd().as_fd(), name)
}

/// Maps the contact table behind `fd` (keyed by `seed`).
fn map_contacts(fd: BorrowedFd<'_>, seed: ContactSeed) -> Result<ContactTable, ReplyError> {
    let data = MapData::from_fd(dup(fd, CONTACTS_MAP)?).map_err(map_err(CONTACTS_MAP))?;
    let info = data.info().map_err(map_err(CONTACTS_MAP))?;
    ContactTable::map(data.fd().as_fd(), &info, seed).map_err(|detail| ReplyError::Map {
        name: CONTACTS_MAP,
        detail,
    })
}

impl ReplyMaps {
    /// Takes the maps out of a loaded object, whose contact table's slots
    /// are hashed with `seed` (`LoadOptions::contact_seed`).
    pub fn take(ebpf: &mut Ebpf, cfg: ReplyConfig, seed: ContactSeed) -> Result<Self, ReplyError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(ReplyError::Missing(name));
        let contacts = take(CONTACTS_MAP)?;
        let sources = take(REPLY_SOURCES_MAP)?;
        let counters = take(REPLY_COUNTERS_MAP)?;
        let fds = [
            map_fd(&contacts, CONTACTS_MAP)?,
            map_fd(&sources, REPLY_SOURCES_MAP)?,
            map_fd(&counters, REPLY_COUNTERS_MAP)?,
        ];
        Ok(Self {
            contacts: map_contacts(fds[0].as_fd(), seed)?,
            sources: HashMap::try_from(sources).map_err(map_err(REPLY_SOURCES_MAP))?,
            counters: PerCpuArray::try_from(counters).map_err(map_err(REPLY_COUNTERS_MAP))?,
            fds,
            cfg,
        })
    }

    /// Another set of handles on the same maps (for another thread).
    pub fn try_clone(&self) -> Result<Self, ReplyError> {
        let open = |i: usize, name: &'static str| {
            MapData::from_fd(dup(self.fds[i].as_fd(), name)?).map_err(map_err(name))
        };
        let sources = open(1, REPLY_SOURCES_MAP)?;
        let counters = open(2, REPLY_COUNTERS_MAP)?;
        Ok(Self {
            contacts: map_contacts(self.fds[0].as_fd(), self.contacts.seed())?,
            sources: HashMap::try_from(Map::LruHashMap(sources))
                .map_err(map_err(REPLY_SOURCES_MAP))?,
            counters: PerCpuArray::try_from(Map::PerCpuArray(counters))
                .map_err(map_err(REPLY_COUNTERS_MAP))?,
            fds: [
                dup(self.fds[0].as_fd(), CONTACTS_MAP)?,
                dup(self.fds[1].as_fd(), REPLY_SOURCES_MAP)?,
                dup(self.fds[2].as_fd(), REPLY_COUNTERS_MAP)?,
            ],
            cfg: self.cfg,
        })
    }

    pub const fn config(&self) -> &ReplyConfig {
        &self.cfg
    }

    /// A source's test state, if it has one.
    pub fn stats(&self, key: &SourceKey) -> Result<Option<ReplyStats>, ReplyError> {
        match self.sources.get(key, 0) {
            Ok(s) => Ok(Some(s)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(REPLY_SOURCES_MAP)(e)),
        }
    }

    /// A first contact's state, if its slot holds it (read from the
    /// mapped table: no syscall).
    pub fn contact(&self, key: &ContactKey) -> Result<Option<ContactValue>, ReplyError> {
        Ok(self.contacts.get(key))
    }

    /// Calls `f` with every resolved first contact made at or after
    /// `since_ns` (key, time, outcome): a pass over the mapped contact table.
    pub fn for_each_resolved_contact(&self, since_ns: u64, f: impl FnMut(&ContactKey, u64, u64)) {
        self.contacts.for_each_resolved(since_ns, f);
    }

    /// The kernel's reply counters summed over CPUs.
    pub fn counters(&self) -> Result<ReplyCounters, ReplyError> {
        let mut total = ReplyCounters::ZERO;
        let per_cpu = self
            .counters
            .get(&0, 0)
            .map_err(map_err(REPLY_COUNTERS_MAP))?;
        for c in per_cpu.iter() {
            total.add(c);
        }
        Ok(total)
    }
}
