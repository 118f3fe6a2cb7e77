//! The pin directory on bpffs: mounting bpffs when needed, the lock that
//! keeps two agents off one directory, and the pins' life cycle.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _},
    path::{Path, PathBuf},
};

use scanwatch_common::maps::{
    BLOCKS_MAP, FEED_NAMES_MAP, IFACE_COUNTERS_MAP, IFACE_NAMES_MAP, SOURCES_MAP,
};

const BPFFS_ROOT: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: u32 = 0xcafe_4a11;

/// The maps pinned for the agent's lifetime, by file name (removed on a
/// clean stop, replaced after a crash).
pub const PINNED_MAPS: [&str; 8] = [
    scanwatch_common::maps::IFACE_SLOTS_MAP,
    scanwatch_common::web::WEB_COUNTERS_MAP,
    scanwatch_common::maps::SOURCE_PREFIXES_MAP,
    SOURCES_MAP,
    scanwatch_common::tracking::SOURCE_TAGS_MAP,
    IFACE_COUNTERS_MAP,
    IFACE_NAMES_MAP,
    FEED_NAMES_MAP,
];
/// The blocklist pin, kept across restarts so blocks and their expiries survive.
pub const KEPT_PIN: &str = BLOCKS_MAP;

#[derive(Debug, thiserror::Error)]
pub enum PinDirError {
    #[error(
        "pin dir {0} is in use by a running scanwatch agent; stop that agent or choose another --pin-dir"
    )]
    InUse(PathBuf),
    #[error(
        "pin dir {dir} is not on a bpf filesystem (nearest existing parent {parent} is not bpffs); use a --pin-dir under {BPFFS_ROOT} or mount bpffs there"
    )]
    NotBpffs { dir: PathBuf, parent: PathBuf },
    #[error("cannot mount bpffs at {BPFFS_ROOT}: {0}")]
    Mount(io::Error),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("no scanwatch maps pinned in {0}; is `scanwatch run` running with this --pin-dir?")]
    NoAgent(PathBuf),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PinDirError + 'a {
    move |source| PinDirError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn is_bpffs(path: &Path) -> Result<bool, PinDirError> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| PinDirError::Io {
        op: "invalid path",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, e),
    })?;
    // SAFETY: statfs writes into a zeroed struct of the right type; c is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io_err("statfs", path)(io::Error::last_os_error()));
    }
    Ok(st.f_type as u32 == BPF_FS_MAGIC)
}

/// Makes sure `dir` will live on bpffs, mounting bpffs at /sys/fs/bpf if
/// that is where it belongs and nothing is mounted there yet.
fn ensure_bpffs(dir: &Path) -> Result<(), PinDirError> {
    let mut existing = dir;
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    if is_bpffs(existing)? {
        return Ok(());
    }
    let root = Path::new(BPFFS_ROOT);
    if dir.starts_with(root) && existing == root {
        let src = c"bpf";
        let target = c"/sys/fs/bpf";
        // SAFETY: all pointers are valid NUL-terminated strings; data may be NULL.
        let ret = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if ret != 0 {
            return Err(PinDirError::Mount(io::Error::last_os_error()));
        }
        log::info!("mounted bpffs at {BPFFS_ROOT}");
        return Ok(());
    }
    Err(PinDirError::NotBpffs {
        dir: dir.to_path_buf(),
        parent: existing.to_path_buf(),
    })
}

/// A pin directory owned by this agent. Holding the value holds an exclusive
/// `flock` on the directory, which is what tells a second agent it is in use.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
    _lock: File,
}

impl PinDir {
    /// Creates (and if needed mounts) the pin directory, takes its lock and
    /// removes pins an agent that did not stop cleanly left behind.
    pub fn acquire(path: &Path) -> Result<Self, PinDirError> {
        ensure_bpffs(path)?;
        std::fs::create_dir_all(path).map_err(io_err("cannot create pin dir", path))?;
        let lock = File::open(path).map_err(io_err("cannot open pin dir", path))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(PinDirError::InUse(path.to_path_buf()));
            }
            return Err(io_err("cannot lock pin dir", path)(err));
        }
        let dir = Self {
            path: path.to_path_buf(),
            _lock: lock,
        };
        for name in PINNED_MAPS {
            let pin = dir.pin_path(name);
            if pin.exists() {
                log::warn!(
                    "removing stale pin {} (an earlier agent did not stop cleanly)",
                    pin.display()
                );
                std::fs::remove_file(&pin).map_err(io_err("cannot remove stale pin", &pin))?;
            }
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pin_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Validates a pinned blocklist left by an earlier agent: kept when its
    /// layout and capacity match, otherwise removed with a log line.
    pub fn check_kept_blocklist(&self, capacity: u32) {
        let pin = self.pin_path(KEPT_PIN);
        if !pin.exists() {
            return;
        }
        let expected = (
            11u32, // BPF_MAP_TYPE_LPM_TRIE
            std::mem::size_of::<aya::maps::lpm_trie::Key<scanwatch_common::LpmData>>() as u32,
            std::mem::size_of::<scanwatch_common::BlockValue>() as u32,
            capacity,
        );
        let found = aya::maps::MapData::from_pin(&pin)
            .and_then(|m| m.info())
            .map(|i| {
                (
                    i.map_type().map_or(0, |t| t as u32),
                    i.key_size(),
                    i.value_size(),
                    i.max_entries(),
                )
            });
        match found {
            Ok(f) if f == expected => log::info!("reusing the pinned blocklist {}", pin.display()),
            other => {
                log::warn!(
                    "replacing the pinned blocklist {}: found (type, key, value, capacity) {other:?}, need {expected:?}; its blocks are dropped",
                    pin.display()
                );
                if let Err(e) = std::fs::remove_file(&pin) {
                    log::error!("cannot remove {}: {e}", pin.display());
                }
            }
        }
    }

    /// Removes this agent's pins (not the blocklist) and, if then empty, the directory.
    pub fn remove_pins(&self) {
        for name in PINNED_MAPS {
            let pin = self.pin_path(name);
            match std::fs::remove_file(&pin) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("cannot remove pin {}: {e}", pin.display()),
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.path) {
            log::debug!("pin dir {} kept: {e}", self.path.display());
        }
    }
}

/// The path of a pinned map for readers (`scanwatch top`); errors when no
/// agent has pinned its maps there.
pub fn existing_pin(dir: &Path, name: &str) -> Result<PathBuf, PinDirError> {
    let pin = dir.join(name);
    if pin.exists() {
        Ok(pin)
    } else {
        Err(PinDirError::NoAgent(dir.to_path_buf()))
    }
}
