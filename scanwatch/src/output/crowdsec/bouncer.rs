//! The bouncer: pulls the Local API's decision stream and applies its ban
//! decisions to the XDP blocklist as CrowdSec claims (apart from the
//! agent's own blocks), with their remaining duration as the kernel expiry.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use ipnet::IpNet;
use scanwatch_common::block_origin;
use serde::Serialize;
use tokio::sync::mpsc;

use super::client::{Decision, Lapi, LapiError, Stream, go_duration};
use crate::{
    config::CrowdsecConfig,
    output::mitigation::{BlockError, Mitigation, host_net},
};

/// Origins exported as a label as they are; any other is `other`.
pub const ORIGINS: [&str; 7] = [
    "crowdsec",
    "cscli",
    "cscli-import",
    "CAPI",
    "lists",
    "console",
    "appsec",
];

/// The `origin` label of a decision's origin (bounded).
pub fn origin_label(origin: &str) -> &'static str {
    ORIGINS
        .iter()
        .find(|o| o.eq_ignore_ascii_case(origin))
        .copied()
        .unwrap_or("other")
}

/// Why a decision was not applied (the `reason` label).
pub const SKIP_REASONS: [&str; 6] = [
    "type",
    "scope",
    "origin",
    "invalid",
    "never_block",
    "blocklist_full",
];

/// One pull's outcome, sent by the pulling task to the agent's loop.
#[derive(Debug)]
pub struct Pull {
    pub startup: bool,
    pub result: Result<Stream, LapiError>,
}

/// A decision in force.
#[derive(Clone, Debug)]
struct Active {
    until: Instant,
    origin: &'static str,
}

/// What the bouncer has done, for metrics and `status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BouncerStats {
    /// Pulls by result (`ok`, `unreachable`, `unauthorized`, `error`).
    pub pulls: BTreeMap<&'static str, u64>,
    /// Decisions skipped by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    pub applied: u64,
    pub removed: u64,
    /// Decisions in force by origin.
    pub active: BTreeMap<&'static str, u64>,
    /// Unix seconds of the last successful pull.
    pub last_success: Option<f64>,
    /// The last pull's error (cleared by a success).
    pub last_error: Option<String>,
}

/// The decisions applied, by network and decision id.
pub struct Bouncer {
    cfg: CrowdsecConfig,
    by_net: BTreeMap<IpNet, BTreeMap<i64, Active>>,
    pub stats: BouncerStats,
}

impl Bouncer {
    pub fn new(cfg: CrowdsecConfig) -> Self {
        Self {
            cfg,
            by_net: BTreeMap::new(),
            stats: BouncerStats::default(),
        }
    }

    /// The network a decision covers, or why it is skipped.
    fn target(&self, d: &Decision) -> Result<IpNet, &'static str> {
        if !self
            .cfg
            .decision_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&d.kind))
        {
            return Err("type");
        }
        if !self
            .cfg
            .scopes
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&d.scope))
        {
            return Err("scope");
        }
        if !self.cfg.origins.is_empty()
            && !self
                .cfg
                .origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(&d.origin))
        {
            return Err("origin");
        }
        if d.scope.eq_ignore_ascii_case("ip") {
            d.value
                .parse::<IpAddr>()
                .map(host_net)
                .map_err(|_| "invalid")
        } else {
            d.value
                .parse::<IpNet>()
                .map(|n| match (n, host_net(n.addr())) {
                    // An IPv4-mapped range is its IPv4 range.
                    (IpNet::V6(v6), IpNet::V4(v4)) if v6.prefix_len() >= 96 => {
                        IpNet::new(IpAddr::V4(v4.addr()), v6.prefix_len() - 96).unwrap_or(n)
                    }
                    _ => n,
                })
                .map(|n| n.trunc())
                .map_err(|_| "invalid")
        }
    }

    fn skip(&mut self, reason: &'static str) {
        *self.stats.skipped.entry(reason).or_default() += 1;
    }

    /// Applies one pull: a startup pull is the whole set (whatever it lacks
    /// is lifted), a later one the changes since the previous.
    pub fn apply(&mut self, pull: Pull, m: &mut Mitigation) {
        let stream = match pull.result {
            Ok(s) => s,
            Err(e) => {
                *self.stats.pulls.entry(e.kind()).or_default() += 1;
                self.stats.last_error = Some(e.to_string());
                return;
            }
        };
        *self.stats.pulls.entry("ok").or_default() += 1;
        self.stats.last_error = None;
        self.stats.last_success = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64());
        let now = Instant::now();
        if pull.startup {
            self.by_net.clear();
        }
        let mut touched: Vec<IpNet> = Vec::new();
        for d in stream.deleted.unwrap_or_default() {
            if let Ok(net) = self.target(&d)
                && let Some(ids) = self.by_net.get_mut(&net)
                && ids.remove(&d.id).is_some()
            {
                touched.push(net);
            }
        }
        for d in stream.new.unwrap_or_default() {
            let net = match self.target(&d) {
                Ok(net) => net,
                Err(reason) => {
                    self.skip(reason);
                    continue;
                }
            };
            let Some(Some(left)) = go_duration(&d.duration) else {
                // Over already (or not a duration): nothing to enforce.
                if go_duration(&d.duration).is_none() {
                    self.skip("invalid");
                }
                continue;
            };
            self.by_net.entry(net).or_default().insert(
                d.id,
                Active {
                    until: now + left,
                    origin: origin_label(&d.origin),
                },
            );
            touched.push(net);
        }
        if pull.startup {
            // Claims from before (a reused blocklist, or a reconnect) that
            // the Local API no longer has.
            touched.extend(m.crowdsec_nets());
        }
        touched.sort_unstable();
        touched.dedup();
        for net in touched {
            self.enforce(net, now, m);
        }
        self.count_active(now);
    }

    /// Puts `net`'s longest decision into the blocklist, or lifts
    /// CrowdSec's claim when none is left.
    fn enforce(&mut self, net: IpNet, now: Instant, m: &mut Mitigation) {
        let longest = self
            .by_net
            .get(&net)
            .and_then(|ids| {
                ids.values()
                    .filter(|a| a.until > now)
                    .max_by_key(|a| a.until)
            })
            .cloned();
        let Some(Active { until, origin }) = longest else {
            self.by_net.remove(&net);
            if m.unblock_crowdsec(net).is_ok() {
                self.stats.removed += 1;
            }
            return;
        };
        let ttl: Duration = until - now;
        let reason = format!("crowdsec ({origin})");
        let skipped = match m.block(net, Some(ttl), block_origin::CROWDSEC, &reason) {
            Ok(_) => {
                self.stats.applied += 1;
                return;
            }
            Err(BlockError::NeverBlock(..)) => "never_block",
            Err(BlockError::Full(..)) => "blocklist_full",
            Err(e) => {
                log::warn!("CrowdSec decision on {net}: {e}");
                "invalid"
            }
        };
        // Not enforced: not counted as active (a startup pull tries again).
        if let Some(ids) = self.by_net.remove(&net) {
            for _ in ids {
                self.skip(skipped);
            }
        }
    }

    /// Forgets decisions past their expiry (the kernel stopped dropping).
    fn count_active(&mut self, now: Instant) {
        self.by_net.retain(|_, ids| {
            ids.retain(|_, a| a.until > now);
            !ids.is_empty()
        });
        let mut active: BTreeMap<&'static str, u64> = BTreeMap::new();
        for ids in self.by_net.values() {
            for a in ids.values() {
                *active.entry(a.origin).or_default() += 1;
            }
        }
        self.stats.active = active;
    }

    /// Every second: expired decisions leave the counts.
    pub fn tick(&mut self) {
        self.count_active(Instant::now());
    }
}

/// Pulls the stream every `update_frequency_seconds`; after an error it
/// retries with a doubling delay (up to a minute) and a startup pull. Logs
/// the first error of a run of failures, then every 10 minutes.
pub async fn pull_loop(lapi: Lapi, api_key: String, cfg: CrowdsecConfig, tx: mpsc::Sender<Pull>) {
    let every = Duration::from_secs(cfg.update_frequency_seconds);
    let mut startup = true;
    let mut delay = every;
    let mut last_log: Option<Instant> = None;
    loop {
        let result = lapi
            .stream(&api_key, startup, &cfg.scopes, &cfg.origins)
            .await;
        let failed = result.is_err();
        match &result {
            Ok(_) => {
                if last_log.take().is_some() {
                    log::info!("CrowdSec LAPI {} reachable again", lapi.url());
                }
                delay = every;
            }
            Err(e) => {
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(600)) {
                    log::error!("{e} (blocks received so far stay enforced; retrying)");
                    last_log = Some(Instant::now());
                }
            }
        }
        if tx.send(Pull { startup, result }).await.is_err() {
            return;
        }
        if failed {
            startup = true;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(60)).max(every);
        } else {
            startup = false;
            tokio::time::sleep(every).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(kind: &str, scope: &str, origin: &str, value: &str) -> Decision {
        Decision {
            id: 1,
            duration: "1m".into(),
            origin: origin.into(),
            scenario: "x".into(),
            scope: scope.into(),
            kind: kind.into(),
            value: value.into(),
        }
    }

    #[test]
    fn which_decisions_apply() {
        let b = Bouncer::new(CrowdsecConfig {
            origins: vec!["cscli".into(), "crowdsec".into()],
            ..CrowdsecConfig::default()
        });
        let t = |k, s, o, v| b.target(&decision(k, s, o, v)).map(|n| n.to_string());
        assert_eq!(
            t("ban", "Ip", "cscli", "198.18.0.5"),
            Ok("198.18.0.5/32".into())
        );
        assert_eq!(
            t("ban", "ip", "crowdsec", "fd00::5"),
            Ok("fd00::5/128".into())
        );
        assert_eq!(
            t("ban", "Ip", "cscli", "::ffff:198.18.0.5"),
            Ok("198.18.0.5/32".into()),
            "IPv4-mapped"
        );
        assert_eq!(
            t("ban", "Range", "cscli", "198.18.7.9/24"),
            Ok("198.18.7.0/24".into())
        );
        assert_eq!(
            t("ban", "Range", "cscli", "::ffff:198.18.7.0/120"),
            Ok("198.18.7.0/24".into())
        );
        assert_eq!(t("captcha", "Ip", "cscli", "198.18.0.5"), Err("type"));
        assert_eq!(t("ban", "Country", "cscli", "FR"), Err("scope"));
        assert_eq!(t("ban", "Ip", "CAPI", "198.18.0.5"), Err("origin"));
        assert_eq!(t("ban", "Ip", "cscli", "198.18.0.500"), Err("invalid"));
        assert_eq!(t("ban", "Range", "cscli", "198.18.0.0/33"), Err("invalid"));
        assert_eq!(origin_label("CAPI"), "CAPI");
        assert_eq!(origin_label("capi"), "CAPI");
        assert_eq!(origin_label("my-feed"), "other");
    }
}
