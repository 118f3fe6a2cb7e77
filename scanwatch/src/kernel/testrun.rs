//! Runs the XDP program on crafted frames through `BPF_PROG_TEST_RUN`
//! (aya's `TestRun`): for the kernel-side tests, benchmarks and fuzzing.
//! Needs CAP_BPF; nothing is attached to any interface.

use aya::maps::{MapData, RingBuf};
use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, TestRunResult},
};
use scanwatch_common::{
    DetectConfig, IfaceCounters, ScanEvent, SourceKey, SourceStats,
    contact_table::ContactSeed,
    web::{DEFAULT_WEB_PORTS, WebConfig, WebCounters},
};

use super::{
    block_maps::{BlockMapError, BlockMaps},
    detect_maps::{MapsError, ScanwatchMaps, decode_event, take_events},
    object::{self as loader, LoadError, egress_program},
    reply_maps::{ReplyError, ReplyMaps},
    web_maps::{WebCountersMap, WebDecodeError, WebRecord, decode_web, take_web_samples},
};
use crate::{config::Detection, model::error_chain};

#[derive(Debug, thiserror::Error)]
pub enum TestRunError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("BPF_PROG_TEST_RUN: {0}")]
    Run(String),
    #[error(transparent)]
    Reply(#[from] ReplyError),
}

/// The contact-hash seed of [`XdpHarness::load_reply`] (fixed: runs repeat).
pub const HARNESS_CONTACT_SEED: ContactSeed = ContactSeed {
    words: [
        0x9e37_79b9,
        0x7f4a_7c15,
        0xf39c_c060,
        0x5ced_c834,
        0x2545_f491,
        0x4f6c_dd1d,
        0x8538_ecb5,
        0xd1b5_4a32,
        0x6a09_e667,
        0xbb67_ae85,
    ],
};

/// A loaded, unattached scanwatch program with its own (unpinned) maps.
pub struct XdpHarness {
    ebpf: Ebpf,
    /// The detection settings it was loaded with (its prefixes key sources).
    detect: DetectConfig,
    maps: ScanwatchMaps,
    events: RingBuf<MapData>,
    /// The reply-aware detector's maps ([`XdpHarness::load_reply`] only).
    reply: Option<ReplyMaps>,
    /// The web ring and counters ([`XdpHarness::load_web`] only).
    web: Option<(RingBuf<MapData>, WebCountersMap)>,
}

impl XdpHarness {
    /// Loads the program with a source map of `map_size` entries and the
    /// default detection settings.
    pub fn load(map_size: u32) -> Result<Self, TestRunError> {
        Self::load_with(map_size, &Detection::default().kernel_config())
    }

    /// [`Self::load`] for the benchmarks: the default configuration of the
    /// agent (the reply-aware detector on).
    pub fn load_for_bench(map_size: u32) -> Result<Self, TestRunError> {
        Self::load_for_bench_with(map_size, Detection::default().kernel_config())
    }

    /// [`Self::load_for_bench`] with other detection settings (the
    /// benchmark turns the scanner-tool signatures off to measure them).
    pub fn load_for_bench_with(map_size: u32, detect: DetectConfig) -> Result<Self, TestRunError> {
        Self::load_for_bench_web(map_size, detect, WebConfig::with_ports(&DEFAULT_WEB_PORTS))
    }

    /// [`Self::load_for_bench_with`] with web sampling `web` (the benchmark
    /// turns it off to measure what it costs).
    pub fn load_for_bench_web(
        map_size: u32,
        detect: DetectConfig,
        web: WebConfig,
    ) -> Result<Self, TestRunError> {
        let opts = loader::LoadOptions {
            // As the agent loads it by default: the reply-aware detector
            // records first contacts, requests to web ports are sampled.
            reply: Detection::default().reply_config(),
            web,
            ..loader::LoadOptions::default()
        };
        let mut harness =
            Self::from_loaded(loader::load_with(map_size, &detect, &opts)?, detect)?.with_web()?;
        // Its counters tell the benchmark how many first contacts a row recorded.
        harness.reply = Some(ReplyMaps::take(
            &mut harness.ebpf,
            opts.reply,
            opts.contact_seed,
        )?);
        Ok(harness)
    }

    /// Takes the web ring and counters (they are then read by
    /// [`XdpHarness::web_records`] and [`XdpHarness::web_counters`]).
    fn with_web(mut self) -> Result<Self, TestRunError> {
        let ring = take_web_samples(&mut self.ebpf)?;
        let counters = WebCountersMap::take(&mut self.ebpf)?;
        self.web = Some((ring, counters));
        Ok(self)
    }

    /// The default detection settings with `opts`.
    fn load_default(map_size: u32, opts: &loader::LoadOptions<'_>) -> Result<Self, TestRunError> {
        let detect = Detection::default().kernel_config();
        Self::from_loaded(loader::load_with(map_size, &detect, opts)?, detect)
    }

    fn from_loaded(mut ebpf: Ebpf, detect: DetectConfig) -> Result<Self, TestRunError> {
        let maps = ScanwatchMaps::take(&mut ebpf)?;
        let events = take_events(&mut ebpf)?;
        Ok(Self {
            detect,
            ebpf,
            maps,
            events,
            reply: None,
            web: None,
        })
    }

    /// Loads the programs with the default detection settings (the
    /// reply-aware detector off) and web sampling `web`.
    pub fn load_web(map_size: u32, web: WebConfig) -> Result<Self, TestRunError> {
        let opts = loader::LoadOptions {
            web,
            ..loader::LoadOptions::default()
        };
        Self::load_default(map_size, &opts)?.with_web()
    }

    /// Records of the web ring since the last call, decoded ([`XdpHarness::load_web`] only).
    pub fn web_records(&mut self) -> Vec<Result<WebRecord, WebDecodeError>> {
        let mut out = Vec::new();
        if let Some((ring, _)) = self.web.as_mut() {
            while let Some(item) = ring.next() {
                out.push(decode_web(&item));
            }
        }
        out
    }

    /// The web sampling counters summed over CPUs ([`XdpHarness::load_web`] only).
    pub fn web_counters(&self) -> Result<WebCounters, TestRunError> {
        match self.web.as_ref() {
            Some((_, counters)) => Ok(counters.read()?),
            None => Ok(WebCounters::default()),
        }
    }

    /// Loads the program with the default detection settings and the
    /// reply-aware test `reply` (its maps are taken: see [`XdpHarness::reply`]).
    /// The contact tables' hash has a fixed seed ([`HARNESS_CONTACT_SEED`]):
    /// which contacts share a slot is the same in every run.
    pub fn load_reply(
        map_size: u32,
        reply: scanwatch_common::trw::ReplyConfig,
    ) -> Result<Self, TestRunError> {
        Self::load_reply_with(map_size, reply, &Detection::default().kernel_config())
    }

    /// [`XdpHarness::load_reply`] with the detection settings `detect`
    /// (e.g. `admit_after` 1: every probe's first contact is recorded).
    pub fn load_reply_with(
        map_size: u32,
        reply: scanwatch_common::trw::ReplyConfig,
        detect: &DetectConfig,
    ) -> Result<Self, TestRunError> {
        let opts = loader::LoadOptions {
            reply,
            contact_seed: HARNESS_CONTACT_SEED,
            ..loader::LoadOptions::default()
        };
        let mut harness = Self::from_loaded(loader::load_with(map_size, detect, &opts)?, *detect)?;
        harness.reply = Some(ReplyMaps::take(
            &mut harness.ebpf,
            reply,
            HARNESS_CONTACT_SEED,
        )?);
        Ok(harness)
    }

    /// The reply maps of a harness from [`XdpHarness::load_reply`] or
    /// [`XdpHarness::load_for_bench`].
    pub fn reply(&mut self) -> Option<&mut ReplyMaps> {
        self.reply.as_mut()
    }

    /// Runs the TC egress program once on `frame` (an outgoing frame);
    /// returns its TC action.
    pub fn run_egress(&mut self, frame: &[u8]) -> Result<i32, TestRunError> {
        self.run_egress_repeat(frame, 1).map(|(action, _)| action)
    }

    /// Runs the TC egress program `repeat` times on `frame`; returns its
    /// action and ns per run.
    pub fn run_egress_repeat(
        &mut self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(i32, u64), TestRunError> {
        run_classifier(egress_program(&mut self.ebpf)?, frame, repeat)
    }

    /// Loads the program with the given detection settings.
    pub fn load_with(map_size: u32, detect: &DetectConfig) -> Result<Self, TestRunError> {
        Self::from_loaded(loader::load(map_size, detect)?, *detect)
    }

    /// Runs the program once on `frame`; returns its XDP action.
    pub fn run(&mut self, frame: &[u8]) -> Result<u32, TestRunError> {
        self.run_repeat(frame, 1).map(|(action, _)| action)
    }

    /// Runs the program `repeat` times on `frame`; returns its XDP action and
    /// the kernel's average duration per run in nanoseconds.
    pub fn run_repeat(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, u64), TestRunError> {
        run_program(loader::xdp_program(&mut self.ebpf)?, frame, repeat)
    }

    /// Instructions the verifier processed to accept the XDP program
    /// (`bpf_prog_info.verified_insns`, kernel 5.16+; its limit is
    /// 1,000,000): how much room the program has left to grow.
    pub fn verified_instructions(&mut self) -> Result<Option<u32>, TestRunError> {
        let info = loader::xdp_program(&mut self.ebpf)?
            .info()
            .map_err(|e| TestRunError::Run(error_chain(&e)))?;
        Ok(info.verified_instruction_count())
    }

    /// Counters summed over CPUs and interfaces.
    pub fn counters(&self) -> Result<IfaceCounters, TestRunError> {
        let mut total = IfaceCounters::ZERO;
        for c in self.maps.iface_counters()?.values() {
            total.add(c);
        }
        Ok(total)
    }

    /// A source's entry.
    /// The entry of the source `ip` is counted under (its prefix's).
    pub fn source(&self, ip: std::net::IpAddr) -> Result<Option<SourceStats>, TestRunError> {
        let key = self.source_key(ip);
        Ok(self.maps.source(&key))
    }

    /// The key the kernel counts `ip` under (masked to its prefix).
    pub fn source_key(&self, ip: std::net::IpAddr) -> SourceKey {
        let v6 = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_none(),
            std::net::IpAddr::V4(_) => false,
        };
        self.detect.source_key(SourceKey::from_ip(ip).addr, v6)
    }

    /// All tracked sources.
    pub fn sources(&self) -> Result<Vec<(SourceKey, SourceStats)>, TestRunError> {
        Ok(self.maps.sources()?)
    }

    pub fn maps(&self) -> &ScanwatchMaps {
        &self.maps
    }

    /// Takes the mitigation maps (blocklist, feeds, never-block) once.
    pub fn take_block_maps(&mut self) -> Result<BlockMaps, BlockMapError> {
        BlockMaps::take(&mut self.ebpf)
    }

    /// Loads with the given blocklist capacity.
    pub fn load_with_capacity(
        map_size: u32,
        blocklist_capacity: u32,
    ) -> Result<Self, TestRunError> {
        Self::load_default(
            map_size,
            &loader::LoadOptions {
                blocklist_capacity,
                ..loader::LoadOptions::default()
            },
        )
    }

    /// Threshold crossings sent since the last call.
    pub fn events(&mut self) -> Vec<ScanEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            if let Some(e) = decode_event(&item) {
                out.push(e);
            }
        }
        out
    }
}

/// One BPF_PROG_TEST_RUN of `program` (XDP or TC) on `frame`, `repeat`
/// times: its return value and the kernel's ns per run.
pub fn run_test<P>(program: &mut P, frame: &[u8], repeat: u32) -> Result<(u32, u64), TestRunError>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let opts = TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::default()
    };
    let result = program
        .test_run(opts)
        .map_err(|e| TestRunError::Run(error_chain(&e)))?;
    Ok((result.return_value, result.duration.as_nanos() as u64))
}

/// [`run_test`] for an XDP program: its XDP action and ns per run.
fn run_program(
    program: &mut aya::programs::Xdp,
    frame: &[u8],
    repeat: u32,
) -> Result<(u32, u64), TestRunError> {
    run_test(program, frame, repeat)
}

/// [`run_test`] for a TC program: its action and ns per run.
fn run_classifier(
    program: &mut aya::programs::SchedClassifier,
    frame: &[u8],
    repeat: u32,
) -> Result<(i32, u64), TestRunError> {
    run_test(program, frame, repeat).map(|(action, ns)| (action as i32, ns))
}
