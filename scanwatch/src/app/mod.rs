//! Layer 5: the commands — the agent loop (`scanwatch run`), the control
//! socket (server and client), the CLI, `top`, `check-config`, `evidence`, generated
//! docs, systemd integration and privilege checks.

pub mod agent;
pub mod check_config;
pub mod cli;
pub mod control;
pub mod evidence;
pub mod generated_docs;
pub mod privileges;
pub mod systemd;
pub mod top;
