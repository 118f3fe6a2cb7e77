//! How the tests judge a refusal of the agent binary: the exit status, a
//! message naming what was wrong, an `error` line, and no panic.

use std::process::Output;

/// The process's standard error, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Checks one refusal; returns a description of what is wrong, if anything.
pub fn refused(o: &Output, code: i32, needle: &str, args: &[&str]) -> Option<String> {
    let err = stderr(o);
    let ok = o.status.code() == Some(code)
        && err.contains(needle)
        && err.contains("error")
        && !err.contains("panicked")
        && !err.contains("RUST_BACKTRACE");
    (!ok).then(|| {
        format!(
            "{args:?}: exit {:?} (want {code}), want {needle:?} in: {err}",
            o.status.code()
        )
    })
}

/// Asserts `o` exited with `code` and `needle` in its standard error, no panic.
pub fn assert_fails_with(o: &Output, code: i32, needle: &str, what: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: exit code; stderr: {err}"
    );
    assert!(
        err.contains(needle),
        "{what}: expected {needle:?} in: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: no panic: {err}");
}
