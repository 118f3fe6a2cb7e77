//! The agent's view of the kernel's direct-mapped first-contact table
//! (layout, hashing and the slot protocol: `scanwatch_common::contact_table`).
//! The array is `BPF_F_MMAPABLE`: it is mapped into the agent's memory and
//! read and changed with atomics, without a syscall per slot.

use std::{
    os::fd::BorrowedFd,
    sync::atomic::{AtomicU64, Ordering, fence},
};

use aya::maps::MapInfo;
use scanwatch_common::{
    contact_table::{BPF_F_MMAPABLE, CONTACTS_MASK, ContactSeed, ContactSlot, state},
    trw::{ContactKey, ContactValue, DEFAULT_CONTACTS_CAPACITY, outcome},
};

use super::mapping::Mapping;

/// The contact table, mapped shared with the kernel.
pub struct ContactTable {
    /// Every access goes through atomics or volatile reads.
    mapping: Mapping,
    slots: usize,
    seed: ContactSeed,
}

/// A consistent snapshot of one slot.
#[derive(Clone, Copy, Debug)]
struct Snapshot {
    /// The state read after the contents (the outcome as of then).
    state: u64,
    first_ns: u64,
    key: ContactKey,
}

impl ContactTable {
    /// Maps the table behind `fd` (described by `info`) with the slot hash
    /// keyed by `seed`: it must be an mmapable array of
    /// `DEFAULT_CONTACTS_CAPACITY` slots.
    pub fn map(fd: BorrowedFd<'_>, info: &MapInfo, seed: ContactSeed) -> Result<Self, String> {
        let slot_size = std::mem::size_of::<ContactSlot>();
        if info.value_size() as usize != slot_size
            || info.max_entries() != DEFAULT_CONTACTS_CAPACITY
            || info.map_flags() & BPF_F_MMAPABLE == 0
        {
            return Err(format!(
                "expected an mmapable array of {DEFAULT_CONTACTS_CAPACITY} {slot_size}-byte slots, found {} of {} bytes (flags {:#x})",
                info.max_entries(),
                info.value_size(),
                info.map_flags()
            ));
        }
        let slots = DEFAULT_CONTACTS_CAPACITY as usize;
        let mapping = Mapping::new(fd, slots * slot_size, true)?;
        Ok(Self {
            mapping,
            slots,
            seed,
        })
    }

    /// Slots in the table.
    pub const fn slots(&self) -> usize {
        self.slots
    }

    /// The slot hash's seed.
    pub const fn seed(&self) -> ContactSeed {
        self.seed
    }

    fn slot(&self, i: usize) -> *mut ContactSlot {
        debug_assert!(i < self.slots);
        // SAFETY: i < slots: inside the mapping.
        unsafe { self.mapping.base::<ContactSlot>().as_ptr().add(i) }
    }

    fn state(&self, i: usize) -> &AtomicU64 {
        // SAFETY: the state word is 8-byte aligned (page-aligned base,
        // 64-byte slots, state first) and lives as long as the mapping.
        unsafe { AtomicU64::from_ptr(&raw mut (*self.slot(i)).state) }
    }

    /// Time and key of slot `i` after reading its state `w` (racy:
    /// validated by the caller with a second read of the state, or a
    /// compare-and-swap from `w`).
    fn contents(&self, i: usize, w: u64) -> Snapshot {
        let p = self.slot(i);
        // SAFETY: inside the mapping; racy reads of plain data, never
        // trusted unless the state is unchanged afterwards.
        unsafe {
            Snapshot {
                state: w,
                first_ns: std::ptr::read_volatile(&raw const (*p).first_ns),
                key: std::ptr::read_volatile(&raw const (*p).key),
            }
        }
    }

    /// A consistent snapshot of slot `i` (a sequence-lock read); `None`
    /// if it is empty or being written.
    fn read(&self, i: usize) -> Option<Snapshot> {
        let w = self.state(i).load(Ordering::Acquire);
        if !state::stable(w) {
            return None;
        }
        let s = self.contents(i, w);
        fence(Ordering::Acquire);
        // The same sequence: no writer in between (a resolution keeps it
        // and changes only the outcome, which this read then reports).
        let again = self.state(i).load(Ordering::Relaxed);
        (again & !state::OUTCOME == w & !state::OUTCOME).then_some(Snapshot { state: again, ..s })
    }

    /// The contact `key`, if its slot holds it.
    pub fn get(&self, key: &ContactKey) -> Option<ContactValue> {
        let i = self.seed.slot(key, CONTACTS_MASK) as usize;
        let s = self.read(i)?;
        (s.key == *key).then_some(ContactValue {
            first_ns: s.first_ns,
            outcome: state::outcome(s.state),
        })
    }

    /// Calls `f` with each contact made at or after `since_ns` (kernel
    /// clock) and resolved (any outcome but pending), as consistent
    /// snapshots: key, time and outcome. One pass over the mapping, no
    /// syscall; slots being written are skipped.
    pub fn for_each_resolved(&self, since_ns: u64, mut f: impl FnMut(&ContactKey, u64, u64)) {
        for i in 0..self.slots {
            // The state word first: empty and pending slots are not copied.
            let w = self.state(i).load(Ordering::Relaxed);
            if state::empty(w) || state::outcome(w) == outcome::PENDING {
                continue;
            }
            let Some(s) = self.read(i) else {
                continue;
            };
            let result = state::outcome(s.state);
            if result != outcome::PENDING && s.first_ns >= since_ns {
                f(&s.key, s.first_ns, result);
            }
        }
    }

    /// Marks every contact pending for at least `timeout_ns` (on the kernel clock,
    /// `now_ns`) as no-answer, calling `marked` with each; returns the
    /// slots holding a contact. One pass over the mapping, no syscall.
    pub fn expire(&self, timeout_ns: u64, now_ns: u64, mut marked: impl FnMut(&ContactKey)) -> u64 {
        let mut held = 0;
        for i in 0..self.slots {
            let w = self.state(i).load(Ordering::Acquire);
            if state::empty(w) {
                continue;
            }
            held += 1;
            if state::busy(w) || state::outcome(w) != outcome::PENDING {
                continue;
            }
            let s = self.contents(i, w);
            if now_ns.saturating_sub(s.first_ns) < timeout_ns {
                continue;
            }
            // Fails if the contact was answered, or its slot rewritten,
            // since `w`: then `s` is not trusted.
            if self
                .state(i)
                .compare_exchange(
                    w,
                    state::with_outcome(w, outcome::NO_ANSWER),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                marked(&s.key);
            }
        }
        held
    }
}
