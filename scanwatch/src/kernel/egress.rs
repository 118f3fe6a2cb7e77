//! Attaching the TC egress program of the reply-aware detector (clsact /
//! TCX egress, next to XDP on the same interfaces) and detaching it.

use aya::{
    Ebpf,
    programs::{
        TcAttachType,
        tc::{self, SchedClassifierLinkId, TcError},
    },
};

use super::object::{Interface, LoadError, egress_program};
use crate::model::error_chain;

/// One egress attachment, detached on shutdown.
#[derive(Debug)]
pub struct EgressAttachment {
    pub iface: Interface,
    pub link: SchedClassifierLinkId,
}

/// Attaches the (loaded) egress program to `iface`. Adds a clsact qdisc
/// first, keeping one that exists (kernels before 6.6 attach through it;
/// newer kernels use a TCX link, which needs none). Other filters on the
/// interface are left alone, and the program passes every packet on to
/// them (`TC_ACT_UNSPEC`).
pub fn attach_egress(ebpf: &mut Ebpf, iface: &Interface) -> Result<EgressAttachment, LoadError> {
    match tc::qdisc_add_clsact(&iface.name) {
        Ok(()) => log::debug!("added a clsact qdisc to {}", iface.name),
        Err(TcError::AlreadyAttached) => {}
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        // TCX (kernel 6.6+) needs no qdisc: a real problem shows at attach.
        Err(e) => log::debug!("clsact qdisc on {}: {}", iface.name, error_chain(&e)),
    }
    let link = egress_program(ebpf)?
        .attach(&iface.name, TcAttachType::Egress)
        .map_err(|e| {
            LoadError::Load(format!(
                "cannot attach the egress program to {}: {}",
                iface.name,
                error_chain(&e)
            ))
        })?;
    Ok(EgressAttachment {
        iface: iface.clone(),
        link,
    })
}

/// Detaches one egress attachment (the qdisc stays: others may use it).
pub fn detach_egress(ebpf: &mut Ebpf, attachment: EgressAttachment) {
    let name = attachment.iface.name.clone();
    match egress_program(ebpf).and_then(|p| {
        p.detach(attachment.link)
            .map_err(|e| LoadError::Load(error_chain(&e)))
    }) {
        Ok(()) => log::info!("detached the egress program from {name}"),
        Err(e) => log::warn!("detaching the egress program from {name}: {e}"),
    }
}
