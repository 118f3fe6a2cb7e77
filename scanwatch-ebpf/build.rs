//! Rebuilds the eBPF object when bpf-linker changes (as the aya template does)
//! and asks bpf-linker for BPF cpu v3: the per-source sketches use atomic
//! fetch-or and compare-and-swap (kernel 5.12+).
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
    // 32-bit atomics (fetch-or, compare-and-swap on u32) need ALU32.
    println!("cargo::rustc-link-arg-bins=--cpu-features=+alu32");
}
