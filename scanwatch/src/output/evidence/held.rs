//! Evidence records that arrived before their source's alert was written:
//! held in a small bounded buffer (per source at most the budget, in total
//! at most [`MAX_HELD`]) until the alert takes them or they expire. No I/O.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use scanwatch_common::{SourceKey, evidence::EvidenceRecord};

/// Records held at most, over all sources (168 bytes each: ~700 KB).
pub const MAX_HELD: usize = 4096;
/// A held record is dropped after this long without an alert for its source.
pub const HOLD_FOR: Duration = Duration::from_secs(5);

/// Why a held record was not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its source already has `budget` records held.
    SourceFull,
    /// The buffer holds [`MAX_HELD`] records.
    Full,
}

/// The held records, per source, oldest first.
#[derive(Debug)]
pub struct Held {
    budget: usize,
    capacity: usize,
    by_source: HashMap<SourceKey, VecDeque<(Instant, EvidenceRecord)>>,
    len: usize,
}

impl Held {
    /// At most `budget` records a source, `capacity` in all.
    pub fn new(budget: u32, capacity: usize) -> Self {
        Self {
            budget: budget as usize,
            capacity,
            by_source: HashMap::new(),
            len: 0,
        }
    }

    /// Records held now.
    pub const fn len(&self) -> usize {
        self.len
    }

    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Holds `record`, which arrived at `now`.
    pub fn push(&mut self, record: EvidenceRecord, now: Instant) -> Result<(), Refused> {
        if self.len >= self.capacity {
            return Err(Refused::Full);
        }
        let queue = self.by_source.entry(record.source).or_default();
        if queue.len() >= self.budget {
            return Err(Refused::SourceFull);
        }
        queue.push_back((now, record));
        self.len += 1;
        Ok(())
    }

    /// Takes the records of `source` stamped in `window` (kernel-clock ns,
    /// start inclusive, end exclusive), oldest first; returns them and how
    /// many other records of that source were dropped (another window).
    pub fn take(
        &mut self,
        source: &SourceKey,
        window: std::ops::Range<u64>,
    ) -> (Vec<EvidenceRecord>, usize) {
        let Some(queue) = self.by_source.remove(source) else {
            return (Vec::new(), 0);
        };
        self.len -= queue.len();
        let total = queue.len();
        let mut taken: Vec<EvidenceRecord> = queue
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| window.contains(&r.time_ns))
            .collect();
        taken.sort_by_key(|r| r.time_ns);
        let other = total - taken.len();
        (taken, other)
    }

    /// Drops the records held longer than `hold_for` at `now`; returns how many.
    pub fn expire(&mut self, now: Instant, hold_for: Duration) -> usize {
        let mut dropped = 0;
        self.by_source.retain(|_, queue| {
            while queue
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= hold_for)
            {
                queue.pop_front();
                dropped += 1;
            }
            !queue.is_empty()
        });
        self.len -= dropped;
        dropped
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use scanwatch_common::evidence::EVIDENCE_BYTES;

    use super::*;

    pub(crate) fn record(last: u8, time_ns: u64) -> EvidenceRecord {
        EvidenceRecord {
            source: SourceKey::v4([198, 18, 0, last]),
            time_ns,
            ifindex: 2,
            frame_len: 60,
            captured: 60,
            _pad: 0,
            bytes: [0; EVIDENCE_BYTES],
        }
    }

    #[test]
    fn bounded_per_source_and_in_total() {
        let now = Instant::now();
        let mut held = Held::new(3, 5);
        for t in 0..3 {
            held.push(record(1, t), now).unwrap();
        }
        assert_eq!(held.push(record(1, 9), now), Err(Refused::SourceFull));
        held.push(record(2, 0), now).unwrap();
        held.push(record(2, 1), now).unwrap();
        assert_eq!(held.push(record(3, 0), now), Err(Refused::Full));
        assert_eq!(held.len(), 5);
    }

    #[test]
    fn take_keeps_the_window_and_orders_by_time() {
        let now = Instant::now();
        let mut held = Held::new(8, 100);
        for t in [25, 12, 10, 40, 5] {
            held.push(record(1, t), now).unwrap();
        }
        held.push(record(2, 11), now).unwrap();
        let (taken, other) = held.take(&SourceKey::v4([198, 18, 0, 1]), 10..30);
        let times: Vec<u64> = taken.iter().map(|r| r.time_ns).collect();
        assert_eq!(times, [10, 12, 25]);
        assert_eq!(other, 2, "5 (an earlier window) and 40 (a later one)");
        assert_eq!(held.len(), 1, "the other source stays");
        assert_eq!(
            held.take(&SourceKey::v4([198, 18, 0, 1]), 0..100),
            (Vec::new(), 0)
        );
    }

    #[test]
    fn records_expire() {
        let t0 = Instant::now();
        let mut held = Held::new(8, 100);
        held.push(record(1, 1), t0).unwrap();
        held.push(record(1, 2), t0 + Duration::from_secs(3))
            .unwrap();
        held.push(record(2, 1), t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(held.expire(t0 + Duration::from_secs(4), HOLD_FOR), 0);
        assert_eq!(held.expire(t0 + Duration::from_secs(6), HOLD_FOR), 2);
        assert_eq!(held.len(), 1);
        assert_eq!(held.expire(t0 + Duration::from_secs(8), HOLD_FOR), 1);
        assert!(held.is_empty());
        // Room again after expiry.
        held.push(record(1, 3), t0).unwrap();
    }
}
