//! One actor behind several addresses: decoy scans (`nmap -D`). A decoy
//! scan sends every probe from each decoy address and the real one, one
//! after the other: the sources cross their thresholds within milliseconds
//! of each other, probe the same ports in the same order, and their probes
//! carry the same tool signature. Sources whose first alerts agree on all
//! three are one group. Only sources whose probes all matched a scanning
//! tool's signature are compared: spoofed sources of a flood, whose fields
//! name no tool, never form a group.

use std::{
    collections::{BTreeSet, VecDeque},
    time::{Duration, Instant},
};

use scanwatch_common::{SourceKey, fingerprint};
use serde::Serialize;

/// First crossings at most this far apart can be one decoy scan.
pub const DECOY_SPAN: Duration = Duration::from_secs(2);
/// Fewest sample ports two members must both have probed.
const MIN_SHARED_PORTS: usize = 4;
/// Most recent first alerts kept to compare with (a bound, not a limit
/// on a group: a group forms within [`DECOY_SPAN`]).
const RECENT: usize = 256;
/// Most members an alert lists (`size` counts them all).
pub const MAX_LISTED: usize = 32;

/// The group an alert's source belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Unique within the agent's run.
    pub id: u64,
    /// `decoy`.
    pub kind: &'static str,
    /// Members' sources, this one included, in the order they were
    /// alerted (the first [`MAX_LISTED`]).
    pub members: Vec<String>,
    /// Members in all.
    pub size: usize,
}

/// A first alert, as the grouping compares it.
#[derive(Clone, Debug)]
struct Member {
    key: SourceKey,
    label: String,
    at: Instant,
    ports: BTreeSet<u16>,
    tool: u8,
    group: Option<u64>,
}

impl Member {
    /// Probes the same ports with the same tool signature.
    fn same_scan(&self, other: &Self) -> bool {
        let shared = self.ports.intersection(&other.ports).count();
        let larger = self.ports.len().max(other.ports.len());
        self.key != other.key
            && self.tool == other.tool
            && shared >= MIN_SHARED_PORTS
            && 4 * shared >= 3 * larger
            && self.at.max(other.at) - self.at.min(other.at) <= DECOY_SPAN
    }
}

/// Recent first alerts and the groups found among them.
#[derive(Default)]
pub struct DecoyGroups {
    recent: VecDeque<Member>,
    next_id: u64,
}

impl DecoyGroups {
    /// Adds a source's first alert (its sample ports, the kernel's
    /// `crossed` word for the tool signatures, when it first crossed).
    pub fn observe(
        &mut self,
        key: SourceKey,
        label: String,
        sample_ports: &[u16],
        crossed: u64,
        at: Instant,
    ) {
        while self
            .recent
            .front()
            .is_some_and(|m| at.saturating_duration_since(m.at) > DECOY_SPAN)
            || self.recent.len() >= RECENT
        {
            self.recent.pop_front();
        }
        let mut member = Member {
            key,
            label,
            at,
            ports: sample_ports.iter().copied().collect(),
            tool: fingerprint::consistent(crossed),
            group: None,
        };
        if member.tool & !fingerprint::OS_STACK == 0 {
            return; // no scanning tool named: nothing to compare
        }
        let peers: Vec<usize> = (0..self.recent.len())
            .filter(|i| self.recent[*i].same_scan(&member))
            .collect();
        if peers.is_empty() {
            self.recent.push_back(member);
            return;
        }
        let id = match peers.iter().find_map(|i| self.recent[*i].group) {
            Some(id) => id,
            None => {
                self.next_id += 1;
                self.next_id
            }
        };
        for i in peers {
            self.recent[i].group.get_or_insert(id);
        }
        member.group = Some(id);
        self.recent.push_back(member);
    }

    /// The group of `key`, as known now.
    pub fn group_of(&self, key: &SourceKey) -> Option<Group> {
        let id = self.recent.iter().find(|m| m.key == *key)?.group?;
        let members = self.recent.iter().filter(|m| m.group == Some(id));
        Some(Group {
            id,
            kind: "decoy",
            size: members.clone().count(),
            members: members.take(MAX_LISTED).map(|m| m.label.clone()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use scanwatch_common::fingerprint::{NMAP, OS_STACK, tally_bits};

    use super::*;

    fn key(last: u8) -> SourceKey {
        SourceKey::v4([198, 18, 0, last])
    }

    #[test]
    fn a_group_lists_at_most_max_listed_members() {
        let mut g = DecoyGroups::default();
        let t0 = Instant::now();
        let ports: Vec<u16> = (1..=16).collect();
        for last in 0..100u8 {
            g.observe(
                key(last),
                format!("198.18.0.{last}"),
                &ports,
                tally_bits(NMAP),
                t0,
            );
        }
        let group = g.group_of(&key(99)).expect("grouped");
        assert_eq!((group.members.len(), group.size), (MAX_LISTED, 100));
    }

    #[test]
    fn sources_probing_the_same_ports_at_once_with_one_tool_are_one_group() {
        let mut g = DecoyGroups::default();
        let t0 = Instant::now();
        let ports: Vec<u16> = (1..=16).collect();
        let nmap = tally_bits(NMAP);
        for (i, last) in [41u8, 42, 43].iter().enumerate() {
            let at = t0 + Duration::from_millis(i as u64);
            g.observe(key(*last), format!("198.18.0.{last}"), &ports, nmap, at);
        }
        // Another scan: other ports; and the same ports by another tool.
        g.observe(key(50), "198.18.0.50".into(), &[7, 8, 9, 10, 11], nmap, t0);
        g.observe(key(51), "198.18.0.51".into(), &ports, tally_bits(0), t0);
        g.observe(
            key(52),
            "198.18.0.52".into(),
            &ports,
            tally_bits(OS_STACK),
            t0,
        );
        let group = g.group_of(&key(41)).expect("grouped");
        assert_eq!(group.kind, "decoy");
        assert_eq!(
            group.members,
            vec!["198.18.0.41", "198.18.0.42", "198.18.0.43"]
        );
        assert_eq!(g.group_of(&key(43)), Some(group));
        assert_eq!(g.group_of(&key(50)), None);
        assert_eq!(g.group_of(&key(51)), None);
        assert_eq!(g.group_of(&key(52)), None);
        assert_eq!(g.group_of(&key(41)).map(|g| g.size), Some(3));
        // Too far apart in time: not the same scan.
        g.observe(
            key(60),
            "198.18.0.60".into(),
            &ports,
            nmap,
            t0 + DECOY_SPAN + Duration::from_secs(1),
        );
        assert_eq!(g.group_of(&key(60)), None);
    }
}
