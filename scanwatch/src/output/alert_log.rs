//! Alerts with evidence: one JSON object per line, appended to the alert
//! log (and logged). Each line is written with a single `write` on an
//! `O_APPEND` file, so a line is either in the file or was never accepted
//! (a partial line left by a failed write, e.g. on a full disk, is cut off
//! again); SIGHUP reopens the file for log rotation.
//!
//! When the log cannot be written (disk full, I/O error) or reopened
//! (permissions), the agent keeps running: the lines wait in memory (at most
//! [`MAX_BACKLOG_LINES`]; beyond, the oldest are dropped and counted), are
//! retried every second and on every new alert, and the failure is logged
//! once, then at most once a minute, and once more when writes succeed again.

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

#[derive(Debug, thiserror::Error)]
pub enum AlertLogError {
    #[error("alert log {path}: cannot {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("cannot encode alert: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Most alert lines kept in memory while the log cannot be written.
pub const MAX_BACKLOG_LINES: usize = 10_000;
/// How often a continuing failure is logged again.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How often a failed reopen (after SIGHUP) is retried.
pub const REOPEN_RETRY: Duration = Duration::from_secs(5);

/// What went wrong with the alert log, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlertLogStats {
    /// Writes that failed (each retry of a waiting line counts).
    pub write_errors: u64,
    /// Reopens (SIGHUP, retries) that failed.
    pub reopen_errors: u64,
    /// Alerts never written: dropped from a full backlog.
    pub dropped: u64,
    /// Alerts waiting in memory to be written.
    pub backlog: u64,
}

/// A failure being reported (rate-limited).
#[derive(Debug)]
struct Failing {
    last_logged: Instant,
    /// Failed writes or reopens since the last message.
    unreported: u64,
    /// Since the failure began.
    total: u64,
}

/// The alert log file.
pub struct AlertLog {
    path: PathBuf,
    file: File,
    backlog: VecDeque<Vec<u8>>,
    failing: Option<Failing>,
    /// A reopen failed: retry every [`REOPEN_RETRY`] (the old file is kept meanwhile).
    reopen_due: Option<Instant>,
    stats: AlertLogStats,
    /// Messages logged about failures (tests check the rate limit).
    failure_messages: u64,
}

impl AlertLog {
    /// Opens (creating it and its directory if needed) for appending.
    pub fn open(path: &Path) -> Result<Self, AlertLogError> {
        Ok(Self {
            path: path.to_path_buf(),
            file: open_append(path)?,
            backlog: VecDeque::new(),
            failing: None,
            reopen_due: None,
            stats: AlertLogStats::default(),
            failure_messages: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> AlertLogStats {
        AlertLogStats {
            backlog: self.backlog.len() as u64,
            ..self.stats
        }
    }

    /// Messages logged about failures so far.
    pub fn failure_messages(&self) -> u64 {
        self.failure_messages
    }

    /// Reopens the path (after rotation moved the old file away). On
    /// failure the old file stays in use and the reopen is retried by
    /// [`AlertLog::tick`].
    pub fn reopen(&mut self) -> Result<(), AlertLogError> {
        self.reopen_at(Instant::now())
    }

    fn reopen_at(&mut self, now: Instant) -> Result<(), AlertLogError> {
        match open_append(&self.path) {
            Ok(file) => {
                self.file = file;
                self.reopen_due = None;
                self.flush_at(now);
                if self.backlog.is_empty() {
                    self.recovered();
                }
                Ok(())
            }
            Err(e) => {
                self.stats.reopen_errors += 1;
                self.reopen_due = Some(now + REOPEN_RETRY);
                self.report(
                    now,
                    &format!(
                        "{e}; still appending to the file opened before, retrying every {} s",
                        REOPEN_RETRY.as_secs()
                    ),
                );
                Err(e)
            }
        }
    }

    /// Appends one line. `Err` when it could not be written now: it then
    /// waits in memory and is retried (the error is logged, rate-limited).
    pub fn append(&mut self, alert: &impl serde::Serialize) -> Result<(), AlertLogError> {
        self.append_at(alert, Instant::now())
    }

    fn append_at(
        &mut self,
        alert: &impl serde::Serialize,
        now: Instant,
    ) -> Result<(), AlertLogError> {
        let mut line = serde_json::to_vec(alert)?;
        line.push(b'\n');
        self.push_line(line, now)
    }

    /// Queues a line and writes what is waiting, oldest first.
    fn push_line(&mut self, line: Vec<u8>, now: Instant) -> Result<(), AlertLogError> {
        if self.backlog.len() >= MAX_BACKLOG_LINES {
            self.backlog.pop_front();
            self.stats.dropped += 1;
        }
        self.backlog.push_back(line);
        match self.flush_at(now) {
            None => Ok(()),
            Some(source) => Err(AlertLogError::Io {
                path: self.path.clone(),
                op: "append",
                source,
            }),
        }
    }

    /// Every second: retry a failed reopen and write waiting lines.
    pub fn tick(&mut self) {
        let now = Instant::now();
        if self.reopen_due.is_some_and(|due| now >= due) {
            let _ = self.reopen_at(now);
        } else if !self.backlog.is_empty() {
            self.flush_at(now);
        }
    }

    /// Writes waiting lines; returns the error that stopped it, if any.
    fn flush_at(&mut self, now: Instant) -> Option<std::io::Error> {
        let was_failing = !self.backlog.is_empty() && self.failing.is_some();
        while let Some(line) = self.backlog.front() {
            if let Err(e) = write_line(&mut self.file, line) {
                self.stats.write_errors += 1;
                let message = format!(
                    "alert log {}: cannot append: {e}; {} alerts kept in memory (at most {MAX_BACKLOG_LINES}, {} dropped so far), retrying every second",
                    self.path.display(),
                    self.backlog.len(),
                    self.stats.dropped
                );
                self.report(now, &message);
                return Some(e);
            }
            self.backlog.pop_front();
        }
        if was_failing && self.reopen_due.is_none() {
            self.recovered();
        }
        None
    }

    /// Logs a failure: the first at once, then at most once a minute.
    fn report(&mut self, now: Instant, message: &str) {
        match &mut self.failing {
            None => {
                self.failing = Some(Failing {
                    last_logged: now,
                    unreported: 0,
                    total: 1,
                });
                self.failure_messages += 1;
                log::error!("{message} (repeats are logged once a minute)");
            }
            Some(f) => {
                f.total += 1;
                f.unreported += 1;
                if now.saturating_duration_since(f.last_logged) >= FAILURE_LOG_INTERVAL {
                    log::error!(
                        "{message} ({} more failures since the last message)",
                        f.unreported
                    );
                    f.last_logged = now;
                    f.unreported = 0;
                    self.failure_messages += 1;
                }
            }
        }
    }

    fn recovered(&mut self) {
        if let Some(f) = self.failing.take() {
            self.failure_messages += 1;
            log::info!(
                "alert log {}: writable again after {} failures; every waiting alert written ({} dropped in total)",
                self.path.display(),
                f.total,
                self.stats.dropped
            );
        }
    }
}

/// Stopping with alerts still waiting (the log never recovered): one last
/// try, then each one goes to the agent's own log (journald), not nowhere.
impl Drop for AlertLog {
    fn drop(&mut self) {
        if self.backlog.is_empty() {
            return;
        }
        self.flush_at(Instant::now());
        if self.backlog.is_empty() {
            return;
        }
        log::error!(
            "alert log {}: stopping with {} alerts never written; they follow",
            self.path.display(),
            self.backlog.len()
        );
        for line in &self.backlog {
            log::error!(
                "unwritten alert: {}",
                String::from_utf8_lossy(line).trim_end()
            );
        }
    }
}

fn open_append(path: &Path) -> Result<File, AlertLogError> {
    let io = |op| {
        move |source| AlertLogError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io("create its directory"))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io("open"))
}

/// Writes one whole line or nothing: a write that fails part way (a full
/// disk) is cut off again, so the next line starts on a line of its own.
fn write_line(file: &mut File, line: &[u8]) -> std::io::Result<()> {
    let before = file.metadata()?.len();
    file.write_all(line).inspect_err(|_| {
        if file.metadata().is_ok_and(|m| m.len() > before) {
            // Best effort: the error being reported is the write's.
            let _ = file.set_len(before);
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::output::alert::tests::sample;

    #[test]
    fn appends_lines_and_reopens_after_rotation() {
        let dir = std::env::temp_dir().join(format!("scanwatch-alerts-{}", std::process::id()));
        let path = dir.join("sub/alerts.jsonl");
        let mut log = AlertLog::open(&path).unwrap();
        log.append(&sample()).unwrap();
        std::fs::rename(&path, dir.join("sub/alerts.jsonl.1")).unwrap();
        log.reopen().unwrap();
        log.append(&sample()).unwrap();
        log.append(&sample()).unwrap();
        let rotated = std::fs::read_to_string(dir.join("sub/alerts.jsonl.1")).unwrap();
        let current = std::fs::read_to_string(&path).unwrap();
        assert_eq!(rotated.lines().count(), 1);
        assert_eq!(current.lines().count(), 2);
        for line in current.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// /dev/full fails every write with ENOSPC: errors are counted, lines
    /// wait (bounded, the overflow counted as dropped), and the failure is
    /// logged once, then once a minute, not once per alert.
    #[test]
    fn write_errors_are_counted_kept_and_logged_rate_limited() {
        let mut log = AlertLog::open(Path::new("/dev/full")).unwrap();
        let t0 = Instant::now();
        let e = log.append_at(&sample(), t0).unwrap_err();
        assert!(e.to_string().contains("/dev/full: cannot append"), "{e}");
        assert!(e.to_string().contains("No space left on device"), "{e}");
        for i in 1..100 {
            assert!(
                log.append_at(&sample(), t0 + Duration::from_millis(i))
                    .is_err()
            );
        }
        assert_eq!(log.failure_messages(), 1, "one message for 100 failures");
        let s = log.stats();
        assert_eq!((s.write_errors, s.backlog, s.dropped), (100, 100, 0));
        log.append_at(&sample(), t0 + FAILURE_LOG_INTERVAL)
            .unwrap_err();
        assert_eq!(log.failure_messages(), 2, "again after a minute");
        for _ in 0..MAX_BACKLOG_LINES {
            let _ = log.append_at(&sample(), t0 + FAILURE_LOG_INTERVAL);
        }
        let s = log.stats();
        assert_eq!(s.backlog, MAX_BACKLOG_LINES as u64, "bounded");
        assert_eq!(s.dropped, 101, "the overflow is counted");
        assert_eq!(log.failure_messages(), 2);
    }

    /// Lines that failed are written, in order, once the file takes them.
    #[test]
    fn waiting_lines_are_written_when_the_log_recovers() {
        let dir = std::env::temp_dir().join(format!("scanwatch-recover-{}", std::process::id()));
        let path = dir.join("alerts.jsonl");
        let mut log = AlertLog::open(&path).unwrap();
        // Point the log at /dev/full, as if the disk had filled up.
        log.file = OpenOptions::new().append(true).open("/dev/full").unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            log.append_at(&sample(), t0).unwrap_err();
        }
        assert_eq!(log.stats().backlog, 3);
        // Room again (the real disk-full case: tests/alert_log_faults.rs).
        log.reopen_at(t0).unwrap();
        assert_eq!(log.stats().backlog, 0);
        assert_eq!(log.failure_messages(), 2, "the failure and the recovery");
        log.append_at(&sample(), t0).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_reopen_keeps_the_old_file_and_retries() {
        let dir = std::env::temp_dir().join(format!("scanwatch-reopen-{}", std::process::id()));
        let path = dir.join("sub/alerts.jsonl");
        let mut log = AlertLog::open(&path).unwrap();
        // The directory becomes a file: reopening cannot create the log.
        std::fs::rename(&path, dir.join("alerts.jsonl.1")).unwrap();
        std::fs::remove_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub"), b"").unwrap();
        let t0 = Instant::now();
        assert!(log.reopen_at(t0).is_err());
        assert_eq!(log.stats().reopen_errors, 1);
        log.append_at(&sample(), t0).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("alerts.jsonl.1"))
                .unwrap()
                .lines()
                .count(),
            1,
            "written to the file opened before"
        );
        std::fs::remove_file(dir.join("sub")).unwrap();
        assert!(log.reopen_due.is_some());
        log.reopen_at(t0 + REOPEN_RETRY).unwrap();
        log.append_at(&sample(), t0).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Captures log messages (this test binary's global logger).
    struct Capture;
    static CAPTURED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            if let Ok(mut v) = CAPTURED.lock() {
                v.push(record.args().to_string());
            }
        }
        fn flush(&self) {}
    }

    #[test]
    fn alerts_still_waiting_at_stop_go_to_the_agent_log() {
        static LOGGER: Capture = Capture;
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(log::LevelFilter::Info);
        let mut log = AlertLog::open(Path::new("/dev/full")).unwrap();
        let mut alert = sample();
        alert.source = "198.18.0.123".into();
        for _ in 0..3 {
            log.append(&alert).unwrap_err();
        }
        drop(log);
        let captured = CAPTURED.lock().unwrap().clone();
        assert!(
            captured
                .iter()
                .any(|m| m
                    == "alert log /dev/full: stopping with 3 alerts never written; they follow"),
            "{captured:?}"
        );
        let unwritten = captured
            .iter()
            .filter(|m| m.starts_with("unwritten alert: {") && m.contains("198.18.0.123"))
            .count();
        assert_eq!(unwritten, 3);
    }

    #[test]
    fn unwritable_path_is_an_error_not_a_panic() {
        let e = AlertLog::open(Path::new("/proc/scanwatch/alerts.jsonl"))
            .err()
            .expect("error");
        assert!(
            e.to_string().contains("/proc/scanwatch/alerts.jsonl"),
            "{e}"
        );
    }
}
