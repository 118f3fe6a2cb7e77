//! Layer 2: the kernel side as the agent sees it — loading the object,
//! attaching the XDP and TC programs, the bpffs pin dir, typed access to
//! every map, the reply-aware detector's no-answer sweep, and the
//! BPF_PROG_TEST_RUN harness. Never imports detection or outputs.

pub mod block_maps;
pub mod contact_table;
pub mod detect_maps;
pub mod egress;
pub mod mapping;
pub mod maps_error;
pub mod object;
pub mod pins;
pub mod reply_maps;
pub mod source_table;
pub mod sweep;
pub mod testrun;
pub mod web_maps;
pub mod xdp_link;

pub use detect_maps::decode_event;
