//! Layer 3, no I/O: evidence decoded from the kernel's entries, scan-type
//! verdicts and confidence, suppression and escalation, and the engine that
//! turns a crossing into a [`Finding`].

pub mod alerter;
pub mod decoy;
pub mod distributed;
pub mod engine;
pub mod evidence;
pub mod tool;
pub mod verdict;
pub mod web;

pub use alerter::{AlertReason, Alerter};
pub use decoy::{DecoyGroups, Group};
pub use distributed::{
    DistributedConfig, DistributedDetector, DistributedFinding, DistributedStats, FailedContact,
    Target,
};
pub use engine::{ActiveSource, Engine, EngineStats, Finding, Held, SourceView};
pub use evidence::{Evidence, ProbeCounts, ReplyEvidence};
pub use tool::{ProbeSample, ScannerTool};
pub use verdict::{Confidence, attack_technique, classify, confidence, confidence_with};
