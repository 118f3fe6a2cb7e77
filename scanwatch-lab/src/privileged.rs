//! Privileged tests fail loudly when they cannot run; they never pass by skipping.

/// Set to `1` to let privileged tests skip (with a message) when not root.
/// CI never sets it, so there a missing privilege is a failure.
pub const ALLOW_SKIP_ENV: &str = "SCANWATCH_ALLOW_SKIP_PRIVILEGED";

/// Returns `true` when the caller may go on (running as root). When not root,
/// panics with a clear message, or returns `false` if [`ALLOW_SKIP_ENV`] is `1`.
#[must_use]
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc_geteuid() } == 0 {
        return true;
    }
    if std::env::var(ALLOW_SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: needs root (CAP_BPF, CAP_NET_ADMIN); {ALLOW_SKIP_ENV}=1");
        return false;
    }
    panic!(
        "{test} needs root (CAP_BPF, CAP_NET_ADMIN) to load XDP programs and build network \
         namespaces; run the suite with `sudo cargo xtask test` (or set {ALLOW_SKIP_ENV}=1 to skip)"
    );
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
