//! CrowdSec's Local API: the agent as a remediation component (the
//! bouncer, [`bouncer`]) and as a machine pushing its alerts and blocks
//! ([`machine`]), over a small HTTP client ([`client`]).

pub mod bouncer;
pub mod client;
pub mod machine;
