//! The direct-mapped first-contact tables of the reply-aware detector: a
//! first contact is kept without a map insert.
//!
//! # Tables
//!
//! [`CONTACTS_MAP`](crate::trw::CONTACTS_MAP) is a `BPF_MAP_TYPE_ARRAY` of
//! [`DEFAULT_CONTACTS_CAPACITY`] [`ContactSlot`]s (a fixed size: the slot
//! mask is a compile-time constant of the programs), created
//! `BPF_F_MMAPABLE` so the agent reads and sweeps it through a shared
//! mapping, with atomics and no syscall per slot. A contact lives in the
//! one slot its key hashes to ([`ContactSeed::slot`]); a new contact
//! overwrites whatever that slot held (an overwrite of a still-pending
//! contact is counted: `ReplyCounter::ContactsOverwritten`). A repeat
//! contact (its key already in its slot) costs a read and a compare.
//!
//! [`CONTACT_MARKS_MAP`], a second array of [`DEFAULT_CONTACT_MARKS_CAPACITY`]
//! slots in the same format, holds the host markers
//! ([`host_marker`](crate::trw::host_marker), outcome `SUCCESS`) and
//! this host's outbound UDP flows (outcome `OUTBOUND`). Only the egress
//! program writes it (a resolved success, this host's own UDP), so probes
//! cannot churn it; XDP only reads it, for UDP probes.
//!
//! # Hashing
//!
//! [`slot_of`]: NH (the UMAC inner hash: a sum of products of
//! 32-bit words plus key words, for two different keys equal with
//! probability at most 2^-32 over the seed) over the key's nine 32-bit
//! words, then the 64-bit MurmurHash3 finaliser, masked to the table. The
//! 320-bit seed is random per agent start (a load-time global, never
//! exported), so a remote cannot aim a spoofed probe at the slot of a
//! contact it wants to erase: it can only flood at random.
//!
//! # Concurrency
//!
//! Several CPUs may write one slot; the egress program and the agent's
//! sweep change its outcome. One 64-bit [`ContactSlot::state`] word orders
//! them all: a sequence number (bits 8..64) and the outcome (bits 0..8).
//!
//! - A writer (XDP recording a contact, egress writing a marker) reads the
//!   state, claims the slot with a compare-and-swap to the next (odd:
//!   busy) sequence, writes key and time, then publishes with a second
//!   compare-and-swap to the next even sequence and the new outcome. A
//!   writer that finds the slot busy, or loses the claim twice, records
//!   nothing (`ReplyCounter::ContactErrors`): there is no waiting.
//! - A resolver (egress answering a contact, the sweep marking a
//!   no-answer) reads the state (even: stable), then the key (and time),
//!   and changes the outcome with a compare-and-swap from exactly the
//!   state it read. Any writer in between changed the sequence, so the
//!   swap fails: a torn or replaced slot is never resolved as the contact
//!   the resolver compared. Sequences only grow (2^55 writes per slot
//!   before they wrap).
//! - A plain reader (the agent reading one contact) reads
//!   state, key, time and state again and keeps the snapshot only if both
//!   states are equal and even (a sequence lock).
//!
//! The only check without a swap after it is XDP's repeat test (state,
//! then key): a torn read there can at worst skip recording a contact that
//! another CPU is overwriting at that instant.

use crate::{
    layout::assert_layout,
    trw::{ContactKey, DEFAULT_CONTACTS_CAPACITY},
};

/// Name of the marks table (host markers and outbound UDP flows).
pub const CONTACT_MARKS_MAP: &str = "CONTACT_MARKS";
/// Name of the load-time hash seed global ([`ContactSeed`]).
pub const CONTACT_SEED_GLOBAL: &str = "CONTACT_SEED";
/// Slots of the marks table (a power of two, fixed).
pub const DEFAULT_CONTACT_MARKS_CAPACITY: u32 = 16_384;
/// Index mask of the contact table.
pub const CONTACTS_MASK: u32 = DEFAULT_CONTACTS_CAPACITY - 1;
/// Index mask of the marks table.
pub const CONTACT_MARKS_MASK: u32 = DEFAULT_CONTACT_MARKS_CAPACITY - 1;
/// `BPF_F_MMAPABLE`: the array can be mapped into the agent's memory.
pub const BPF_F_MMAPABLE: u32 = 1024;

const _: () = assert!(DEFAULT_CONTACTS_CAPACITY.is_power_of_two());
const _: () = assert!(DEFAULT_CONTACT_MARKS_CAPACITY.is_power_of_two());
const _: () = assert!(core::mem::size_of::<ContactKey>() == KEY_WORDS * 4);
const _: () = assert!(core::mem::align_of::<ContactKey>() == 4);

/// One slot of a direct-mapped contact table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContactSlot {
    /// Sequence (bits 8..64; odd: a writer holds the slot; 0: never
    /// written) and outcome (bits 0..8, one of `trw::outcome`): see [`state`].
    pub state: u64,
    /// Kernel-clock ns of the first contact (0 for marks).
    pub first_ns: u64,
    /// The contact (or mark) this slot holds.
    pub key: ContactKey,
    /// Zero: pads the slot to one 64-byte cache line (the array's values
    /// start page-aligned), so a contact touches one line.
    pub reserved: [u32; 3],
}

assert_layout!(ContactSlot { state, first_ns, key, reserved }, size 64, align 8);

/// The state word of a [`ContactSlot`].
pub mod state {
    /// Outcome bits.
    pub const OUTCOME: u64 = 0xff;
    /// One step of the sequence.
    pub const SEQ_ONE: u64 = 1 << 8;

    /// The outcome (`trw::outcome`).
    #[inline(always)]
    pub const fn outcome(w: u64) -> u64 {
        w & OUTCOME
    }

    /// Never written.
    #[inline(always)]
    pub const fn empty(w: u64) -> bool {
        w < SEQ_ONE
    }

    /// A writer holds the slot (odd sequence).
    #[inline(always)]
    pub const fn busy(w: u64) -> bool {
        w & SEQ_ONE != 0
    }

    /// Holds a contact (or mark) that can be read: written and not busy.
    #[inline(always)]
    pub const fn stable(w: u64) -> bool {
        !empty(w) && !busy(w)
    }

    /// The state a writer claims from `w` (the next, odd, sequence).
    #[inline(always)]
    pub const fn claimed(w: u64) -> u64 {
        w.wrapping_add(SEQ_ONE)
    }

    /// The state a writer publishes from its claim `busy`: the next (even)
    /// sequence with `outcome`.
    #[inline(always)]
    pub const fn published(busy: u64, outcome: u64) -> u64 {
        (busy.wrapping_add(SEQ_ONE) & !OUTCOME) | (outcome & OUTCOME)
    }

    /// `w` with another outcome, the same sequence (a resolution).
    #[inline(always)]
    pub const fn with_outcome(w: u64, outcome: u64) -> u64 {
        (w & !OUTCOME) | (outcome & OUTCOME)
    }
}

/// The key of the slot hash, random per agent start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContactSeed {
    pub words: [u32; 10],
}

assert_layout!(ContactSeed { words }, size 40, align 4);

/// Words in a contact key.
pub const KEY_WORDS: usize = 9;

/// Word `i` (< [`KEY_WORDS`]; the last one otherwise) of `key`, in native
/// byte order: remote address (0..4), local address (4..8), port (8). One
/// aligned load from the key in memory: the programs keep no copy.
#[inline(always)]
pub fn key_word(key: &ContactKey, i: usize) -> u32 {
    let i = if i < KEY_WORDS { i } else { KEY_WORDS - 1 };
    // SAFETY: ContactKey is repr(C), 36 bytes without padding and 4-byte
    // aligned: word i < 9 lies inside it, aligned; any bits are a u32.
    unsafe { core::ptr::from_ref(key).cast::<u32>().add(i).read() }
}

/// The slot of `key` in a table of `mask + 1` slots, with the seed's
/// words read through `seed` (the programs read them one at a time from
/// their load-time global).
#[inline(always)]
pub fn slot_of(seed: impl Fn(usize) -> u32, key: &ContactKey, mask: u32) -> u32 {
    let nh = |i: usize| {
        let b = if i + 1 < KEY_WORDS {
            key_word(key, i + 1)
        } else {
            0
        };
        u64::from(key_word(key, i).wrapping_add(seed(i)))
            .wrapping_mul(u64::from(b.wrapping_add(seed(i + 1))))
    };
    let mut h = nh(0)
        .wrapping_add(nh(2))
        .wrapping_add(nh(4))
        .wrapping_add(nh(6))
        .wrapping_add(nh(8));
    // MurmurHash3 fmix64.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h as u32) & mask
}

impl ContactSeed {
    pub const ZERO: Self = Self { words: [0; 10] };

    /// The slot of `key` in a table of `mask + 1` slots: [`slot_of`] with
    /// this seed.
    #[inline(always)]
    pub fn slot(&self, key: &ContactKey, mask: u32) -> u32 {
        slot_of(|i| self.words[i], key, mask)
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, without padding, valid for any bit pattern.
    unsafe impl aya::Pod for super::ContactSlot {}
    unsafe impl aya::Pod for super::ContactSeed {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trw::outcome;

    #[test]
    fn state_word_steps() {
        let w = 0;
        assert!(state::empty(w) && !state::busy(w) && !state::stable(w));
        let b = state::claimed(w);
        assert!(state::busy(b) && !state::stable(b));
        let p = state::published(b, outcome::PENDING);
        assert!(state::stable(p));
        assert_eq!(state::outcome(p), outcome::PENDING);
        let r = state::with_outcome(p, outcome::FAILURE);
        assert_eq!((state::outcome(r), r >> 8), (outcome::FAILURE, p >> 8));
        // A rewrite of a resolved slot: a new sequence, pending again.
        let p2 = state::published(state::claimed(r), outcome::PENDING);
        assert_eq!((p2 >> 8, state::outcome(p2)), (4, outcome::PENDING));
        assert!(p2 != p, "a resolver holding the old state fails its swap");
    }

    #[test]
    fn slots_spread_and_depend_on_the_seed() {
        let seed = ContactSeed {
            words: [7, 11, 13, 17, 19, 23, 29, 31, 37, 41],
        };
        let mut used = std::collections::HashSet::new();
        // 4,096 ports of one host from one source into 65,536 slots.
        for port in 0..4096u32 {
            let key = ContactKey {
                remote: [1; 16],
                local: [2; 16],
                port: port | 0x1_0000,
            };
            used.insert(seed.slot(&key, CONTACTS_MASK));
        }
        // Expected distinct slots: 65,536 * (1 - e^(-4096/65536)) = 3,969.
        assert!(used.len() > 3_900, "{}", used.len());
        let key = ContactKey::default();
        let other = ContactSeed {
            words: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        };
        let differ = (0..64u32)
            .filter(|&p| {
                let k = ContactKey { port: p, ..key };
                seed.slot(&k, CONTACTS_MASK) != other.slot(&k, CONTACTS_MASK)
            })
            .count();
        assert!(differ > 60, "{differ}");
    }
}
