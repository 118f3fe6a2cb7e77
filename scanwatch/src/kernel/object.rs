//! Loading the scanwatch object: the XDP program, the TC egress program and
//! their maps, sized and configured at load time; the interfaces to attach to.

use std::ffi::CString;

use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, Xdp},
};
use scanwatch_common::{
    DetectConfig,
    contact_table::{CONTACT_SEED_GLOBAL, ContactSeed},
    maps::{
        DETECT_CONFIG_GLOBAL, MAX_SOURCE_MAP_SIZE, MIN_SOURCE_MAP_SIZE, SOURCES_MAP, XDP_PROGRAM,
    },
    trw::EGRESS_PROGRAM,
};

use crate::model::{AttachMode, error_chain};

/// The XDP object built by `build.rs` (scanwatch-ebpf for bpfel).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/scanwatch"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "map size {0} is out of range: choose {MIN_SOURCE_MAP_SIZE}..={MAX_SOURCE_MAP_SIZE} sources"
    )]
    MapSize(u32),
    #[error(
        "admission table size {0} is not a power of two in {min}..={max}",
        min = scanwatch_common::tracking::MIN_ADMISSION_SLOTS,
        max = scanwatch_common::tracking::MAX_ADMISSION_SLOTS
    )]
    AdmissionSlots(u32),
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
    /// The reply-aware detector's test (disabled: no contacts recorded).
    pub reply: scanwatch_common::trw::ReplyConfig,
    /// The key of the contact tables' slot hash (random by default; the
    /// agent's `ReplyMaps` needs the same one to find a contact).
    pub contact_seed: ContactSeed,
    /// Web sampling (disabled: nothing sampled).
    pub web: scanwatch_common::web::WebConfig,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        Self {
            blocklist_capacity: scanwatch_common::maps::DEFAULT_BLOCKLIST_CAPACITY,
            feed_capacity: scanwatch_common::maps::DEFAULT_FEED_CAPACITY,
            blocks_pin: None,
            reply: scanwatch_common::trw::ReplyConfig::DISABLED,
            contact_seed: random_contact_seed(),
            web: scanwatch_common::web::WebConfig::DISABLED,
        }
    }
}

/// A random key for the contact tables' slot hash (from the operating
/// system's randomness, through std's randomly keyed SipHash).
pub fn random_contact_seed() -> ContactSeed {
    use std::hash::{BuildHasher as _, Hasher as _};
    let keys = std::collections::hash_map::RandomState::new();
    let mut seed = ContactSeed::ZERO;
    for (i, w) in seed.words.iter_mut().enumerate() {
        let mut h = keys.build_hasher();
        h.write_usize(i);
        *w = h.finish() as u32;
    }
    seed
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
    if !scanwatch_common::tracking::valid_admission_slots(detect.admission_slots) {
        return Err(LoadError::AdmissionSlots(detect.admission_slots));
    }
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(SOURCES_MAP, map_size)
        .map_max_entries(
            scanwatch_common::tracking::ADMISSION_MAP,
            detect.admission_slots,
        )
        .map_max_entries(
            scanwatch_common::tracking::ADMISSION_MORE_MAP,
            detect.admission_slots,
        )
        .map_max_entries(
            scanwatch_common::tracking::SOURCE_TAGS_MAP,
            scanwatch_common::tracking::tag_words(map_size),
        )
        .map_max_entries(scanwatch_common::maps::BLOCKS_MAP, opts.blocklist_capacity)
        .map_max_entries(
            scanwatch_common::maps::BLOCKED_HOSTS_MAP,
            opts.blocklist_capacity,
        )
        .map_max_entries(scanwatch_common::maps::FEEDS_MAP, opts.feed_capacity)
        .map_max_entries(
            scanwatch_common::maps::PREFILTER_MAP,
            scanwatch_common::prefilter::words_for(opts.blocklist_capacity, opts.feed_capacity),
        );
    if let Some(pin) = opts.blocks_pin {
        loader.map_pin_path(scanwatch_common::maps::BLOCKS_MAP, pin);
    }
    // The kernel finds a source's slots from the table's size.
    let detect = DetectConfig {
        source_slots: map_size,
        ..*detect
    };
    let mut ebpf = loader
        .override_global(DETECT_CONFIG_GLOBAL, &detect, true)
        .override_global(
            scanwatch_common::trw::REPLY_CONFIG_GLOBAL,
            &opts.reply,
            true,
        )
        .override_global(CONTACT_SEED_GLOBAL, &opts.contact_seed, true)
        .override_global(scanwatch_common::web::WEB_CONFIG_GLOBAL, &opts.web, true)
        .load(OBJECT)
        .map_err(|e| LoadError::Load(error_chain(&e)))?;
    xdp_program(&mut ebpf)?
        .load()
        .map_err(|e| LoadError::Load(error_chain(&e)))?;
    egress_program(&mut ebpf)?
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

/// The TC egress program of a loaded object.
pub fn egress_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, LoadError> {
    let program = ebpf
        .program_mut(EGRESS_PROGRAM)
        .ok_or_else(|| LoadError::Load(format!("object has no program {EGRESS_PROGRAM}")))?;
    program
        .try_into()
        .map_err(|e: aya::programs::ProgramError| LoadError::Load(error_chain(&e)))
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
        let detect = DetectConfig {
            admission_slots: 12_288,
            ..DetectConfig::DISABLED
        };
        assert!(matches!(
            load(MIN_SOURCE_MAP_SIZE, &detect),
            Err(LoadError::AdmissionSlots(12_288))
        ));
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
