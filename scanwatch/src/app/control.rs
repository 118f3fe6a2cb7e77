//! The root-only control socket: a Unix socket (mode 0600) served by the
//! agent, one JSON request line and one JSON response line per connection.
//! The agent also checks the peer's uid (SO_PEERCRED) is 0.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _},
    net::UnixListener,
    sync::{mpsc, oneshot},
};

const MAX_REQUEST: usize = 64 * 1024;

/// A request to the agent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Block {
        target: String,
        ttl_seconds: Option<u64>,
        reason: Option<String>,
    },
    Unblock {
        target: String,
    },
    Blocks,
    Status,
}

/// The agent's answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Self {
        Self {
            ok: true,
            error: None,
            result: Some(result),
        }
    }

    pub fn err(e: impl ToString) -> Self {
        Self {
            ok: false,
            error: Some(e.to_string()),
            result: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {0} is in use by a running agent")]
    InUse(PathBuf),
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("permission denied: the control socket {0} is root-only (run as root)")]
    Denied(PathBuf),
    #[error("no scanwatch agent is listening on {0} (is `scanwatch run` running?)")]
    NoAgent(PathBuf),
    #[error("the agent refused: {0}")]
    Refused(String),
    #[error("bad answer from the agent: {0}")]
    BadAnswer(String),
}

/// A request waiting for the agent's loop.
pub type Pending = (Request, oneshot::Sender<Response>);

/// Binds the socket (root-only) and serves it, passing each request to the
/// agent's loop through `tx`.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let std_listener = std::os::unix::net::UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    std_listener.set_nonblocking(true).map_err(io)?;
    UnixListener::from_std(std_listener).map_err(io)
}

pub async fn serve(listener: UnixListener, tx: mpsc::Sender<Pending>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let root = stream.peer_cred().is_ok_and(|c| c.uid() == 0);
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read).take_limited();
            let response =
                match tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
                    .await
                {
                    _ if !root => Response::err("permission denied: root only"),
                    Ok(Ok(n)) if n > 0 && n <= MAX_REQUEST => match decode_request(&line) {
                        Ok(req) => {
                            let (otx, orx) = oneshot::channel();
                            if tx.send((req, otx)).await.is_err() {
                                Response::err("agent is stopping")
                            } else {
                                orx.await
                                    .unwrap_or_else(|_| Response::err("agent is stopping"))
                            }
                        }
                        Err(e) => Response::err(e),
                    },
                    _ => Response::err("bad request"),
                };
            let mut out =
                serde_json::to_vec(&response).unwrap_or_else(|_| br#"{"ok":false}"#.to_vec());
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}

/// Decodes and checks one request line (what the agent does with every
/// line it reads from the socket): JSON of a known command, at most
/// 64 KiB, a target that is an address or CIDR, a TTL the CLI would accept.
pub fn decode_request(line: &str) -> Result<Request, String> {
    if line.len() > MAX_REQUEST {
        return Err(format!("bad request: longer than {MAX_REQUEST} bytes"));
    }
    let req: Request = serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))?;
    match &req {
        Request::Block {
            target,
            ttl_seconds,
            reason,
        } => {
            crate::model::parse_target(target).map_err(|e| format!("bad request: {e}"))?;
            if let Some(ttl) = ttl_seconds
                && !(1..=MAX_TTL_SECONDS).contains(ttl)
            {
                return Err(format!(
                    "bad request: ttl_seconds {ttl} is out of range 1..={MAX_TTL_SECONDS}"
                ));
            }
            if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON) {
                return Err(format!(
                    "bad request: reason longer than {MAX_REASON} bytes"
                ));
            }
        }
        Request::Unblock { target } => {
            crate::model::parse_target(target).map_err(|e| format!("bad request: {e}"))?;
        }
        Request::Blocks | Request::Status => {}
    }
    Ok(req)
}

/// Longest block (as `scanwatch block --ttl` accepts): 365 days.
pub const MAX_TTL_SECONDS: u64 = 365 * 86_400;
/// Longest reason accepted (the kernel keeps the first 48 bytes).
pub const MAX_REASON: usize = 1024;

/// Reads at most MAX_REQUEST bytes.
trait TakeLimited {
    fn take_limited(self)
    -> tokio::io::BufReader<tokio::io::Take<tokio::net::unix::OwnedReadHalf>>;
}

impl TakeLimited for tokio::io::BufReader<tokio::net::unix::OwnedReadHalf> {
    fn take_limited(
        self,
    ) -> tokio::io::BufReader<tokio::io::Take<tokio::net::unix::OwnedReadHalf>> {
        use tokio::io::AsyncReadExt as _;
        tokio::io::BufReader::new(self.into_inner().take(MAX_REQUEST as u64 + 1))
    }
}

/// Sends one request (client side, blocking).
pub fn call(path: &Path, req: &Request) -> Result<serde_json::Value, ControlError> {
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => ControlError::Denied(path.to_path_buf()),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ControlError::NoAgent(path.to_path_buf())
        }
        _ => ControlError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::BadAnswer(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    let resp: Response = serde_json::from_str(&answer)
        .map_err(|e| ControlError::BadAnswer(format!("{e}: {answer:?}")))?;
    if resp.ok {
        Ok(resp.result.unwrap_or(serde_json::Value::Null))
    } else {
        let error = resp.error.unwrap_or_default();
        if error.starts_with("permission denied") {
            Err(ControlError::Denied(path.to_path_buf()))
        } else {
            Err(ControlError::Refused(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let r = Request::Block {
            target: "198.18.0.9".into(),
            ttl_seconds: Some(60),
            reason: Some("manual".into()),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"cmd":"block","target":"198.18.0.9","ttl_seconds":60,"reason":"manual"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"blocks"}"#).unwrap(),
            Request::Blocks
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
    }

    #[test]
    fn decode_checks_what_the_agent_acts_on() {
        assert_eq!(
            decode_request("{\"cmd\":\"status\"}\n"),
            Ok(Request::Status)
        );
        for (line, needle) in [
            ("", "bad request"),
            ("{\"cmd\":\"explode\"}", "unknown variant"),
            (
                "{\"cmd\":\"block\",\"target\":\"nope\"}",
                "not an IPv4/IPv6",
            ),
            (
                "{\"cmd\":\"unblock\",\"target\":\"10.0.0.0/33\"}",
                "not an IPv4/IPv6",
            ),
            (
                "{\"cmd\":\"block\",\"target\":\"198.18.0.9\",\"ttl_seconds\":0}",
                "ttl_seconds 0 is out of range",
            ),
            (
                "{\"cmd\":\"block\",\"target\":\"198.18.0.9\",\"ttl_seconds\":18446744073709551615}",
                "out of range",
            ),
        ] {
            let e = decode_request(line).expect_err(line);
            assert!(e.contains(needle), "{line}: {e}");
        }
        let long = format!(
            "{{\"cmd\":\"block\",\"target\":\"198.18.0.9\",\"reason\":\"{}\"}}",
            "x".repeat(2000)
        );
        assert!(decode_request(&long).unwrap_err().contains("reason longer"));
        let huge = " ".repeat(MAX_REQUEST + 1);
        assert!(decode_request(&huge).unwrap_err().contains("longer than"));
    }

    #[test]
    fn missing_socket_names_it() {
        let e = call(Path::new("/nonexistent/scanwatch.sock"), &Request::Status).unwrap_err();
        assert!(
            e.to_string()
                .contains("no scanwatch agent is listening on /nonexistent/scanwatch.sock"),
            "{e}"
        );
    }
}

/// `scanwatch block|unblock|blocks|status`: the client side.
pub mod client {
    use std::io::Write as _;

    use super::{ControlError, Request, call};
    use crate::{
        app::cli::{BlockArgs, ListArgs, UnblockArgs},
        output::mitigation::BlockRow,
    };

    fn out(s: &str) {
        let _ = writeln!(std::io::stdout(), "{s}");
    }

    pub fn block(a: &BlockArgs) -> Result<(), ControlError> {
        let r = call(
            &a.control_socket,
            &Request::Block {
                target: a.target.to_string(),
                ttl_seconds: a.ttl.map(|t| t.as_secs()),
                reason: Some(a.reason.clone()),
            },
        )?;
        out(&format!(
            "blocked {} until {}",
            a.target,
            r["expires"].as_str().unwrap_or("unblocked")
        ));
        Ok(())
    }

    pub fn unblock(a: &UnblockArgs) -> Result<(), ControlError> {
        call(
            &a.control_socket,
            &Request::Unblock {
                target: a.target.to_string(),
            },
        )?;
        out(&format!("unblocked {}", a.target));
        Ok(())
    }

    pub fn blocks(a: &ListArgs) -> Result<(), ControlError> {
        let r = call(&a.control_socket, &Request::Blocks)?;
        if a.json {
            out(&serde_json::to_string_pretty(&r).unwrap_or_default());
            return Ok(());
        }
        let rows: Vec<BlockRow> =
            serde_json::from_value(r).map_err(|e| ControlError::BadAnswer(e.to_string()))?;
        out(&format!(
            "{:<43} {:<10} {:>10} {:>8}  REASON",
            "TARGET", "ORIGIN", "REMAINING", "OFFENSES"
        ));
        for row in rows {
            out(&format!(
                "{:<43} {:<10} {:>10} {:>8}  {}",
                row.target,
                row.origin,
                row.remaining_seconds
                    .map_or_else(|| "-".to_string(), |s| format!("{s}s")),
                row.offenses,
                row.reason
            ));
        }
        Ok(())
    }

    pub fn status(a: &ListArgs) -> Result<(), ControlError> {
        let r = call(&a.control_socket, &Request::Status)?;
        out(&serde_json::to_string_pretty(&r).unwrap_or_default());
        Ok(())
    }
}
