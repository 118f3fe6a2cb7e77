//! The lab cleans up after test processes that died without dropping their
//! lab (killed by SIGKILL, or by SIGPIPE when their output was cut short):
//! building a lab removes the processes, namespaces, pins and temporary
//! directories of labs whose process is gone, and leaves live labs alone.

use std::{path::Path, process::Command};

use scanwatch_lab::{netns::Lab, privileged::require_root};

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?}");
}

fn netns_exists(name: &str) -> bool {
    Path::new(&format!("/run/netns/{name}")).exists()
}

#[test]
fn a_new_lab_removes_labs_of_dead_test_processes() {
    if !require_root("a_new_lab_removes_labs_of_dead_test_processes") {
        return;
    }
    // A process id above pid_max (2^22) can never be alive.
    let (stale_s, stale_t) = ("swS4194305x0", "swT4194305x0");
    ip(&["netns", "add", stale_s]);
    ip(&["netns", "add", stale_t]);
    let mut leftover = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{stale_t}"))
        .args(["--", "sleep", "600"])
        .spawn()
        .expect("start a process in the stale namespace");
    let pins = format!("/sys/fs/bpf/scanwatch-test-{stale_t}");
    let tmp = std::env::temp_dir().join(format!("scanwatch-test-{stale_t}"));
    std::fs::create_dir_all(&pins).expect("pin dir");
    std::fs::create_dir_all(&tmp).expect("temp dir");

    let first = Lab::new().expect("build a lab");
    assert!(!netns_exists(stale_s) && !netns_exists(stale_t));
    assert!(!Path::new(&pins).exists() && !tmp.exists());
    let status = leftover.wait().expect("reap the leftover process");
    assert!(
        !status.success(),
        "the leftover process was killed: {status}"
    );

    // A second lab of this (live) process leaves the first one alone.
    let second = Lab::new().expect("build a second lab");
    assert!(netns_exists(&first.target_ns) && netns_exists(&first.scanner_ns));
    drop(second);
    drop(first);
}
