//! A two-namespace lab: `scanner` and `target`, joined by a veth pair.
//!
//! | side    | namespace         | interface | IPv4          | IPv6         |
//! |---------|-------------------|-----------|---------------|--------------|
//! | scanner | `swS<id>`         | `swS<id>` | 198.18.0.1/24 | fd00::1/64   |
//! | target  | `swT<id>`         | `swT<id>` | 198.18.0.2/24 | fd00::2/64   |
//!
//! `<id>` is `<pid>x<n>`: the test process and its n-th lab. Building a lab
//! first removes the labs of test processes that are gone.
//!
//! 198.19.0.0/24 is routed from the scanner into the veth (via 198.18.0.2), so
//! host sweeps reach the target's XDP program, and the target answers for
//! every address of it (a local route: a /24 of live hosts). No namespace has a default
//! route, and the root namespace gets unreachable guard routes for
//! 198.18.0.0/15 and fd00::/8 before anything is created.

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

pub const SCANNER_V4: &str = "198.18.0.1";
pub const TARGET_V4: &str = "198.18.0.2";
pub const SCANNER_V6: &str = "fd00::1";
pub const TARGET_V6: &str = "fd00::2";
/// Routed from the scanner through the target's veth, for sweeps.
pub const SWEEP_NET_V4: &str = "198.19.0.0/24";

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Runs a command to completion; error with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Result<Output, LabError> {
    let command = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command,
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        });
    }
    Ok(out)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn ip(args: &[&str]) -> Result<Output, LabError> {
    run(Command::new("ip").args(args))
}

/// Adds the root-namespace guard routes (idempotent).
pub fn add_guard_routes() -> Result<(), LabError> {
    ip(&["route", "replace", "unreachable", "198.18.0.0/15"])?;
    ip(&["-6", "route", "replace", "unreachable", "fd00::/8"])?;
    Ok(())
}

/// Removes what the labs of test processes that died without dropping
/// their [`Lab`] (killed by SIGKILL, or by SIGPIPE when their output was
/// cut short) left behind: the processes still running in their
/// namespaces (an agent there keeps its programs attached and its threads
/// busy), the namespaces, and the agent's `scanwatch-test-<namespace>` pin
/// and temporary directories. A lab's namespaces carry the id of the
/// process that made it; those of live processes are left alone.
fn remove_stale_labs() {
    let Ok(out) = ip(&["netns", "list"]) else {
        return;
    };
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    for name in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(id) = name
            .strip_prefix("swS")
            .or_else(|| name.strip_prefix("swT"))
        else {
            continue;
        };
        let Some(pid) = id.split_once('x').and_then(|(p, _)| p.parse::<u32>().ok()) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = ip(&["netns", "pids", name]) {
            for p in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = Command::new("kill")
                    .args(["-KILL", p])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/scanwatch-test-{name}"));
        let _ =
            std::fs::remove_dir_all(std::env::temp_dir().join(format!("scanwatch-test-{name}")));
    }
}

/// The lab. Dropping it kills the processes it started and deletes both
/// namespaces (which deletes the veth pair).
pub struct Lab {
    pub scanner_ns: String,
    pub target_ns: String,
    pub scanner_if: String,
    pub target_if: String,
    pub target_mac: String,
    children: Vec<Child>,
    /// Namespaces of the targets added by [`Lab::add_target`].
    extra: Vec<String>,
}

/// One more target namespace ([`Lab::add_target`]), joined to the scanner
/// namespace by a veth pair of its own.
#[derive(Clone, Debug)]
pub struct ExtraTarget {
    pub ns: String,
    /// Its interface (inside `ns`) and the scanner's end of the pair.
    pub target_if: String,
    pub scanner_if: String,
    /// `198.18.N.2` and `198.18.N.1`.
    pub target_v4: String,
    pub scanner_v4: String,
}

impl ExtraTarget {
    /// A command prefix that runs in this target's namespace.
    pub fn command(&self) -> Command {
        Lab::nsenter(&self.ns)
    }
}

impl Lab {
    /// Builds the lab. Fails (and cleans up) if any step fails.
    pub fn new() -> Result<Self, LabError> {
        add_guard_routes()?;
        remove_stale_labs();
        // `<pid>x<n>`: at most 14 characters with the prefix (pid_max is
        // 2^22), under the 15 of an interface name.
        let id = format!(
            "{}x{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Self {
            scanner_ns: format!("swS{id}"),
            target_ns: format!("swT{id}"),
            scanner_if: format!("swS{id}"),
            target_if: format!("swT{id}"),
            target_mac: String::new(),
            children: Vec::new(),
            extra: Vec::new(),
        };
        // From here on, Drop removes whatever was created.
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), LabError> {
        let (s_ns, t_ns, s_if, t_if) = (
            self.scanner_ns.as_str(),
            self.target_ns.as_str(),
            self.scanner_if.as_str(),
            self.target_if.as_str(),
        );
        ip(&["netns", "add", s_ns])?;
        ip(&["netns", "add", t_ns])?;
        ip(&[
            "link", "add", s_if, "netns", s_ns, "type", "veth", "peer", "name", t_if, "netns", t_ns,
        ])?;
        for (ns, ifname, v4, v6) in [
            (s_ns, s_if, "198.18.0.1/24", "fd00::1/64"),
            (t_ns, t_if, "198.18.0.2/24", "fd00::2/64"),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", v4, "dev", ifname])?;
            ip(&["-n", ns, "-6", "addr", "add", v6, "dev", ifname, "nodad"])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
        }
        ip(&["-n", s_ns, "route", "add", SWEEP_NET_V4, "via", TARGET_V4])?;
        // The target answers for the whole sweep /24 (AnyIP), like a subnet
        // of live hosts: sweeps finish in well under a second instead of
        // minutes of nmap time-outs.
        ip(&[
            "-n",
            t_ns,
            "route",
            "add",
            "local",
            SWEEP_NET_V4,
            "dev",
            "lo",
        ])?;
        // Let the target answer every probe (closed UDP ports) without ICMP rate limits.
        for kv in [
            "net.ipv4.icmp_ratelimit=0",
            "net.ipv4.icmp_msgs_per_sec=100000",
            "net.ipv4.icmp_msgs_burst=10000",
            "net.ipv6.icmp.ratelimit=0",
        ] {
            // Some of these are global on older kernels; setting them is best effort.
            let _ = run(self.in_target().args(["sysctl", "-q", "-w", kv]));
        }
        let out = ip(&["-n", t_ns, "-o", "link", "show", t_if])?;
        let text = String::from_utf8_lossy(&out.stdout);
        self.target_mac = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        Ok(())
    }

    /// `nsenter --net=/run/netns/<ns>`: only the network namespace changes, so
    /// bpffs pins stay visible (unlike `ip netns exec`).
    fn nsenter(ns: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}")).arg("--");
        c
    }

    /// A command prefix that runs in the target namespace.
    pub fn in_target(&self) -> Command {
        Self::nsenter(&self.target_ns)
    }

    /// A command prefix that runs in the scanner namespace.
    pub fn in_scanner(&self) -> Command {
        Self::nsenter(&self.scanner_ns)
    }

    /// Assigns one more address to the scanner's interface (one source per test case).
    pub fn add_scanner_address(&self, cidr: &str) -> Result<(), LabError> {
        let mut args = vec!["-n", self.scanner_ns.as_str()];
        if cidr.contains(':') {
            args.push("-6");
        }
        args.extend(["addr", "add", cidr, "dev", self.scanner_if.as_str()]);
        if cidr.contains(':') {
            args.push("nodad");
        }
        ip(&args)?;
        Ok(())
    }

    /// Starts a long-running process in a process group of its own; the
    /// whole group (e.g. nginx's workers) is killed when the lab drops.
    pub fn spawn(&mut self, mut cmd: Command) -> Result<u32, LabError> {
        use std::os::unix::process::CommandExt as _;
        let command = describe(&cmd);
        let child = cmd
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|source| LabError::Spawn { command, source })?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Sends SIGTERM to a process started with [`Lab::spawn`] and waits up to
    /// `timeout` for it; returns its exit status, or `None` if it had to be killed.
    pub fn stop(&mut self, pid: u32, timeout: Duration) -> Option<std::process::ExitStatus> {
        let idx = self.children.iter().position(|c| c.id() == pid)?;
        let mut child = self.children.remove(idx);
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGKILLs a process started with [`Lab::spawn`] and reaps it (so every
    /// thread is gone and its sockets are closed when this returns).
    pub fn kill(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        let idx = self.children.iter().position(|c| c.id() == pid)?;
        let mut child = self.children.remove(idx);
        let _ = child.kill();
        child.wait().ok()
    }

    /// Adds target number `n` (1..=9): namespace `<target ns>b<n>` joined to
    /// the scanner by a veth pair on 198.18.(n+1).0/24, routed both ways to
    /// the scanner's 198.18.0.0/24 (and `extra_routes` towards the scanner
    /// too). Deleted with the lab.
    pub fn add_target(&mut self, n: u8, extra_routes: &[&str]) -> Result<ExtraTarget, LabError> {
        let ns = format!("{}b{n}", self.target_ns);
        let net = u16::from(n) + 1;
        let t = ExtraTarget {
            target_if: ns.clone(),
            scanner_if: format!("{}b{n}", self.scanner_ns),
            target_v4: format!("198.18.{net}.2"),
            scanner_v4: format!("198.18.{net}.1"),
            ns,
        };
        ip(&["netns", "add", &t.ns])?;
        self.extra.push(t.ns.clone());
        ip(&[
            "link",
            "add",
            &t.scanner_if,
            "netns",
            &self.scanner_ns,
            "type",
            "veth",
            "peer",
            "name",
            &t.target_if,
            "netns",
            &t.ns,
        ])?;
        for (ns, ifname, addr) in [
            (
                self.scanner_ns.as_str(),
                t.scanner_if.as_str(),
                &t.scanner_v4,
            ),
            (t.ns.as_str(), t.target_if.as_str(), &t.target_v4),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                ifname,
            ])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
        }
        for to in ["198.18.0.0/24"].iter().chain(extra_routes) {
            ip(&["-n", &t.ns, "route", "add", to, "via", &t.scanner_v4])?;
        }
        Ok(t)
    }

    /// Path of the target namespace, for `setns`.
    pub fn target_netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.target_ns))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            // The process group: the child and anything it forked.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.scanner_ns, &self.target_ns]
            .into_iter()
            .chain(&self.extra)
        {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}
