//! Shared mappings of `BPF_F_MMAPABLE` arrays: the kernel's pages in the
//! agent's address space (no copy, no syscall per access), unmapped when
//! dropped. The contact table, the source table and the IPv4 prefilter use
//! them; what the bytes mean is theirs.

use std::{
    os::fd::{AsRawFd as _, BorrowedFd},
    ptr::NonNull,
};

/// One shared mapping of a map's value area.
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: process memory shared with the kernel, valid until `Drop`; its
// users access it with atomics or volatile copies, from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `bytes` bytes (rounded up to whole pages) of the map
    /// behind `fd`, shared, read-only or also writable.
    pub fn new(fd: BorrowedFd<'_>, bytes: usize, writable: bool) -> Result<Self, String> {
        Self::at(fd, 0, bytes, writable)
    }

    /// The size of a page (what offsets of [`Mapping::at`] are multiples of).
    pub fn page_size() -> usize {
        // SAFETY: sysconf has no preconditions.
        usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
    }

    /// Maps `bytes` bytes (rounded up to whole pages) of the map behind
    /// `fd` from byte `offset` (a multiple of [`Mapping::page_size`]).
    pub fn at(
        fd: BorrowedFd<'_>,
        offset: usize,
        bytes: usize,
        writable: bool,
    ) -> Result<Self, String> {
        let page = Self::page_size();
        if !offset.is_multiple_of(page) {
            return Err(format!(
                "offset {offset} is not a multiple of the page size"
            ));
        }
        let offset = libc::off_t::try_from(offset).map_err(|_| format!("offset {offset}"))?;
        let len = bytes.div_ceil(page) * page;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping of an mmapable map's fd; the kernel
        // checks the length and the flags and keeps it valid until munmap.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or("mmap returned null")?;
        Ok(Self { base, len })
    }

    /// The first byte, as a `T` (page-aligned).
    pub const fn base<T>(&self) -> NonNull<T> {
        self.base.cast()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base and len are those mmap returned, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
