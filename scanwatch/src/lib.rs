//! The scanwatch agent: loads and attaches the XDP and TC programs, pins
//! their maps, turns the kernel's threshold crossings into alerts, blocks,
//! metrics and Alertmanager pushes, and serves `scanwatch top` from the pins.
//!
//! Layers, each a folder; a module imports only from its own layer or the
//! ones below (`cargo xtask lint` checks it):
//!
//! | layer | folder | what |
//! |---|---|---|
//! | 0 | [`model`] | shared vocabulary: scan types, attach mode, targets, errors, clock |
//! | 1 | [`config`] | the configuration file as plain data, with defaults and validation |
//! | 2 | [`kernel`] | loading, attaching, pins, typed map access, the no-answer sweep |
//! | 3 | [`detect`] | evidence, verdicts, suppression, the engine (no I/O) |
//! | 4 | [`output`] | alerts, alert log, mitigation, Alertmanager, metrics |
//! | 5 | [`app`] | the agent loop, control socket, CLI and the other commands |
//!
//! `main.rs` only wires the commands together.

#![warn(clippy::too_many_lines)]

pub mod model;

pub mod config;

pub mod kernel;

pub mod detect;

pub mod output;

pub mod app;
