//! Running under systemd: readiness notification (`Type=notify`: one
//! datagram to `$NOTIFY_SOCKET`, a path or an abstract `@name`) and log lines
//! without our own timestamps when journald adds them, with the kernel-style
//! `<N>` priority prefix journald understands.

use std::{
    ffi::OsStr,
    io::{self, Write as _},
    os::unix::{
        ffi::OsStrExt as _,
        net::{SocketAddr, UnixDatagram},
    },
};

const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET {socket:?}: {source}")]
    Send { socket: String, source: io::Error },
}

/// Sends `state` (e.g. `READY=1`) to the socket named by `$NOTIFY_SOCKET`;
/// does nothing when it is not set (not started by systemd as `Type=notify`).
pub fn notify(state: &str) -> Result<(), NotifyError> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state),
        _ => Ok(()),
    }
}

/// Sends `state` to `socket`: a filesystem path, or an abstract socket name
/// written with a leading `@`.
pub fn notify_to(socket: &OsStr, state: &str) -> Result<(), NotifyError> {
    let err = |source| NotifyError::Send {
        socket: socket.to_string_lossy().into_owned(),
        source,
    };
    let addr = socket_addr(socket).map_err(err)?;
    let sock = UnixDatagram::unbound().map_err(err)?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr).map_err(err)?;
    if sent != state.len() {
        return Err(err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", state.len()),
        )));
    }
    Ok(())
}

fn socket_addr(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.split_first() {
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name)
        }
        Some((b'/', _)) => SocketAddr::from_pathname(socket),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract @name",
        )),
    }
}

/// Whether stderr goes to the journal (systemd sets `JOURNAL_STREAM` for
/// services logging there) or we run as a systemd unit (`INVOCATION_ID`).
pub fn logs_to_journal() -> bool {
    ["JOURNAL_STREAM", "INVOCATION_ID"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// The syslog priority journald reads from a `<N>` line prefix.
pub const fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Sets up logging to stderr (`RUST_LOG`, default `info`): with timestamps on
/// a terminal or in a file, without them (and with priority prefixes) for
/// the journal.
pub fn init_logging() {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if logs_to_journal() {
        builder.format(|buf, record| {
            writeln!(
                buf,
                "<{}>{}: {}",
                syslog_priority(record.level()),
                record.target(),
                record.args()
            )
        });
    }
    builder.init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifies_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("scanwatch-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn notifies_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("scanwatch-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn bad_sockets_are_errors() {
        let e = notify_to(OsStr::new("relative/path"), "READY=1").unwrap_err();
        assert!(e.to_string().contains("relative/path"), "{e}");
        let e = notify_to(OsStr::new("/nonexistent/scanwatch.sock"), "READY=1").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/scanwatch.sock"), "{e}");
    }

    #[test]
    fn priorities() {
        assert_eq!(syslog_priority(log::Level::Error), 3);
        assert_eq!(syslog_priority(log::Level::Info), 6);
    }
}
