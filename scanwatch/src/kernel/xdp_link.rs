//! Attaching the XDP program to interfaces: native or skb mode, links kept
//! attached across restarts (pinned in the pin dir) and taken over by the
//! next agent, and detaching on shutdown.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf,
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};

use super::object::{Interface, LoadError, xdp_program};
use crate::model::{AttachMode, error_chain};

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
}
