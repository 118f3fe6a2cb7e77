//! Empty library target: `scanwatch` lists this crate as a build-dependency so
//! that cargo rebuilds the agent when the XDP program changes. The program
//! itself is the `scanwatch` binary target, built for `bpfel-unknown-none`.
#![no_std]
