//! Shared by the lab tests: an agent running in the lab's target namespace.
#![allow(dead_code)]

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use scanwatch_lab::netns::{Lab, run};

/// Whether a source as alerts and `top` show it (an address, or a network
/// when sources are counted by prefix, like IPv6 /64s) stands for `ip`.
pub fn is_source(shown: &serde_json::Value, ip: &str) -> bool {
    let want: IpAddr = ip.parse().expect("address literal");
    let want = match want {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(want, IpAddr::V4),
        v4 => v4,
    };
    shown.as_str().is_some_and(|s| {
        s.parse::<ipnet::IpNet>()
            .map(|net| net.contains(&want))
            .or_else(|_| s.parse::<IpAddr>().map(|a| a == want))
            .unwrap_or(false)
    })
}

/// The agent binary (built on first use unless `SCANWATCH_BIN` names it).
pub fn agent_bin() -> &'static std::path::Path {
    scanwatch_lab::agent_bin::agent_binary()
}

/// Fails (never skips) when a tool the test drives is missing.
pub fn assert_installed(tools: &[&str]) {
    for tool in tools {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "{tool} is not installed (cargo xtask setup installs it)"
        );
    }
}

/// Sum of the samples on the lines of a `/metrics` text that start with
/// `prefix` (a name, or a name and the start of its labels).
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Asserts that a `/metrics` text passes `promtool check metrics` with
/// nothing to say.
pub fn assert_promtool_clean(text: &str) {
    use std::process::{Command, Stdio};
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(check.stdin.as_mut().expect("stdin"), text.as_bytes())
        .expect("write");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the unlabelled sample `name` of a `/metrics` text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The scan types an alert line names (`scan_types`).
pub fn scan_types(alert: &serde_json::Value) -> Vec<String> {
    alert["scan_types"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The pins left in a pin directory, sorted.
pub fn pins_left(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A lab whose target namespace runs `scanwatch run` on its veth.
pub struct AgentLab {
    pub lab: Lab,
    /// Lab tests of one binary run one at a time: scanners, floods and load
    /// generators would otherwise compete for the machine's two cores.
    _serial: std::sync::MutexGuard<'static, ()>,
    pub pin_dir: PathBuf,
    pub alert_log: PathBuf,
    pub control_socket: PathBuf,
    pub agent_pid: u32,
    /// Where the agent's stderr (its log) goes when started with
    /// [`AgentLab::start_logged`]; otherwise it is the test's stderr.
    pub agent_log: Option<PathBuf>,
}

impl AgentLab {
    /// The agent's `/metrics` text at `addr` (its `--metrics-addr`, on the
    /// target side of the veth), fetched from the scanner namespace.
    pub fn scrape(&self, addr: &str) -> String {
        let out = self
            .lab
            .in_scanner()
            .args([
                "curl",
                "-s",
                "--max-time",
                "10",
                &format!("http://{addr}/metrics"),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn start(extra_args: &[&str]) -> Self {
        Self::start_with(extra_args, false)
    }

    /// [`AgentLab::start`] with the agent's log appended to a file (every
    /// restart too): for tests that check log lines.
    pub fn start_logged(extra_args: &[&str]) -> Self {
        Self::start_with(extra_args, true)
    }

    fn start_with(extra_args: &[&str], logged: bool) -> Self {
        let mut me = Self::prepare_with(logged);
        me.spawn_agent(extra_args);
        me
    }

    /// The lab and this agent's paths, with no agent running yet: start
    /// one with [`AgentLab::spawn_with`] (or [`AgentLab::restart`]).
    pub fn prepare() -> Self {
        Self::prepare_with(false)
    }

    /// [`AgentLab::prepare`], the agents' logs appended to a file (see
    /// [`AgentLab::start_logged`]).
    pub fn prepare_logged() -> Self {
        Self::prepare_with(true)
    }

    fn prepare_with(logged: bool) -> Self {
        static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lab = Lab::new().expect("build the namespace lab");
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/scanwatch-test-{}", lab.target_ns));
        let alert_log =
            std::env::temp_dir().join(format!("scanwatch-test-{}/alerts.jsonl", lab.target_ns));
        let control_socket = alert_log.with_file_name("control.sock");
        let agent_log = logged.then(|| alert_log.with_file_name("agent.log"));
        Self {
            lab,
            _serial: serial,
            pin_dir,
            alert_log,
            agent_log,
            control_socket,
            agent_pid: 0,
        }
    }

    /// Starts an agent command of the caller's making (which must use this
    /// lab's pin dir, alert log and control socket) without waiting for it.
    pub fn spawn_with(&mut self, cmd: Command) {
        self.agent_pid = self.lab.spawn(cmd).expect("start the agent");
    }

    /// Waits until the agent is ready (see `wait_ready`).
    pub fn wait_until_ready(&self) {
        self.wait_ready();
    }

    /// Starts `scanwatch run` on the target veth with this lab's pin dir,
    /// alert log and control socket, and waits until it is ready.
    fn spawn_agent(&mut self, extra_args: &[&str]) {
        let mut cmd = self.lab.in_target();
        cmd.arg(agent_bin())
            .args([
                "run",
                "--iface",
                &self.lab.target_if,
                "--interval",
                "1",
                "--pin-dir",
            ])
            .arg(&self.pin_dir)
            .arg("--alert-log")
            .arg(&self.alert_log)
            .arg("--control-socket")
            .arg(&self.control_socket)
            .arg("--evidence-dir")
            .arg(self.evidence_dir())
            .args(extra_args);
        if let Some(log) = &self.agent_log {
            if let Some(dir) = log.parent() {
                std::fs::create_dir_all(dir).expect("log dir");
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("agent log file");
            cmd.stderr(file);
        }
        self.agent_pid = self.lab.spawn(cmd).expect("start the agent");
        self.wait_ready();
    }

    /// This lab's evidence directory (beside its alert log).
    pub fn evidence_dir(&self) -> PathBuf {
        self.alert_log.with_file_name("evidence")
    }

    /// Starts the agent again with the same paths (after a stop or a kill).
    pub fn restart(&mut self, extra_args: &[&str]) {
        self.spawn_agent(extra_args);
    }

    /// Ready: it answers on its control socket and has pinned its maps. The
    /// agent removes stale pins before it binds the socket and pins its own
    /// after, so pins left by a killed agent do not count.
    fn wait_ready(&self) {
        let ready = self.pin_dir.join("IFACE_NAMES");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(ready.exists() && self.ctl(&["status"]).status.success()) {
            assert!(
                Path::new(&format!("/proc/{}", self.agent_pid)).exists(),
                "agent exited before it was ready"
            );
            assert!(Instant::now() < deadline, "agent not ready after 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's log so far ([`AgentLab::start_logged`] only).
    pub fn log_text(&self) -> String {
        self.agent_log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// `scanwatch top --json --limit 0` from the root namespace (pins are shared).
    pub fn top(&self) -> Vec<serde_json::Value> {
        self.top_limit(0)
    }

    fn top_limit(&self, limit: usize) -> Vec<serde_json::Value> {
        let out = run(Command::new(agent_bin())
            .args(["top", "--json", "--limit", &limit.to_string(), "--pin-dir"])
            .arg(&self.pin_dir))
        .expect("scanwatch top --json");
        serde_json::from_slice(&out.stdout).expect("top prints a JSON array")
    }

    /// The `top --json` object of one source among the 100 busiest.
    pub fn source(&self, ip: &str) -> Option<serde_json::Value> {
        self.top_limit(100)
            .into_iter()
            .find(|o| is_source(&o["source"], ip))
    }

    /// Runs a command in the scanner namespace and returns its output.
    pub fn scan(&self, args: &[&str]) -> Output {
        let mut cmd = self.lab.in_scanner();
        cmd.args(args);
        run(&mut cmd).expect("scanner command")
    }

    /// Alert lines written so far.
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.alert_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("alert lines are JSON"))
            .collect()
    }

    /// Waits up to `timeout` until there are alerts about `source` naming
    /// every type in `expected`; returns them all (possibly incomplete on time-out).
    pub fn wait_alert_types(
        &self,
        source: &str,
        expected: &[&str],
        timeout: Duration,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let alerts: Vec<serde_json::Value> = self
                .alerts()
                .into_iter()
                .filter(|a| is_source(&a["source"], source))
                .collect();
            let named = |t: &str| alerts.iter().any(|a| scan_types(a).iter().any(|x| x == t));
            if (!alerts.is_empty() && expected.iter().all(|t| named(t)))
                || Instant::now() >= deadline
            {
                return alerts;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `timeout` for an alert about `source`; returns the first.
    pub fn wait_alert(&self, source: &str, timeout: Duration) -> Option<serde_json::Value> {
        self.wait_alert_types(source, &[], timeout)
            .into_iter()
            .next()
    }

    /// Runs a `scanwatch` control command (block, unblock, blocks, status)
    /// against this agent's socket.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(agent_bin())
            .args(args)
            .arg("--control-socket")
            .arg(&self.control_socket)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("scanwatch control command")
    }

    /// Stops the agent with SIGTERM; returns whether it exited with status 0.
    pub fn stop_agent(&mut self) -> bool {
        let status = self.lab.stop(self.agent_pid, Duration::from_secs(10));
        matches!(status, Some(s) if s.success())
    }
}

impl Drop for AgentLab {
    fn drop(&mut self) {
        // The lab kills the agent; remove pins it could not.
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        if let Some(dir) = self.alert_log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The packaged systemd unit.
pub const UNIT: &str = include_str!("../../../deploy/debian/scanwatch.service");

/// The capabilities the unit grants (`CapabilityBoundingSet=`), e.g. `CAP_BPF`.
pub fn unit_capabilities() -> Vec<String> {
    let caps: Vec<String> = UNIT
        .lines()
        .filter_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect();
    assert!(!caps.is_empty(), "the unit sets CapabilityBoundingSet=");
    caps
}

/// Appends `setpriv` to `cmd` so that what follows runs with only `caps`
/// (names like `CAP_BPF`): bounding, inheritable and ambient sets, as a
/// unit's `CapabilityBoundingSet=`/`AmbientCapabilities=` leave a root service.
pub fn with_only_capabilities(cmd: &mut Command, caps: &[String]) {
    let list: String = caps
        .iter()
        .map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    cmd.arg("setpriv")
        .arg(format!("--inh-caps=-all{list}"))
        .arg(format!("--ambient-caps=-all{list}"))
        .arg(format!("--bounding-set=-all{list}"))
        .arg("--");
}

/// The capability numbers of the names `with_only_capabilities` takes.
pub fn capability_mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| match c.as_str() {
            "CAP_NET_ADMIN" => 1u64 << 12,
            "CAP_SYS_ADMIN" => 1 << 21,
            "CAP_SYS_RESOURCE" => 1 << 24,
            "CAP_PERFMON" => 1 << 38,
            "CAP_BPF" => 1 << 39,
            other => panic!("capability {other} not known to the tests"),
        })
        .fold(0, |m, b| m | b)
}

/// Probe counts by kind, in the order of `scanwatch top --json` fields.
pub const KINDS: [&str; 6] = [
    "syn",
    "stealth",
    "udp",
    "icmp_echo",
    "icmp_other_probe",
    "fragment",
];

/// What nmap says it sent (`--packet-trace` SENT lines), classified with the
/// same rules as the XDP program: the ground truth for the agent's counters.
pub fn nmap_sent(trace: &str) -> std::collections::BTreeMap<&'static str, u64> {
    use scanwatch_common::{ProbeKind, classify_icmp, classify_icmpv6, classify_tcp};
    let mut counts: std::collections::BTreeMap<&'static str, u64> =
        KINDS.iter().map(|k| (*k, 0)).collect();
    for line in trace.lines().filter(|l| l.starts_with("SENT")) {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let kind: Option<ProbeKind> = match tokens.get(2).copied() {
            Some("TCP") => tokens
                .iter()
                .position(|t| *t == ">")
                .and_then(|i| tokens.get(i + 2))
                .and_then(|flags| classify_tcp(tcp_flags(flags))),
            Some("UDP") => Some(ProbeKind::Udp),
            Some("ICMP") => icmp_type(line).and_then(classify_icmp),
            Some("ICMPv6") => icmp_type(line).and_then(classify_icmpv6),
            _ => None,
        };
        if let Some(kind) = kind {
            *counts.entry(kind.name()).or_default() += 1;
        }
    }
    counts
}

fn tcp_flags(letters: &str) -> u8 {
    letters.chars().fold(0, |f, c| {
        f | match c {
            'F' => 0x01,
            'S' => 0x02,
            'R' => 0x04,
            'P' => 0x08,
            'A' => 0x10,
            'U' => 0x20,
            'E' => 0x40,
            'C' => 0x80,
            _ => 0,
        }
    })
}

fn icmp_type(line: &str) -> Option<u8> {
    let at = line.find("type=")? + 5;
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A MAC address from `ip link` text (`aa:bb:cc:dd:ee:ff`).
pub fn mac(text: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, p) in text.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).expect("MAC");
    }
    m
}

/// Sends raw frames out of the scanner veth (AF_PACKET), from a thread in
/// the scanner namespace. Returns (sent, refused).
pub fn send_frames(
    ns: PathBuf,
    ifname: String,
    frames: impl Iterator<Item = Vec<u8>> + Send + 'static,
) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let netns = std::fs::File::open(&ns).expect("netns");
        // SAFETY: setns on a valid namespace fd, for this thread only.
        assert_eq!(
            unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&netns), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        let ifindex = scanwatch::kernel::object::Interface::resolve(&ifname)
            .expect("scanner veth")
            .ifindex;
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(fd >= 0, "AF_PACKET socket");
        // SAFETY: a zeroed sockaddr_ll is valid; we fill family and ifindex.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: addr is a valid sockaddr_ll of the given size.
        let bound = unsafe {
            libc::bind(
                fd,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(bound, 0, "bind AF_PACKET");
        let (mut sent, mut refused) = (0u64, 0u64);
        for f in frames {
            // SAFETY: f is a valid buffer of f.len() bytes.
            let n = unsafe { libc::send(fd, f.as_ptr().cast(), f.len(), 0) };
            if n == f.len() as isize {
                sent += 1;
            } else {
                refused += 1;
            }
        }
        // SAFETY: closing the socket we opened.
        unsafe { libc::close(fd) };
        (sent, refused)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_nmap_trace() {
        let trace = "\
SENT (0.0300s) ARP who-has 198.18.0.2 tell 198.18.0.11
SENT (0.0370s) TCP 198.18.0.11:58787 > 198.18.0.2:443 S ttl=42 id=1 iplen=44  seq=1 win=1024 <mss 1460>
SENT (0.0371s) TCP 198.18.0.11:58787 > 198.18.0.2:80 A ttl=42 id=1 iplen=40  seq=1 win=1024
SENT (0.0372s) TCP 198.18.0.11:58787 > 198.18.0.2:80 FPU ttl=42 id=1 iplen=40  seq=1 win=1024
SENT (0.0373s) ICMP [198.18.0.16 > 198.19.0.1 Echo request (type=8/code=0) id=1 seq=0] IP [ttl=40]
SENT (0.0374s) ICMP [198.18.0.16 > 198.19.0.1 Timestamp request (type=13/code=0) id=1 seq=0] IP [ttl=40]
SENT (0.0375s) UDP 198.18.0.15:5 > 198.18.0.2:53 ttl=40 id=1 iplen=40
SENT (0.0376s) TCP [fd00::11]:5 > [fd00::2]:22 S ttl=40 flow=0 payloadlen=24
RCVD (0.0377s) TCP 198.18.0.2:443 > 198.18.0.11:58787 RA ttl=64
";
        let c = super::nmap_sent(trace);
        assert_eq!(c["syn"], 2);
        assert_eq!(c["stealth"], 1);
        assert_eq!(c["icmp_echo"], 1);
        assert_eq!(c["icmp_other_probe"], 1);
        assert_eq!(c["udp"], 1);
    }
}
