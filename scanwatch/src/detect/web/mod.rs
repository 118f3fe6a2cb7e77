//! Web-layer reconnaissance (no I/O): HTTP/1.x request heads and TLS
//! ClientHellos the kernel samples, the catalogue of scanner signatures,
//! and the per-source tracker that turns them into findings.

pub mod catalogue;
pub mod http;
pub mod sha256;
pub mod tls;
