//! The benchmark programs (`scanwatch-ebpf-bench`: baselines, floors, the
//! packet generators), loaded from their own object and run through
//! `BPF_PROG_TEST_RUN`. Never part of the agent.

use aya::{
    Ebpf, EbpfLoader,
    maps::HashMap,
    programs::{SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp},
};
use scanwatch::{kernel::testrun, model::error_chain};
use scanwatch_common::SourceKey;

/// The object built by `build.rs` (scanwatch-ebpf-bench for bpfel).
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/scanwatch-bench"));

/// The do-nothing XDP program: the baseline of every XDP ratio.
pub const NOOP: &str = "scanwatch_noop";
/// The do-nothing TC program: the baseline of every egress ratio.
pub const EGRESS_NOOP: &str = "scanwatch_egress_noop";
/// The least a counting detector can do (benign-path floor).
pub const FLOOR_COUNT: &str = "scanwatch_floor_count";
/// The least a detector that finds a segment no probe as scanwatch's walk
/// does (every header field and length checked) and counts it per
/// interface can do (a second benign-path floor).
pub const FLOOR_VALIDATED: &str = "scanwatch_floor_validated";
/// [`FLOOR_COUNT`] with its counter bumped in a BPF-to-BPF call: the
/// difference is what one call costs.
pub const FLOOR_CALL: &str = "scanwatch_floor_call";
/// The least an exact-match blocklist can do (drop-path floor).
pub const FLOOR_BLOCKLIST: &str = "scanwatch_floor_blocklist";
/// Sends every frame back out (a generator in live-frames mode).
pub const BENCH_TX: &str = "scanwatch_bench_tx";
/// Counts every source in a bounded table (one hash, one coarse clock
/// read, its slot read and written back): the floor of the new-source path
/// (TEST_RUN and flood).
pub const FLOOR_ADMIT: &str = "scanwatch_floor_admit";
/// Counts a tracked source's SYN exactly (the frame read at fixed
/// offsets, the source hashed, its slot's key compared, one atomic add, the
/// clock stored): the floor of the tracked-source path.
pub const FLOOR_TRACKED: &str = "scanwatch_floor_tracked";
/// Reads and writes back one line of a table of 2^b lines spaced 2^s lines
/// apart (b and s: the high and low bytes of the TCP destination port):
/// what a line costs, by table size.
pub const FLOOR_SPAN: &str = "scanwatch_floor_span";
/// Sends every frame back out from a fresh pseudo-random source (IPv4: the
/// low 16 bits, the IP ID keeping the header checksum; IPv6: a fresh /64):
/// a random-source flood in live-frames mode.
pub const BENCH_FLOOD: &str = "scanwatch_bench_flood";

/// Hosts `scanwatch_floor_blocklist` drops.
const FLOOR_HOSTS_MAP: &str = "FLOOR_HOSTS";

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("benchmark object: {0}")]
    Load(String),
    #[error("no program {0} in the benchmark object")]
    NoProgram(String),
    #[error("{0}: {1}")]
    Run(String, String),
}

/// The benchmark programs of one loaded object (each loaded on first use).
pub struct BenchPrograms {
    ebpf: Ebpf,
}

impl BenchPrograms {
    /// Loads the object.
    pub fn load() -> Result<Self, BenchError> {
        let ebpf = EbpfLoader::new()
            .load(BENCH_OBJECT)
            .map_err(|e| BenchError::Load(error_chain(&e)))?;
        Ok(Self { ebpf })
    }

    /// An XDP program of the object, loaded.
    pub fn xdp(&mut self, name: &str) -> Result<&mut Xdp, BenchError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| BenchError::NoProgram(name.to_string()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| BenchError::Load(error_chain(&e)))?;
        if program.fd().is_err() {
            program
                .load()
                .map_err(|e| BenchError::Load(error_chain(&e)))?;
        }
        Ok(program)
    }

    fn classifier(&mut self, name: &str) -> Result<&mut SchedClassifier, BenchError> {
        let program: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| BenchError::NoProgram(name.to_string()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| BenchError::Load(error_chain(&e)))?;
        if program.fd().is_err() {
            program
                .load()
                .map_err(|e| BenchError::Load(error_chain(&e)))?;
        }
        Ok(program)
    }

    /// Runs XDP program `name` `repeat` times on `frame`: its action and the
    /// kernel's ns per run.
    pub fn run(&mut self, name: &str, frame: &[u8], repeat: u32) -> Result<(u32, u64), BenchError> {
        run_test(self.xdp(name)?, name, frame, repeat)
    }

    /// The do-nothing XDP program `repeat` times on `frame`.
    pub fn run_noop(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, u64), BenchError> {
        self.run(NOOP, frame, repeat)
    }

    /// The do-nothing TC program `repeat` times on `frame`: its action and ns per run.
    pub fn run_egress_noop(&mut self, frame: &[u8], repeat: u32) -> Result<(i32, u64), BenchError> {
        let (action, ns) = run_test(self.classifier(EGRESS_NOOP)?, EGRESS_NOOP, frame, repeat)?;
        Ok((action as i32, ns))
    }

    /// Makes `scanwatch_floor_blocklist` drop this IPv4 source.
    pub fn block_floor_host(&mut self, source: std::net::Ipv4Addr) -> Result<(), BenchError> {
        let map = self
            .ebpf
            .map_mut(FLOOR_HOSTS_MAP)
            .ok_or_else(|| BenchError::Load(format!("no map {FLOOR_HOSTS_MAP}")))?;
        let mut hosts: HashMap<_, SourceKey, u32> =
            HashMap::try_from(map).map_err(|e| BenchError::Load(error_chain(&e)))?;
        hosts
            .insert(SourceKey::v4(source.octets()), 1, 0)
            .map_err(|e| BenchError::Load(error_chain(&e)))
    }
}

/// [`scanwatch::kernel::testrun::run_test`], its error naming `name`.
fn run_test<P>(
    program: &mut P,
    name: &str,
    frame: &[u8],
    repeat: u32,
) -> Result<(u32, u64), BenchError>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    testrun::run_test(program, frame, repeat)
        .map_err(|e| BenchError::Run(name.to_string(), e.to_string()))
}
