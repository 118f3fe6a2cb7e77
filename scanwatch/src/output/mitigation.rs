//! Mitigation policy: what to block, for how long, what never to block, and
//! the feeds; the kernel maps it writes are `kernel::block_maps`. The
//! kernel enforces expiries by itself; the agent removes expired entries
//! too, and keeps the count the kernel uses to skip lookups while nothing is
//! blocked, and the prefilter that skips them for sources nothing covers
//! (bits set as entries come, rebuilt from what is left after removals).

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use ipnet::IpNet;
use scanwatch_common::{BlockValue, FeedValue, MitigationState, block_origin, feed_action};
use serde::Serialize;

use super::feeds;
use crate::{
    config::{FeedAction, FeedConfig, MitigationConfig},
    kernel::block_maps::{BlockMapError, BlockMaps, host_key},
    model::{KernelClock, ScanType, kernel_now_ns},
};

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("{0} is in never_block ({1}): it is never blocked")]
    NeverBlock(IpNet, IpNet),
    #[error("the blocklist is full ({0} entries): {1} not blocked")]
    Full(u32, IpNet),
    #[error("{0} is not blocked")]
    NotBlocked(IpNet),
    #[error("{0} is blocked by a CrowdSec decision only: remove it there (cscli decisions delete)")]
    CrowdsecOnly(IpNet),
    #[error(transparent)]
    Map(#[from] BlockMapError),
}

/// A host route for an address.
pub fn host_net(ip: IpAddr) -> IpNet {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    IpNet::from(ip)
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// One block, as `scanwatch blocks` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, serde::Deserialize)]
pub struct BlockRow {
    pub target: String,
    pub origin: String,
    pub reason: String,
    /// Seconds left (`null`: no expiry).
    pub remaining_seconds: Option<u64>,
    pub expires: Option<String>,
    pub offenses: u32,
}

/// Per-feed figures for metrics and `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FeedStats {
    pub entries: u64,
    pub invalid_lines_total: u64,
    pub action: String,
}

/// Counters of the mitigation side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MitigationStats {
    pub blocked_sources: u64,
    pub blocks_made: u64,
    pub blocklist_full: u64,
    pub never_block_refusals: u64,
    pub expired_removed: u64,
}

/// The outcome of a detection for mitigation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Blocked {
        expires: String,
    },
    WouldBlock {
        expires: String,
    },
    /// In never_block: alerted, not blocked.
    NeverBlock,
    /// The blocklist was full: alerted, not blocked (counted).
    BlocklistFull,
}

impl Action {
    /// An alert's `action`, `block_expires` and `not_blocked` for this
    /// action.
    pub fn alert_fields(self) -> (&'static str, Option<String>, Option<&'static str>) {
        let name = self.name();
        match self {
            Self::Blocked { expires } | Self::WouldBlock { expires } => (name, Some(expires), None),
            Self::NeverBlock => (name, None, Some("never_block")),
            Self::BlocklistFull => (name, None, Some("blocklist_full")),
            Self::None => (name, None, None),
        }
    }

    pub const fn name(&self) -> &'static str {
        match self {
            Self::None | Self::NeverBlock | Self::BlocklistFull => "none",
            Self::Blocked { .. } => "blocked",
            Self::WouldBlock { .. } => "would_block",
        }
    }
}

/// Who wants a network blocked: the agent itself (detections and manual
/// blocks) and CrowdSec's decisions, kept apart so that lifting one never
/// lifts the other. The kernel holds one entry per network, the union of
/// both (the later expiry; no expiry wins).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Claims {
    local: Option<BlockValue>,
    crowdsec: Option<BlockValue>,
}

const fn live(v: &BlockValue, now: u64) -> bool {
    v.expires_ns == 0 || v.expires_ns > now
}

/// The later of two expiries (0: never).
const fn later(a: &BlockValue, b: &BlockValue) -> bool {
    a.expires_ns == 0 || (b.expires_ns != 0 && a.expires_ns >= b.expires_ns)
}

impl Claims {
    /// What the kernel enforces: the claim that lasts longer.
    fn merged(&self, now: u64) -> Option<BlockValue> {
        let local = self.local.filter(|v| live(v, now));
        let crowdsec = self.crowdsec.filter(|v| live(v, now));
        match (local, crowdsec) {
            (Some(l), Some(c)) => Some(if later(&l, &c) { l } else { c }),
            (l, c) => l.or(c),
        }
    }

    fn of(value: BlockValue) -> Self {
        if value.origin == block_origin::CROWDSEC {
            Self {
                local: None,
                crowdsec: Some(value),
            }
        } else {
            Self {
                local: Some(value),
                crowdsec: None,
            }
        }
    }

    const fn is_empty(&self) -> bool {
        self.local.is_none() && self.crowdsec.is_none()
    }
}

pub struct Mitigation {
    cfg: MitigationConfig,
    /// Each blocked network's claims (its kernel entry is their union).
    claims: BTreeMap<IpNet, Claims>,
    maps: BlockMaps,
    never_nets: Vec<IpNet>,
    /// The blocklist's entries, mirrored (read once at start, then kept in
    /// step): exact-key checks and counts without walking the trie.
    mirror: BTreeMap<IpNet, BlockValue>,
    /// Single addresses in `mirror` (kept as it changes: a count per
    /// block would walk the mirror each time).
    host_blocks: usize,
    /// Feed entries loaded, by network (feed id, action).
    loaded_feeds: BTreeMap<IpNet, (u32, u32)>,
    pub feed_stats: BTreeMap<String, FeedStats>,
    pub stats: MitigationStats,
}

impl Mitigation {
    /// Takes over the mitigation maps (the blocklist may be a reused pin,
    /// whose blocks are kept) and sets the never-block networks.
    pub fn new(
        maps: BlockMaps,
        cfg: MitigationConfig,
        never_block: Vec<IpNet>,
    ) -> Result<Self, BlockError> {
        let mut m = Self {
            maps,
            cfg,
            never_nets: Vec::new(),
            mirror: BTreeMap::new(),
            claims: BTreeMap::new(),
            host_blocks: 0,
            loaded_feeds: BTreeMap::new(),
            feed_stats: BTreeMap::new(),
            stats: MitigationStats::default(),
        };
        for net in &never_block {
            m.maps.insert_never(net)?;
        }
        m.never_nets = never_block;
        m.mirror = m.maps.blocks().into_iter().collect();
        // A reused blocklist: each entry is its origin's claim (CrowdSec's
        // are reconciled by the bouncer's first pull).
        m.claims = m.mirror.iter().map(|(n, v)| (*n, Claims::of(*v))).collect();
        m.host_blocks = m.mirror.keys().filter(|n| host_key(n).is_some()).count();
        m.expire();
        // A reused blocklist's networks go into this load's prefilter first.
        m.maps.prefilter_rebuild(m.mirror.keys())?;
        // A reused blocklist's host entries go into this load's exact map.
        let hosts: Vec<(IpNet, BlockValue)> = m
            .mirror
            .iter()
            .filter(|(net, _)| host_key(net).is_some())
            .map(|(net, v)| (*net, *v))
            .collect();
        for (net, value) in hosts {
            m.maps.store_host(&net, value)?;
        }
        m.sync_state()?;
        Ok(m)
    }

    pub const fn config(&self) -> &MitigationConfig {
        &self.cfg
    }

    pub fn never_block(&self) -> &[IpNet] {
        &self.never_nets
    }

    fn never_match(&self, net: &IpNet) -> Option<IpNet> {
        self.never_nets.iter().find(|n| overlaps(n, net)).copied()
    }

    fn count_blocks(&self) -> u32 {
        u32::try_from(self.mirror.len()).unwrap_or(u32::MAX)
    }

    /// Drops a network from the mirror.
    fn mirror_remove(&mut self, net: &IpNet) {
        if self.mirror.remove(net).is_some() && host_key(net).is_some() {
            self.host_blocks -= 1;
        }
    }

    /// Clears the prefilter bits no entry needs any more (after removals:
    /// a failure leaves bits set, which only costs lookups).
    fn rebuild_prefilter(&mut self) {
        let nets = self.mirror.keys().chain(self.loaded_feeds.keys());
        if let Err(e) = self.maps.prefilter_rebuild(nets) {
            log::warn!("prefilter rebuild: {e} (stale bits only cost lookups)");
        }
    }

    /// The prefilter as the kernel holds it (for figures and tests).
    pub fn prefilter(&self) -> &scanwatch_common::prefilter::Bitmap {
        self.maps.prefilter()
    }

    /// Tells the kernel which lookups it needs.
    fn sync_state(&mut self) -> Result<(), BlockError> {
        let blocks = self.count_blocks();
        self.stats.blocked_sources = u64::from(blocks);
        let host_blocks = u32::try_from(self.host_blocks).unwrap_or(u32::MAX);
        let drop_feeds = self
            .loaded_feeds
            .values()
            .filter(|(_, a)| *a == feed_action::DROP)
            .count();
        let tag_feeds = self.loaded_feeds.len() - drop_feeds;
        let state = MitigationState {
            net_blocks: blocks.saturating_sub(host_blocks),
            drop_feeds: u32::try_from(drop_feeds).unwrap_or(u32::MAX),
            tag_feeds: u32::try_from(tag_feeds).unwrap_or(u32::MAX),
            host_blocks,
            // Set by the maps: the prefilter is theirs.
            ..MitigationState::default()
        };
        Ok(self.maps.set_state(state)?)
    }

    /// Blocks `net` for `ttl` (None: until unblocked) for `origin`: a
    /// CrowdSec claim ([`block_origin::CROWDSEC`]) or the agent's own.
    pub fn block(
        &mut self,
        net: IpNet,
        ttl: Option<Duration>,
        origin: u32,
        reason: &str,
    ) -> Result<BlockValue, BlockError> {
        let net = net.trunc();
        let crowdsec = origin == block_origin::CROWDSEC;
        if let Some(never) = self.never_match(&net) {
            // A CrowdSec range holding a never_block address is applied (the
            // kernel spares that address); one never_block covers is not.
            if !crowdsec || never.contains(&net) {
                self.stats.never_block_refusals += 1;
                return Err(BlockError::NeverBlock(net, never));
            }
        }
        let now = kernel_now_ns();
        if !self.mirror.contains_key(&net) && self.count_blocks() >= self.cfg.capacity {
            self.stats.blocklist_full += 1;
            return Err(BlockError::Full(self.cfg.capacity, net));
        }
        let before = self.claims.get(&net).copied().unwrap_or_default();
        let existing = if crowdsec {
            before.crowdsec
        } else {
            before.local
        };
        let ttl_ns = ttl.map(|t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
        let mut reason_bytes = [0u8; 48];
        let r = reason.as_bytes();
        let mut n = r.len().min(48);
        while !reason.is_char_boundary(n) {
            n -= 1;
        }
        reason_bytes[..n].copy_from_slice(&r[..n]);
        let value = BlockValue {
            expires_ns: ttl_ns.map_or(0, |t| now.saturating_add(t)),
            created_ns: now,
            origin,
            offenses: existing
                .filter(|e| live(e, now))
                .map_or(1, |e| e.offenses.saturating_add(1)),
            reason: reason_bytes,
        };
        let mut claims = before;
        if crowdsec {
            claims.crowdsec = Some(value);
        } else {
            claims.local = Some(value);
        }
        self.claims.insert(net, claims);
        if let Err(e) = self.write(net) {
            if before.is_empty() {
                self.claims.remove(&net);
            } else {
                self.claims.insert(net, before);
            }
            return Err(e);
        }
        if !crowdsec {
            self.stats.blocks_made += 1;
        }
        Ok(value)
    }

    /// Puts the union of `net`'s claims into the kernel (or removes its
    /// entry when none is left).
    fn write(&mut self, net: IpNet) -> Result<(), BlockError> {
        let merged = self
            .claims
            .get(&net)
            .and_then(|c| c.merged(kernel_now_ns()));
        let Some(value) = merged else {
            self.claims.remove(&net);
            if self.mirror.contains_key(&net) {
                match self.maps.remove_block(&net) {
                    Ok(()) | Err(BlockMapError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                self.mirror_remove(&net);
                self.rebuild_prefilter();
            }
            return self.sync_state();
        };
        if self.mirror.get(&net) == Some(&value) {
            return Ok(());
        }
        match self.maps.insert_block(&net, value) {
            Ok(()) => {}
            Err(BlockMapError::Full(name)) if name == scanwatch_common::maps::BLOCKS_MAP => {
                self.stats.blocklist_full += 1;
                return Err(BlockError::Full(self.cfg.capacity, net));
            }
            Err(e) => {
                // The maps dropped the entry (both or neither): so does the mirror.
                self.mirror_remove(&net);
                self.claims.remove(&net);
                let _ = self.sync_state();
                return Err(e.into());
            }
        }
        if self.mirror.insert(net, value).is_none() && host_key(&net).is_some() {
            self.host_blocks += 1;
        }
        self.sync_state()
    }

    /// Lifts CrowdSec's claim on `net` (the agent's own block, if any, stays).
    pub fn unblock_crowdsec(&mut self, net: IpNet) -> Result<(), BlockError> {
        let net = net.trunc();
        match self.claims.get_mut(&net) {
            Some(c) if c.crowdsec.is_some() => c.crowdsec = None,
            _ => return Err(BlockError::NotBlocked(net)),
        }
        self.write(net)
    }

    /// The networks CrowdSec's claims cover.
    pub fn crowdsec_nets(&self) -> Vec<IpNet> {
        self.claims
            .iter()
            .filter(|(_, c)| c.crowdsec.is_some())
            .map(|(n, _)| *n)
            .collect()
    }

    /// The agent's own live block of exactly this network.
    fn exact(&self, net: &IpNet) -> Option<BlockValue> {
        let now = kernel_now_ns();
        self.claims
            .get(net)
            .and_then(|c| c.local)
            .filter(|v| live(v, now))
    }

    /// Blocks a detected source per the configuration; returns the action.
    pub fn on_detection(&mut self, net: IpNet, types: &[ScanType], clock: &KernelClock) -> Action {
        if !self.cfg.auto_block {
            return Action::None;
        }
        if self.never_match(&net).is_some() {
            self.stats.never_block_refusals += 1;
            return Action::NeverBlock;
        }
        let offenses = self.exact(&net).map_or(0, |e| e.offenses);
        let ttl = self.cfg.ttl_for(types, offenses);
        let expires_ns =
            kernel_now_ns().saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX));
        if self.cfg.dry_run {
            return Action::WouldBlock {
                expires: clock.rfc3339(expires_ns),
            };
        }
        let reason: Vec<&str> = types.iter().map(|t| t.name()).collect();
        match self.block(net, Some(ttl), block_origin::DETECTION, &reason.join("+")) {
            Ok(v) => Action::Blocked {
                expires: clock.rfc3339(v.expires_ns),
            },
            Err(BlockError::Full(..)) => {
                log::warn!(
                    "blocklist full ({} entries): {net} not blocked",
                    self.cfg.capacity
                );
                Action::BlocklistFull
            }
            Err(BlockError::NeverBlock(..)) => Action::NeverBlock,
            Err(e) => {
                log::error!("cannot block {net}: {e}");
                Action::None
            }
        }
    }

    /// The action already in force for a source (an escalation of a scan
    /// that is blocked reports `blocked`).
    pub fn current_action(&self, net: IpNet, clock: &KernelClock) -> Action {
        match self.exact(&net) {
            Some(v) if self.cfg.auto_block && !self.cfg.dry_run => Action::Blocked {
                expires: if v.expires_ns == 0 {
                    "never".into()
                } else {
                    clock.rfc3339(v.expires_ns)
                },
            },
            _ => Action::None,
        }
    }

    /// Removes the agent's own block (detection or manual); a CrowdSec
    /// decision on the same network stays.
    pub fn unblock(&mut self, net: IpNet) -> Result<(), BlockError> {
        let net = net.trunc();
        match self.claims.get_mut(&net) {
            Some(c) if c.local.is_some() => c.local = None,
            Some(c) if c.crowdsec.is_some() => return Err(BlockError::CrowdsecOnly(net)),
            _ => return Err(BlockError::NotBlocked(net)),
        }
        self.write(net)
    }

    /// Every live block.
    pub fn list(&self, clock: &KernelClock) -> Vec<BlockRow> {
        let now = kernel_now_ns();
        let mut rows: Vec<BlockRow> = self
            .claims
            .iter()
            .flat_map(|(net, c)| [(net, c.local), (net, c.crowdsec)])
            .filter_map(|(net, v)| Some((net, v?)))
            .filter(|(_, v)| live(v, now))
            .map(|(net, v)| BlockRow {
                target: net.to_string(),
                origin: match v.origin {
                    block_origin::DETECTION => "detection",
                    block_origin::MANUAL => "manual",
                    block_origin::CROWDSEC => "crowdsec",
                    _ => "unknown",
                }
                .to_string(),
                reason: scanwatch_common::maps::nul_padded(&v.reason),
                remaining_seconds: (v.expires_ns != 0)
                    .then(|| (v.expires_ns - now) / 1_000_000_000),
                expires: (v.expires_ns != 0).then(|| clock.rfc3339(v.expires_ns)),
                offenses: v.offenses,
            })
            .collect();
        rows.sort_by(|a, b| (&a.target, &a.origin).cmp(&(&b.target, &b.origin)));
        rows
    }

    /// Removes expired blocks (the kernel already ignores them), and
    /// expired claims under a longer one.
    pub fn expire(&mut self) {
        let now = kernel_now_ns();
        for c in self.claims.values_mut() {
            for claim in [&mut c.local, &mut c.crowdsec] {
                if claim.is_some_and(|v| !live(&v, now)) {
                    *claim = None;
                }
            }
        }
        let expired: Vec<IpNet> = self
            .mirror
            .iter()
            .filter(|(_, v)| !live(v, now))
            .map(|(net, _)| *net)
            .collect();
        for net in &expired {
            if self.maps.remove_block(net).is_ok() {
                self.stats.expired_removed += 1;
            }
            self.mirror_remove(net);
            self.claims.remove(net);
        }
        if !expired.is_empty() {
            self.rebuild_prefilter();
            let _ = self.sync_state();
        }
    }

    /// Loads (or reloads) every feed: entries of removed or changed feeds go,
    /// new ones come, blocks are untouched. Returns the bad lines, for logging.
    pub fn load_feeds(&mut self, feeds: &[FeedConfig]) -> Vec<String> {
        let mut report = Vec::new();
        let mut wanted: BTreeMap<IpNet, (u32, u32)> = BTreeMap::new();
        let mut stats = BTreeMap::new();
        for (i, f) in feeds.iter().enumerate() {
            let id = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let action = match f.action {
                FeedAction::Tag => feed_action::TAG,
                FeedAction::Drop => feed_action::DROP,
            };
            let _ = self.maps.set_feed_name(id, &f.name);
            let previous_invalid = self
                .feed_stats
                .get(&f.name)
                .map_or(0, |s| s.invalid_lines_total);
            let mut st = FeedStats {
                entries: 0,
                invalid_lines_total: previous_invalid,
                action: format!("{:?}", f.action).to_lowercase(),
            };
            match feeds::read(&f.name, &f.path) {
                Ok(parsed) => {
                    for bad in &parsed.bad {
                        report.push(format!(
                            "feed {}: {}:{}: not an address or CIDR: {:?}",
                            f.name,
                            f.path.display(),
                            bad.line,
                            bad.text
                        ));
                    }
                    st.invalid_lines_total += parsed.bad.len() as u64;
                    for net in parsed.nets {
                        // A drop entry wins over a tag entry for the same network.
                        let e = wanted.entry(net).or_insert((id, action));
                        if action == feed_action::DROP {
                            *e = (id, action);
                        }
                        st.entries += 1;
                    }
                }
                Err(e) => report.push(e.to_string()),
            }
            stats.insert(f.name.clone(), st);
        }
        // Entries no feed lists any more go first (room for new ones).
        for net in self.loaded_feeds.keys() {
            if !wanted.contains_key(net) {
                let _ = self.maps.remove_feed(net);
            }
        }
        let mut loaded = BTreeMap::new();
        for (net, (id, action)) in wanted {
            if self.loaded_feeds.get(&net) == Some(&(id, action)) {
                loaded.insert(net, (id, action));
                continue;
            }
            if loaded.len() >= self.cfg.feed_capacity as usize {
                report.push(format!(
                    "feed capacity {} reached: {net} and later entries not loaded",
                    self.cfg.feed_capacity
                ));
                break;
            }
            match self.maps.insert_feed(
                &net,
                FeedValue {
                    feed_id: id,
                    action,
                },
            ) {
                Ok(()) => {
                    loaded.insert(net, (id, action));
                }
                Err(e) => report.push(format!("feed entry {net}: {e}")),
            }
        }
        let removed = self.unload_stale_feeds(&mut loaded, &mut report);
        self.loaded_feeds = loaded;
        self.feed_stats = stats;
        if removed {
            self.rebuild_prefilter();
        }
        let _ = self.sync_state();
        report
    }

    /// Removes from the kernel the entries of the last load that this one
    /// did not load (no longer listed, past the capacity, or not updated):
    /// the feed trie holds exactly the entries counted, which the prefilter
    /// rebuild relies on. One that cannot be removed stays counted. Returns
    /// whether any went.
    fn unload_stale_feeds(
        &mut self,
        loaded: &mut BTreeMap<IpNet, (u32, u32)>,
        report: &mut Vec<String>,
    ) -> bool {
        let mut removed = false;
        for (net, value) in &self.loaded_feeds {
            if loaded.contains_key(net) {
                continue;
            }
            match self.maps.remove_feed(net) {
                Ok(()) | Err(BlockMapError::NotFound(_)) => removed = true,
                Err(e) => {
                    report.push(format!("feed entry {net}: {e}"));
                    loaded.insert(*net, *value);
                }
            }
        }
        removed
    }

    /// The name of feed `id`.
    pub fn feed_name(&self, id: u32) -> Option<String> {
        self.maps.feed_name(id)
    }
}

/// The never-block networks: loopback, link-local, this host's addresses
/// (if enabled) and the configured ones.
pub fn default_never_block(cfg: &MitigationConfig) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = ["127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    if cfg.never_block_host_addresses {
        nets.extend(host_addresses().into_iter().map(host_net));
    }
    nets.extend(cfg.never_block.iter().map(IpNet::trunc));
    nets.sort_unstable();
    nets.dedup();
    nets
}

/// Addresses configured on this network namespace's interfaces.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below; we only read it.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr of the family it names.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: family AF_INET means sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: family AF_INET6 means sockaddr_in6.
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: freeing the list getifaddrs allocated.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_merge_to_the_longer() {
        let v = |expires_ns, origin| BlockValue {
            expires_ns,
            created_ns: 1,
            origin,
            offenses: 1,
            reason: [0; 48],
        };
        let both = |l, c| Claims {
            local: Some(v(l, block_origin::DETECTION)),
            crowdsec: Some(v(c, block_origin::CROWDSEC)),
        };
        let origin = |c: Claims, now| c.merged(now).map(|m| m.origin);
        assert_eq!(origin(both(100, 200), 50), Some(block_origin::CROWDSEC));
        assert_eq!(origin(both(300, 200), 50), Some(block_origin::DETECTION));
        assert_eq!(
            origin(both(0, 200), 50),
            Some(block_origin::DETECTION),
            "no expiry wins"
        );
        assert_eq!(origin(both(100, 0), 50), Some(block_origin::CROWDSEC));
        assert_eq!(
            origin(both(100, 200), 150),
            Some(block_origin::CROWDSEC),
            "the local claim is over"
        );
        assert_eq!(origin(both(100, 120), 150), None, "both over");
        assert_eq!(
            Claims::of(v(5, block_origin::CROWDSEC))
                .crowdsec
                .map(|c| c.expires_ns),
            Some(5)
        );
        assert!(Claims::of(v(5, block_origin::MANUAL)).local.is_some());
        assert!(Claims::default().is_empty());
    }

    #[test]
    fn host_nets() {
        assert_eq!(
            host_net("::ffff:198.18.0.1".parse().unwrap()).to_string(),
            "198.18.0.1/32"
        );
    }

    #[test]
    fn never_block_defaults() {
        let cfg = MitigationConfig {
            never_block: vec!["198.18.0.70/32".parse().unwrap()],
            never_block_host_addresses: false,
            ..MitigationConfig::default()
        };
        let nets = default_never_block(&cfg);
        let has = |s: &str| {
            nets.iter()
                .any(|n| n.contains(&s.parse::<IpAddr>().unwrap()))
        };
        assert!(
            has("127.0.0.1")
                && has("::1")
                && has("169.254.1.1")
                && has("fe80::1")
                && has("198.18.0.70")
        );
        assert!(!has("198.18.0.71"));
        assert!(overlaps(
            &"198.18.0.0/24".parse().unwrap(),
            &"198.18.0.70/32".parse().unwrap()
        ));
        assert!(!host_addresses().is_empty(), "loopback at least");
    }
}
