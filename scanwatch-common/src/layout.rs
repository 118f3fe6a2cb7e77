//! Compile-time checks of the layouts shared with the kernel.
//!
//! [`assert_layout!`] pins a `#[repr(C)]` type's size and alignment and
//! proves it has no implicit padding: the sizes of the fields it lists add
//! up to the size of the type. A field added without being listed, or a
//! change that makes the compiler insert padding, fails the build, on the
//! host and on the bpf target alike (padding bytes would be uninitialised
//! map keys and values, and `aya::Pod` requires none).

/// The size of a field, from a projection `|v: &T| &v.field` (never called).
#[doc(hidden)]
pub const fn field_size<T, F>(_project: fn(&T) -> &F) -> usize {
    core::mem::size_of::<F>()
}

/// `assert_layout!(Type { field, ... }, size N, align A)`: every field, in
/// any order; fails to compile unless the type is exactly N bytes, aligned
/// to A, and its fields fill all N bytes.
macro_rules! assert_layout {
    ($t:ty { $($field:ident),+ $(,)? }, size $size:expr, align $align:expr) => {
        const _: () = assert!(
            core::mem::size_of::<$t>() == $size,
            concat!("size of ", stringify!($t), " changed (a layout shared with the kernel)")
        );
        const _: () = assert!(
            core::mem::align_of::<$t>() == $align,
            concat!("alignment of ", stringify!($t), " changed (a layout shared with the kernel)")
        );
        const _: () = assert!(
            0 $(+ $crate::layout::field_size(|v: &$t| &v.$field))+ == core::mem::size_of::<$t>(),
            concat!(stringify!($t), " has implicit padding (or a field missing from its assert_layout!)")
        );
    };
}

pub(crate) use assert_layout;
