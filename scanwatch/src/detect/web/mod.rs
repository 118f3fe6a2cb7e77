//! Web-layer reconnaissance (no I/O): HTTP/1.x request heads and TLS
//! ClientHellos the kernel samples, the catalogue of scanner signatures,
//! and the per-source tracker that turns them into findings.

pub mod catalogue;
pub mod http;
pub mod sha256;
pub mod tls;
pub mod tracker;

pub use catalogue::{Catalogue, CatalogueError, Entry, Matcher};
pub use http::{HttpError, HttpRequest, parse_request};
pub use tls::{ClientHello, TlsError, ja4, parse_client_hello};
pub use tracker::{TlsSeen, ToolMatch, WebDetector, WebFinding, WebSettings, WebStats};
