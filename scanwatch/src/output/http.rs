//! A small HTTP/1.1 server for `/metrics`: one request per connection,
//! bounded request size and time, content negotiation between OpenMetrics
//! and the classic Prometheus text format.

use std::{sync::Arc, time::Duration};

use prometheus_client::registry::Registry;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::metrics::render;

const MAX_REQUEST: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let registry = Arc::clone(&registry);
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &registry).await {
                        log::debug!("metrics request: {e}");
                    }
                });
            }
            Err(e) => {
                log::warn!("metrics listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Metrics { openmetrics: bool },
    Root,
    NotFound,
    BadMethod,
}

/// Parses a request head.
pub fn parse_request(head: &str) -> Request {
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        first.next().unwrap_or_default(),
        first.next().unwrap_or_default(),
    );
    if method != "GET" && method != "HEAD" {
        return Request::BadMethod;
    }
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/metrics" => Request::Metrics {
            openmetrics: lines.any(|l| {
                let l = l.to_ascii_lowercase();
                l.starts_with("accept:") && l.contains("application/openmetrics-text")
            }),
        },
        "/" => Request::Root,
        _ => Request::NotFound,
    }
}

async fn handle(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || buf.len() + n > MAX_REQUEST {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "bad request head",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))??;
    let head = String::from_utf8_lossy(&buf);
    let (status, content_type, body) = match parse_request(&head) {
        Request::Metrics { openmetrics } => match render(registry, openmetrics) {
            Ok(body) => (
                "200 OK",
                if openmetrics {
                    "application/openmetrics-text; version=1.0.0; charset=utf-8"
                } else {
                    "text/plain; version=0.0.4; charset=utf-8"
                },
                body,
            ),
            Err(_) => (
                "500 Internal Server Error",
                "text/plain",
                "encoding failed\n".to_string(),
            ),
        },
        Request::Root => (
            "200 OK",
            "text/html; charset=utf-8",
            "<html><body><a href=\"/metrics\">scanwatch metrics</a></body></html>\n".to_string(),
        ),
        Request::NotFound => ("404 Not Found", "text/plain", "not found\n".to_string()),
        Request::BadMethod => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    if !head.starts_with("HEAD") {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(
            parse_request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics { openmetrics: false }
        );
        assert_eq!(
            parse_request(
                "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n"
            ),
            Request::Metrics { openmetrics: true }
        );
        assert_eq!(parse_request("GET / HTTP/1.1\r\n\r\n"), Request::Root);
        assert_eq!(parse_request("GET /x HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(
            parse_request("POST /metrics HTTP/1.1\r\n\r\n"),
            Request::BadMethod
        );
        assert_eq!(parse_request(""), Request::BadMethod);
    }
}
