//! nginx in the lab's target namespace, and what web-layer tests need
//! around it: a site of existing pages (no favicon), a query page for
//! sqlmap, TLS with a self-signed certificate, the access log read back,
//! deterministic wordlists, and one source address per tool run.
//!
//! The facts these helpers rely on (each tool's User-Agent, keep-alive,
//! requests per run) are measured by `scanwatch-integration/tests/lab_web.rs`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::netns::{Lab, LabError, TARGET_V4, run};

/// The name a TLS client asks for (`--resolve lab.example:443:198.18.0.2`).
pub const TLS_NAME: &str = "lab.example";

/// The access log's format: connection serial, request number on that
/// connection, status, client address, request line, User-Agent.
const LOG_FORMAT: &str = "log_format lab '$connection $connection_requests $status $remote_addr \
                          \"$request\" \"$http_user_agent\"';";

/// What an nginx of the lab serves.
#[derive(Clone, Debug)]
pub struct NginxConfig {
    /// `listen` directives' arguments, e.g. `198.18.0.2:8080 backlog=4096`.
    pub listen: Vec<String>,
    /// The rest of the `server { }` block (locations, root, TLS files).
    pub server: String,
    /// Keep an access log ([`Nginx::access_log`]).
    pub access_log: bool,
    pub worker_processes: u32,
}

/// The site web-layer tests use ([`Nginx::site`]).
#[derive(Clone, Copy, Debug)]
pub struct Site {
    /// `/page1.html` .. `/page<pages>.html`, and `/index.html`.
    pub pages: usize,
    /// Also TLS on 443, with a self-signed certificate for [`TLS_NAME`].
    pub tls: bool,
}

/// A running nginx (its master in a process group the lab kills on drop).
pub struct Nginx {
    pub dir: PathBuf,
    pub pid: u32,
}

/// One line of the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// nginx's connection serial number: one per TCP connection.
    pub connection: u64,
    /// The request's number on its connection (1 = first).
    pub connection_request: u64,
    pub status: u16,
    pub remote: String,
    /// The request line, e.g. `GET /admin HTTP/1.1`.
    pub request: String,
    /// `-` when the request had none.
    pub user_agent: String,
}

impl Access {
    /// The request target (path and query), or "" for a malformed line.
    pub fn path(&self) -> &str {
        self.request.split(' ').nth(1).unwrap_or("")
    }

    /// One access log line in the [`LOG_FORMAT`].
    pub fn parse(line: &str) -> Option<Self> {
        let mut head = line.splitn(5, ' ');
        let connection = head.next()?.parse().ok()?;
        let connection_request = head.next()?.parse().ok()?;
        let status = head.next()?.parse().ok()?;
        let remote = head.next()?.to_string();
        // `"request" "user agent"`: nginx escapes quotes inside both.
        let rest = head.next()?.strip_prefix('"')?.strip_suffix('"')?;
        let (request, user_agent) = rest.rsplit_once("\" \"")?;
        Some(Self {
            connection,
            connection_request,
            status,
            remote,
            request: request.to_string(),
            user_agent: user_agent.to_string(),
        })
    }
}

impl Nginx {
    /// Starts nginx in the lab's target namespace with its own directory
    /// (`scanwatch-nginx-<target ns>` under the temp dir) and waits until
    /// it listens (it writes its pid file after binding).
    pub fn start(lab: &mut Lab, config: &NginxConfig) -> Result<Self, LabError> {
        let dir = std::env::temp_dir().join(format!("scanwatch-nginx-{}", lab.target_ns));
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        Self::start_in(lab, config, dir)
    }

    fn start_in(lab: &mut Lab, config: &NginxConfig, dir: PathBuf) -> Result<Self, LabError> {
        let d = dir.display();
        let log = if config.access_log {
            format!("{LOG_FORMAT}\naccess_log {d}/access.log lab;")
        } else {
            "access_log off;".to_string()
        };
        let listen: String = config
            .listen
            .iter()
            .map(|l| format!("listen {l}; "))
            .collect();
        let conf = format!(
            "daemon off;\nworker_processes {};\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ {log} client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; \
             uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             server {{ {listen}{} }} }}\n",
            config.worker_processes, config.server
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| io_error(&conf_path, e))?;
        let pid_file = dir.join("nginx.pid");
        let _ = std::fs::remove_file(&pid_file);
        let mut c = lab.in_target();
        c.arg("nginx")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let pid = lab.spawn(c)?;
        let me = Self { dir, pid };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pid_file.exists() {
            if Instant::now() >= deadline || !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(LabError::Command {
                    command: format!("nginx -c {}", conf_path.display()),
                    detail: format!(
                        "not listening after 10 s: {}",
                        std::fs::read_to_string(me.dir.join("error.log")).unwrap_or_default()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(me)
    }

    /// nginx serving `site` on 198.18.0.2:80 (and 443 with TLS): the pages,
    /// `/index.html`, `/item?id=N` (a page that shows its query parameter),
    /// no `/favicon.ico` (404), every other path 404; with an access log.
    pub fn site(lab: &mut Lab, site: Site) -> Result<Self, LabError> {
        let dir = std::env::temp_dir().join(format!("scanwatch-nginx-{}", lab.target_ns));
        let www = dir.join("www");
        std::fs::create_dir_all(&www).map_err(|e| io_error(&www, e))?;
        write_pages(&www, site.pages)?;
        let mut listen = vec![format!("{TARGET_V4}:80")];
        let d = dir.display();
        let mut server = format!(
            "root {d}/www; location = /item {{ default_type text/html; \
             return 200 \"<html><body>item $arg_id</body></html>\\n\"; }}"
        );
        if site.tls {
            self_signed_certificate(&dir)?;
            listen.push(format!("{TARGET_V4}:443 ssl"));
            server.push_str(&format!(
                " ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;"
            ));
        }
        let config = NginxConfig {
            listen,
            server,
            access_log: true,
            worker_processes: 2,
        };
        Self::start_in(lab, &config, dir)
    }

    /// The access log so far (empty without one).
    pub fn access_log(&self) -> Vec<Access> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(Access::parse)
            .collect()
    }

    /// The access log's lines from `remote`.
    pub fn requests_from(&self, remote: &str) -> Vec<Access> {
        self.access_log()
            .into_iter()
            .filter(|a| a.remote == remote)
            .collect()
    }

    /// SIGTERM (the master stops its workers), then removes its directory.
    pub fn stop(self, lab: &mut Lab) {
        lab.stop(self.pid, Duration::from_secs(10));
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn io_error(path: &Path, e: std::io::Error) -> LabError {
    LabError::Command {
        command: format!("write {}", path.display()),
        detail: e.to_string(),
    }
}

fn write_pages(www: &Path, pages: usize) -> Result<(), LabError> {
    let write = |name: String, body: String| {
        let path = www.join(name);
        std::fs::write(&path, body).map_err(|e| io_error(&path, e))
    };
    write(
        "index.html".into(),
        "<html><body>lab <a href=\"/page1.html\">page 1</a></body></html>\n".into(),
    )?;
    for i in 1..=pages {
        write(
            format!("page{i}.html"),
            format!(
                "<html><body>page {i} <a href=\"/page{}.html\">next</a></body></html>\n",
                i + 1
            ),
        )?;
    }
    Ok(())
}

/// `cert.pem` and `key.pem` in `dir`: RSA 2048, CN [`TLS_NAME`], one day.
pub fn self_signed_certificate(dir: &Path) -> Result<(), LabError> {
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj"])
        .arg(format!("/CN={TLS_NAME}"))
        .args(["-days", "1", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem")))?;
    Ok(())
}

/// Names a wordlist scanner tries first, as real lists have them.
const COMMON: [&str; 30] = [
    "admin",
    "backup",
    "config",
    ".git",
    ".env",
    "login",
    "wp-admin",
    "wp-login.php",
    "phpmyadmin",
    "server-status",
    "api",
    "test",
    "old",
    "tmp",
    "uploads",
    "images",
    "css",
    "js",
    "private",
    "secret",
    "db",
    "sql",
    "dump.sql",
    "backup.zip",
    ".htaccess",
    "robots.txt",
    "sitemap.xml",
    "cgi-bin",
    "console",
    "manager",
];

/// A deterministic wordlist of `len` entries (no leading `/`): common
/// names, then `lab000`, `lab001`..., and last `page1.html`..
/// `page<existing>.html` (pages of [`Nginx::site`], answered 200); every
/// other entry is answered 404.
pub fn wordlist(len: usize, existing: usize) -> Vec<String> {
    let existing = existing.min(len);
    let missing = len - existing;
    let mut words: Vec<String> = COMMON
        .iter()
        .take(missing)
        .map(|w| (*w).to_string())
        .collect();
    let numbered = missing - words.len();
    words.extend((0..numbered).map(|i| format!("lab{i:03}")));
    words.extend((1..=existing).map(|i| format!("page{i}.html")));
    words
}

/// Writes [`wordlist`] to `path`, one entry a line.
pub fn write_wordlist(path: &Path, len: usize, existing: usize) -> Result<Vec<String>, LabError> {
    let words = wordlist(len, existing);
    let mut text = words.join("\n");
    text.push('\n');
    std::fs::write(path, text).map_err(|e| io_error(path, e))?;
    Ok(words)
}

/// Makes `source` the address the scanner namespace's connections to the
/// target leave from (tools that cannot bind one): assigns it (a /24 of
/// the lab's net) if needed and replaces the host route to the target.
pub fn connect_from(lab: &Lab, source: &str) -> Result<(), LabError> {
    let assigned = run(Command::new("ip").args([
        "-n",
        &lab.scanner_ns,
        "-o",
        "addr",
        "show",
        "dev",
        &lab.scanner_if,
    ]))?;
    let listed = String::from_utf8_lossy(&assigned.stdout).into_owned();
    if !listed.contains(&format!(" {source}/")) {
        lab.add_scanner_address(&format!("{source}/24"))?;
    }
    run(Command::new("ip").args([
        "-n",
        &lab.scanner_ns,
        "route",
        "replace",
        &format!("{TARGET_V4}/32"),
        "dev",
        &lab.scanner_if,
        "src",
        source,
    ]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wordlist_is_deterministic_and_sized() {
        let w = wordlist(150, 5);
        assert_eq!(w.len(), 150);
        assert_eq!(w, wordlist(150, 5));
        assert_eq!(w[0], "admin");
        assert_eq!(w[30], "lab000");
        assert_eq!(w[144], "lab114");
        assert_eq!(
            w[145..],
            [
                "page1.html",
                "page2.html",
                "page3.html",
                "page4.html",
                "page5.html"
            ]
        );
        let mut sorted = w.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 150, "no duplicates");
        assert_eq!(wordlist(10, 0).len(), 10);
        assert_eq!(wordlist(3, 5), ["page1.html", "page2.html", "page3.html"]);
    }

    #[test]
    fn access_lines_parse() {
        let a = Access::parse(
            "90 2 404 198.18.0.1 \"GET /a7527fcd HTTP/1.1\" \"Mozilla/5.0 (X11; Linux x86_64)\"",
        )
        .expect("parses");
        assert_eq!(a.connection, 90);
        assert_eq!(a.connection_request, 2);
        assert_eq!(a.status, 404);
        assert_eq!(a.remote, "198.18.0.1");
        assert_eq!(a.path(), "/a7527fcd");
        assert_eq!(a.user_agent, "Mozilla/5.0 (X11; Linux x86_64)");
        let empty = Access::parse("3 1 400 198.18.0.1 \"\\x0A\" \"-\"").expect("parses");
        assert_eq!(empty.path(), "");
        assert_eq!(empty.user_agent, "-");
        assert!(Access::parse("garbage").is_none());
    }
}
