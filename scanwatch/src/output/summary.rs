//! The periodic summary line the agent logs per interface.

use std::collections::BTreeMap;

use scanwatch_common::{Counter, IfaceCounters, ProbeKind};

/// Remembers the previous counters to log changes per interval.
#[derive(Default)]
pub struct Summary {
    previous: BTreeMap<u32, IfaceCounters>,
}

impl Summary {
    /// One line per watched interface (`names`): totals and what changed
    /// since the last call.
    pub fn lines(
        &mut self,
        counters: &BTreeMap<u32, IfaceCounters>,
        names: &BTreeMap<u32, String>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for (ifindex, name) in names {
            let now = counters
                .get(ifindex)
                .copied()
                .unwrap_or(IfaceCounters::ZERO);
            let before = self
                .previous
                .get(ifindex)
                .copied()
                .unwrap_or(IfaceCounters::ZERO);
            let delta = |c: Counter| now.get(c).saturating_sub(before.get(c));
            let probes = ProbeKind::ALL
                .iter()
                .map(|k| Counter::probe(*k))
                .map(|c| format!("{}=+{}", c.name(), delta(c)))
                .collect::<Vec<_>>()
                .join(" ");
            let errors = [
                Counter::Truncated,
                Counter::Malformed,
                Counter::Ipv6ExtChainTooLong,
            ]
            .iter()
            .map(|c| format!("{}=+{}", c.name(), delta(*c)))
            .collect::<Vec<_>>()
            .join(" ");
            out.push(format!(
                "{name}: {} packets (+{}); probes {probes}; new sources +{}; unparsed {errors}",
                now.get(Counter::Packets),
                delta(Counter::Packets),
                delta(Counter::SourcesCreated),
            ));
        }
        self.previous.clone_from(counters);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_deltas() {
        let mut s = Summary::default();
        let names = BTreeMap::from([(3, "veth0".to_string())]);
        let mut c = IfaceCounters::ZERO;
        c.counters[Counter::Packets as usize] = 10;
        c.counters[Counter::ProbeSyn as usize] = 4;
        let first = s.lines(&BTreeMap::from([(3, c)]), &names);
        assert!(
            first[0].starts_with("veth0: 10 packets (+10)"),
            "{}",
            first[0]
        );
        assert!(first[0].contains("syn=+4"));
        c.counters[Counter::Packets as usize] = 15;
        let second = s.lines(&BTreeMap::from([(3, c)]), &names);
        assert!(second[0].contains("15 packets (+5)"), "{}", second[0]);
        assert!(second[0].contains("syn=+0"));
    }
}
