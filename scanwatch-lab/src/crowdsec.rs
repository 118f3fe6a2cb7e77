//! A CrowdSec Local API of a test's own (Debian's `crowdsec`, run as
//! `crowdsec -no-cs` with a configuration and SQLite database under a
//! directory of the test's, listening on [`LAPI`] in the lab's scanner
//! namespace; it never talks to the central API), and `cscli` with the
//! same configuration.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use crate::netns::Lab;

/// The Local API, in the scanner namespace.
pub const LAPI: &str = "198.18.0.1:8080";

/// A CrowdSec Local API of the test's own.
pub struct Crowdsec {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub pid: u32,
}

impl Crowdsec {
    /// Writes its configuration under `dir` and starts it.
    pub fn start(lab: &mut Lab, dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("data")).expect("crowdsec dir");
        let d = dir.display();
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "common:\n  daemonize: false\n  log_media: stdout\n  log_level: info\n  working_dir: {d}\n\
                 config_paths:\n  config_dir: {d}/\n  data_dir: {d}/data/\n  simulation_path: {d}/simulation.yaml\n  \
                 hub_dir: {d}/hub/\n  index_path: {d}/hub/.index.json\n  notification_dir: {d}/notifications/\n  \
                 plugin_dir: /usr/lib/crowdsec/plugins/\n\
                 db_config:\n  log_level: info\n  type: sqlite\n  use_wal: true\n  db_path: {d}/data/crowdsec.db\n\
                 api:\n  client:\n    credentials_path: {d}/local_api_credentials.yaml\n  \
                 server:\n    log_level: info\n    listen_uri: {LAPI}\n    profiles_path: {d}/profiles.yaml\n\
                 prometheus:\n  enabled: false\n"
            ),
        )
        .expect("crowdsec config");
        std::fs::write(dir.join("simulation.yaml"), "simulation: off\n").expect("simulation");
        std::fs::write(
            dir.join("profiles.yaml"),
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\n\
             decisions:\n - type: ban\n   duration: 4h\non_success: break\n",
        )
        .expect("profiles");
        let mut me = Self {
            dir: dir.to_path_buf(),
            config,
            pid: 0,
        };
        me.launch(lab);
        // cscli's own machine, for `decisions add` and `alerts list`.
        let creds = dir.join("local_api_credentials.yaml");
        let o = me.cscli(
            lab,
            &["machines", "add", "cscli", "--auto", "--force", "-f"],
            Some(&creds),
        );
        assert!(o.status.success(), "cscli machines add: {}", err(&o));
        me
    }

    /// Starts `crowdsec -no-cs` and waits until the Local API answers.
    pub fn launch(&mut self, lab: &mut Lab) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("crowdsec.log"))
            .expect("crowdsec log");
        let mut cmd = lab.in_scanner();
        cmd.args(["crowdsec", "-no-cs", "-c"])
            .arg(&self.config)
            .current_dir(&self.dir)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.pid = lab.spawn(cmd).expect("start crowdsec");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let o = lab
                .in_scanner()
                .args([
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "2",
                ])
                .arg(format!("http://{LAPI}/v1/decisions"))
                .output()
                .expect("curl");
            if String::from_utf8_lossy(&o.stdout) == "403" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Local API did not come up: {}",
                std::fs::read_to_string(self.dir.join("crowdsec.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn stop(&mut self, lab: &mut Lab) {
        assert!(
            lab.stop(self.pid, Duration::from_secs(10)).is_some(),
            "crowdsec did not stop on SIGTERM"
        );
    }

    /// `cscli -c CONFIG ARGS [FILE]`, in the scanner namespace.
    pub fn cscli(&self, lab: &Lab, args: &[&str], file: Option<&Path>) -> Output {
        let mut cmd = lab.in_scanner();
        cmd.arg("cscli").arg("-c").arg(&self.config).args(args);
        if let Some(f) = file {
            cmd.arg(f);
        }
        cmd.stdin(Stdio::null()).output().expect("cscli")
    }

    /// A bouncer's API key, in a root-only file.
    pub fn bouncer(&self, lab: &Lab, name: &str) -> PathBuf {
        let o = self.cscli(lab, &["bouncers", "add", name, "-o", "raw"], None);
        assert!(o.status.success(), "cscli bouncers add: {}", err(&o));
        let key = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert_eq!(key.len(), 32, "an API key: {key:?}");
        secret(&self.dir.join(format!("{name}.key")), &key)
    }

    /// A machine's password, in a root-only file.
    pub fn machine(&self, lab: &Lab, name: &str) -> PathBuf {
        let password = format!("{name}-password-of-the-lab");
        let creds = self.dir.join(format!("{name}.yaml"));
        let o = self.cscli(
            lab,
            &[
                "machines",
                "add",
                name,
                "--password",
                &password,
                "--force",
                "-f",
            ],
            Some(&creds),
        );
        assert!(o.status.success(), "cscli machines add: {}", err(&o));
        secret(&self.dir.join(format!("{name}.password")), &password)
    }

    pub fn decisions(&self, lab: &Lab, args: &[&str]) {
        let mut all = vec!["decisions"];
        all.extend_from_slice(args);
        let o = self.cscli(lab, &all, None);
        assert!(o.status.success(), "cscli {all:?}: {}", err(&o));
    }

    /// `cscli alerts list -o json`.
    pub fn alerts(&self, lab: &Lab, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["alerts", "list", "-o", "json", "-l", "0"];
        args.extend_from_slice(extra);
        let o = self.cscli(lab, &args, None);
        assert!(o.status.success(), "cscli alerts list: {}", err(&o));
        serde_json::from_slice::<Option<Vec<serde_json::Value>>>(&o.stdout)
            .expect("alerts JSON")
            .unwrap_or_default()
    }
}

pub fn secret(path: &Path, value: &str) -> PathBuf {
    std::fs::write(path, format!("{value}\n")).expect("secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.to_path_buf()
}

pub fn err(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
