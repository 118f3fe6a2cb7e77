//! Layer 0: the small vocabulary every other layer shares — scan types,
//! the XDP attach mode, target and duration parsing, an HTTP endpoint,
//! error chains, the kernel's clock and the web layer's events. Imports
//! std and scanwatch-common only.

pub mod attach_mode;
pub mod clock;
pub mod endpoint;
pub mod errors;
pub mod prefix;
pub mod scan_type;
pub mod target;
pub mod web;

pub use attach_mode::AttachMode;
pub use clock::{KernelClock, kernel_now_ns};
pub use endpoint::{EndpointError, HttpEndpoint};
pub use errors::error_chain;
pub use prefix::SourcePrefixes;
pub use scan_type::ScanType;
pub use target::{parse_duration, parse_target};
pub use web::{Connection, WebEvent, WebScanKind};
