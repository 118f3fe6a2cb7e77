//! Loading the XDP object and attaching it to interfaces.

use std::{
    ffi::CString,
    fmt,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use scanwatch_common::{
    DetectConfig,
    maps::{
        DETECT_CONFIG_GLOBAL, MAX_SOURCE_MAP_SIZE, MIN_SOURCE_MAP_SIZE, SOURCES_MAP, XDP_PROGRAM,
    },
};

/// The XDP object built by `build.rs` (scanwatch-ebpf for bpfel).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/scanwatch"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "map size {0} is out of range: choose {MIN_SOURCE_MAP_SIZE}..={MAX_SOURCE_MAP_SIZE} sources"
    )]
    MapSize(u32),
    #[error("unknown interface {0:?}")]
    UnknownInterface(String),
    #[error("cannot load the XDP program: {0}")]
    Load(String),
    #[error("cannot attach XDP to {iface} in {mode} mode: {reason}")]
    Attach {
        iface: String,
        mode: AttachMode,
        reason: String,
    },
}

/// `--xdp-mode` (`[agent] xdp_mode`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to skb (generic) mode with a warning.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode only.
    Skb,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Skb => "skb",
        })
    }
}

/// An interface name with its index in this network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
}

impl Interface {
    /// Looks the interface up; an unknown name is an error.
    pub fn resolve(name: &str) -> Result<Self, LoadError> {
        let unknown = || LoadError::UnknownInterface(name.to_string());
        if name.is_empty() || name.len() > 15 {
            return Err(unknown());
        }
        let c = CString::new(name).map_err(|_| unknown())?;
        // SAFETY: c is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if ifindex == 0 {
            return Err(unknown());
        }
        Ok(Self {
            name: name.to_string(),
            ifindex,
        })
    }
}

/// Renders an error with its whole source chain on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = e.source();
    }
    s
}

pub fn validate_map_size(size: u32) -> Result<u32, LoadError> {
    if (MIN_SOURCE_MAP_SIZE..=MAX_SOURCE_MAP_SIZE).contains(&size) {
        Ok(size)
    } else {
        Err(LoadError::MapSize(size))
    }
}

/// Map sizes and pins beyond the source map.
#[derive(Clone, Debug)]
pub struct LoadOptions<'a> {
    pub blocklist_capacity: u32,
    pub feed_capacity: u32,
    /// Reuse (or create and pin) the blocklist at this path.
    pub blocks_pin: Option<&'a std::path::Path>,
    /// Entries of the benchmarks' floor-program map (1 unless benchmarking).
    pub floor_sources: u32,
    /// The reply-aware detector's test (disabled: no contacts recorded).
    pub reply: scanwatch_common::trw::ReplyConfig,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        Self {
            blocklist_capacity: scanwatch_common::maps::DEFAULT_BLOCKLIST_CAPACITY,
            feed_capacity: scanwatch_common::maps::DEFAULT_FEED_CAPACITY,
            blocks_pin: None,
            floor_sources: 1,
            reply: scanwatch_common::trw::ReplyConfig::DISABLED,
        }
    }
}

/// Loads the object with a source map of `map_size` entries and the
/// detection settings `detect`, and loads (verifies) the program.
pub fn load(map_size: u32, detect: &DetectConfig) -> Result<Ebpf, LoadError> {
    load_with(map_size, detect, &LoadOptions::default())
}

/// [`load`] with the mitigation maps' sizes and the blocklist pin.
pub fn load_with(
    map_size: u32,
    detect: &DetectConfig,
    opts: &LoadOptions<'_>,
) -> Result<Ebpf, LoadError> {
    let map_size = validate_map_size(map_size)?;
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(SOURCES_MAP, map_size)
        .map_max_entries(scanwatch_common::maps::BLOCKS_MAP, opts.blocklist_capacity)
        .map_max_entries(
            scanwatch_common::maps::BLOCKED_HOSTS_MAP,
            opts.blocklist_capacity,
        )
        .map_max_entries(scanwatch_common::maps::FEEDS_MAP, opts.feed_capacity)
        .map_max_entries(
            scanwatch_common::maps::FLOOR_SOURCES_MAP,
            opts.floor_sources.max(1),
        );
    if let Some(pin) = opts.blocks_pin {
        loader.map_pin_path(scanwatch_common::maps::BLOCKS_MAP, pin);
    }
    let mut ebpf = loader
        .override_global(DETECT_CONFIG_GLOBAL, detect, true)
        .override_global(
            scanwatch_common::trw::REPLY_CONFIG_GLOBAL,
            &opts.reply,
            true,
        )
        .load(OBJECT)
        .map_err(|e| LoadError::Load(error_chain(&e)))?;
    xdp_program(&mut ebpf)?
        .load()
        .map_err(|e| LoadError::Load(error_chain(&e)))?;
    crate::reply::egress_program(&mut ebpf)?
        .load()
        .map_err(|e| LoadError::Load(error_chain(&e)))?;
    Ok(ebpf)
}

/// The scanwatch XDP program of a loaded object.
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    let program = ebpf
        .program_mut(XDP_PROGRAM)
        .ok_or_else(|| LoadError::Load(format!("object has no program {XDP_PROGRAM}")))?;
    program
        .try_into()
        .map_err(|e: aya::programs::ProgramError| LoadError::Load(error_chain(&e)))
}

/// The mode a program ended up attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Skb,
}

impl AttachedMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Skb => "skb",
        }
    }
}

/// One attachment, to be detached (or kept) on shutdown.
#[derive(Debug)]
pub struct Attachment {
    pub iface: Interface,
    pub mode: AttachedMode,
    /// None only when a link could not be handed back after pinning.
    pub link: Option<XdpLinkId>,
    /// The bpffs pin of the link when it is kept attached across stops.
    pub pinned: Option<PathBuf>,
}

/// Attaches the loaded program to `iface`.
pub fn attach(
    ebpf: &mut Ebpf,
    iface: &Interface,
    mode: AttachMode,
) -> Result<Attachment, LoadError> {
    let program = xdp_program(ebpf)?;
    let try_mode = |program: &mut Xdp, m: XdpMode, shown: AttachMode| {
        program
            .attach_to_if_index(iface.ifindex, m)
            .map_err(|e| LoadError::Attach {
                iface: iface.name.clone(),
                mode: shown,
                reason: error_chain(&e),
            })
    };
    let (link, mode) = match mode {
        AttachMode::Native => (
            try_mode(program, XdpMode::Driver, AttachMode::Native)?,
            AttachedMode::Native,
        ),
        AttachMode::Skb => (
            try_mode(program, XdpMode::Skb, AttachMode::Skb)?,
            AttachedMode::Skb,
        ),
        AttachMode::Auto => match try_mode(program, XdpMode::Driver, AttachMode::Native) {
            Ok(link) => (link, AttachedMode::Native),
            Err(native_err) => {
                log::warn!("{native_err}; falling back to skb (generic) mode");
                (
                    try_mode(program, XdpMode::Skb, AttachMode::Skb)?,
                    AttachedMode::Skb,
                )
            }
        },
    };
    Ok(Attachment {
        iface: iface.clone(),
        mode,
        link: Some(link),
        pinned: None,
    })
}

/// File-name prefix of kept XDP link pins: `XDP_LINK_<ifindex>_<mode>`
/// (bpffs refuses dots in names, which interface names may hold).
pub const LINK_PIN_PREFIX: &str = "XDP_LINK_";

/// The pin path of the link of `iface` attached in `mode`.
pub fn link_pin_path(pin_dir: &Path, iface: &Interface, mode: AttachedMode) -> PathBuf {
    pin_dir.join(format!(
        "{LINK_PIN_PREFIX}{}_{}",
        iface.ifindex,
        mode.as_str()
    ))
}

/// A kept link pin in `pin_dir`: its path, ifindex and mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptLink {
    pub path: PathBuf,
    pub ifindex: u32,
    pub mode: AttachedMode,
}

/// The kept XDP link pins in `pin_dir` (left by an agent run with `--keep-attached`).
pub fn kept_links(pin_dir: &Path) -> Vec<KeptLink> {
    let Ok(dir) = std::fs::read_dir(pin_dir) else {
        return Vec::new();
    };
    let mut links: Vec<KeptLink> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (ifindex, mode) = name.strip_prefix(LINK_PIN_PREFIX)?.split_once('_')?;
            let mode = match mode {
                "native" => AttachedMode::Native,
                "skb" => AttachedMode::Skb,
                _ => return None,
            };
            Some(KeptLink {
                path: e.path(),
                ifindex: ifindex.parse().ok()?,
                mode,
            })
        })
        .collect();
    links.sort_by(|a, b| a.path.cmp(&b.path));
    links
}

/// Removes a kept link pin: if no process holds the link, the kernel
/// detaches its program.
fn remove_link_pin(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        log::warn!("cannot remove the kept XDP link {}: {e}", path.display());
    }
}

/// Attaches to `iface`, taking over the XDP link an earlier agent kept
/// attached (pinned in `pin_dir`) when there is one: the kernel replaces the
/// program atomically, so protection never lapses. With `keep`, the link is
/// pinned so that the program stays attached after the agent exits (clean
/// stop or crash).
pub fn attach_or_take_over(
    ebpf: &mut Ebpf,
    iface: &Interface,
    mode: AttachMode,
    pin_dir: &Path,
    keep: bool,
) -> Result<Attachment, LoadError> {
    let mut attachment = None;
    for kept in kept_links(pin_dir)
        .into_iter()
        .filter(|k| k.ifindex == iface.ifindex)
    {
        let wanted = match mode {
            AttachMode::Auto => true,
            AttachMode::Native => kept.mode == AttachedMode::Native,
            AttachMode::Skb => kept.mode == AttachedMode::Skb,
        };
        if attachment.is_some() || !wanted {
            log::warn!(
                "removing the kept XDP link {} (its mode differs from {} in {mode} mode); its program is detached",
                kept.path.display(),
                iface.name
            );
            remove_link_pin(&kept.path);
            continue;
        }
        match take_over(ebpf, &kept) {
            Ok(link) => {
                log::info!(
                    "took over the XDP program kept attached to {} in {} mode ({}): replaced atomically",
                    iface.name,
                    kept.mode.as_str(),
                    kept.path.display()
                );
                let pinned = if keep {
                    Some(kept.path.clone())
                } else {
                    remove_link_pin(&kept.path);
                    None
                };
                attachment = Some(Attachment {
                    iface: iface.clone(),
                    mode: kept.mode,
                    link: Some(link),
                    pinned,
                });
            }
            Err(e) => {
                log::warn!(
                    "cannot take over the kept XDP link {}: {e}; removing it and attaching anew",
                    kept.path.display()
                );
                remove_link_pin(&kept.path);
            }
        }
    }
    let mut attachment = match attachment {
        Some(a) => a,
        None => attach(ebpf, iface, mode)?,
    };
    if keep && attachment.pinned.is_none() {
        match pin_link(ebpf, &mut attachment, pin_dir) {
            Ok(path) => attachment.pinned = Some(path),
            Err(e) => {
                log::warn!(
                    "cannot pin the XDP link of {}: {e}; it will be detached when the agent exits",
                    iface.name
                );
                if attachment.link.is_none() {
                    // The failed pin closed the link: attach again.
                    let again = match attachment.mode {
                        AttachedMode::Native => AttachMode::Native,
                        AttachedMode::Skb => AttachMode::Skb,
                    };
                    attachment = attach(ebpf, iface, again)?;
                }
            }
        }
    }
    Ok(attachment)
}

/// Replaces the program of a kept link with ours (BPF_LINK_UPDATE).
fn take_over(ebpf: &mut Ebpf, kept: &KeptLink) -> Result<XdpLinkId, LoadError> {
    let fail = |e: &dyn std::error::Error| LoadError::Load(error_chain(e));
    let fd: FdLink = PinnedLink::from_pin(&kept.path)
        .map_err(|e| fail(&e))?
        .into();
    let link = XdpLink::try_from(fd).map_err(|e| fail(&e))?;
    xdp_program(ebpf)?
        .attach_to_link(link)
        .map_err(|e| fail(&e))
}

/// Pins an attachment's link; the program keeps owning it.
fn pin_link(
    ebpf: &mut Ebpf,
    attachment: &mut Attachment,
    pin_dir: &Path,
) -> Result<PathBuf, LoadError> {
    let fail = |e: &dyn std::error::Error| LoadError::Load(error_chain(e));
    let path = link_pin_path(pin_dir, &attachment.iface, attachment.mode);
    if path.exists() {
        // A pin of a link that is gone (its interface was recreated).
        remove_link_pin(&path);
    }
    let program = xdp_program(ebpf)?;
    let Some(id) = attachment.link.take() else {
        return Err(LoadError::Load("no link to pin".into()));
    };
    let link = program.take_link(id).map_err(|e| fail(&e))?;
    // A netlink attachment (kernels without XDP links) cannot be pinned:
    // it stays attached after the agent exits anyway.
    let fd = FdLink::try_from(link).map_err(|e| fail(&e))?;
    let pinned = fd.pin(&path).map_err(|e| fail(&e))?;
    // Hand the link back to the program (an update to the same program).
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| fail(&e))?;
    attachment.link = Some(program.attach_to_link(link).map_err(|e| fail(&e))?);
    Ok(path)
}

/// Ends an attachment on shutdown: detaches it, or with a pinned link
/// leaves the program attached (the pin holds the link).
pub fn release(ebpf: &mut Ebpf, attachment: Attachment) {
    let name = attachment.iface.name.clone();
    let Some(link) = attachment.link else {
        return;
    };
    let Ok(program) = xdp_program(ebpf) else {
        return;
    };
    if let Some(pin) = &attachment.pinned {
        // Closing our descriptor leaves the pinned link (and program) in place.
        match program.take_link(link) {
            Ok(link) => match FdLink::try_from(link) {
                Ok(fd) => drop(fd),
                Err(e) => log::warn!("{name}: {}", error_chain(&e)),
            },
            Err(e) => log::warn!("{name}: {}", error_chain(&e)),
        }
        log::info!(
            "XDP program stays attached to {name} (link pinned at {}): blocks keep dropping until they expire; the next `scanwatch run` takes it over, removing the pin detaches it",
            pin.display()
        );
        return;
    }
    match program.detach(link) {
        Ok(()) => log::info!("detached from {name}"),
        Err(e) => log::warn!("detaching from {name}: {}", error_chain(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_size_bounds() {
        assert!(validate_map_size(MIN_SOURCE_MAP_SIZE).is_ok());
        assert!(validate_map_size(MAX_SOURCE_MAP_SIZE).is_ok());
        assert!(matches!(validate_map_size(10), Err(LoadError::MapSize(10))));
        assert!(validate_map_size(MAX_SOURCE_MAP_SIZE + 1).is_err());
    }

    #[test]
    fn kept_link_pin_names() {
        let dir = std::env::temp_dir().join(format!("scanwatch-links-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let eth = Interface {
            name: "eth0.100".into(),
            ifindex: 7,
        };
        let path = link_pin_path(&dir, &eth, AttachedMode::Skb);
        assert_eq!(
            path.file_name().unwrap(),
            "XDP_LINK_7_skb",
            "no dots (bpffs)"
        );
        for name in [
            "XDP_LINK_7_skb",
            "XDP_LINK_9_native",
            "XDP_LINK_x_skb",
            "XDP_LINK_3_turbo",
            "BLOCKS",
        ] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        let kept = kept_links(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let found: Vec<(u32, AttachedMode)> = kept.iter().map(|k| (k.ifindex, k.mode)).collect();
        assert_eq!(found, [(7, AttachedMode::Skb), (9, AttachedMode::Native)]);
    }

    #[test]
    fn unknown_interfaces() {
        for bad in ["", "no-such-if0", "way-too-long-interface-name", "nul\0x"] {
            assert!(
                matches!(Interface::resolve(bad), Err(LoadError::UnknownInterface(_))),
                "{bad:?}"
            );
        }
        assert_eq!(Interface::resolve("lo").map(|i| i.ifindex).ok(), Some(1));
    }
}
