//! Empty library target: `scanwatch-integration` lists this crate as a
//! build-dependency so that cargo rebuilds the benchmarks when these
//! programs change. The programs are the `scanwatch-bench` binary target,
//! built for `bpfel-unknown-none`.
#![no_std]
