//! Layer 4: what the agent tells and does about findings — alerts and the
//! alert log, mitigation (blocks, never-block, feeds), Alertmanager, the
//! Prometheus metrics and their HTTP server, the periodic summary line.

pub mod alert;
pub mod alert_log;
pub mod alertmanager;
pub mod crowdsec;
pub mod distributed_alert;
pub mod evidence;
pub mod feeds;
pub mod http;
pub mod metrics;
pub mod mitigation;
pub mod summary;
pub mod web_alert;
