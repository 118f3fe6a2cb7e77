//! The scanwatch agent: loads and attaches the XDP program, pins its maps,
//! reports what it counts, and serves `scanwatch top` from the pins.
//!
//! `main.rs` only wires these modules together.

pub mod agent;
pub mod alertmanager;
pub mod alerts;
pub mod bpffs;
pub mod check_config;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod detect;
pub mod engine;
pub mod feeds;
pub mod generated_docs;
pub mod http;
pub mod loader;
pub mod maps;
pub mod metrics;
pub mod mitigation;
pub mod privileges;
pub mod reply;
pub mod summary;
pub mod systemd;
pub mod testrun;
pub mod toml_spans;
pub mod top;
