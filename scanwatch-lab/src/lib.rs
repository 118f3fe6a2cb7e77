//! Test tooling for scanwatch: crafted Ethernet frames ([`frames`]) and a
//! network-namespace lab ([`netns`]) where real scanners run against the agent,
//! and nginx there for web-layer tests ([`web`]).
//!
//! The lab follows `LAB.md`: only 198.18.0.0/15 and fd00::/8, no default
//! routes, unreachable guard routes in the root namespace, and everything it
//! creates is removed when the [`netns::Lab`] is dropped (also on panic).

pub mod agent_bin;
pub mod crowdsec;
pub mod frames;
pub mod netns;
pub mod privileged;
pub mod refusal;
pub mod rng;
pub mod web;
