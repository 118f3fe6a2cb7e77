//! scanwatch benchmarks: per-packet XDP cost against a do-nothing XDP
//! program measured in the same run, kernel map memory, and the agent at a
//! million tracked sources. Ratios and medians of repeated runs: these
//! machines are shared and noisy.
//!
//! `cargo bench -p scanwatch-integration --bench bench -- [--quick] [--out DIR]`
//! (`cargo xtask bench` runs it; `--per-packet-only`, `--flood-only`,
//! `--nmap-cpu-only`, `--crowdsec-only`: one section, printed, no report).
//! Needs root.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use scanwatch::{
    config::MitigationConfig, kernel::testrun::XdpHarness, output::mitigation::Mitigation,
};
use scanwatch_common::{block_origin, web::WebConfig};
use scanwatch_integration::TakeMitigation;
use scanwatch_integration::bench_programs::{
    BENCH_TX, BenchPrograms, FLOOR_ADMIT, FLOOR_BLOCKLIST, FLOOR_CALL, FLOOR_COUNT, FLOOR_SPAN,
    FLOOR_TRACKED, FLOOR_VALIDATED, NOOP,
};
use scanwatch_lab::{
    frames::{Ipv6Ext, Packet, TPID_8021Q, Transport, tcp},
    netns::Lab,
};
use serde_json::{Value, json};

struct Opts {
    quick: bool,
    /// `--per-packet-only`: the TEST_RUN figures only, printed, no report.
    per_packet_only: bool,
    /// `--profile-new-sources SLOTS`: only the new-source row at an
    /// admission table of SLOTS slots whose every slot is taken, twenty
    /// times over (about a minute), for `perf record` (DEVELOPING.md).
    profile_new_sources: Option<u32>,
    /// `--nmap-cpu-only`: the CPU of one nmap scan only, printed, no report.
    nmap_cpu_only: bool,
    out: PathBuf,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map_or_else(
            || {
                let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
                if quick {
                    root.join("target/bench-quick")
                } else {
                    root
                }
            },
            PathBuf::from,
        );
    let per_packet_only = args.iter().any(|a| a == "--per-packet-only");
    let nmap_cpu_only = args.iter().any(|a| a == "--nmap-cpu-only");
    let profile_new_sources = args
        .iter()
        .position(|a| a == "--profile-new-sources")
        .map(|i| {
            args.get(i + 1)
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|&n| scanwatch_common::tracking::valid_admission_slots(n))
                .unwrap_or_else(|| {
                    eprintln!(
                        "--profile-new-sources takes a number of admission slots (a power of two, 1024 to 1048576)"
                    );
                    std::process::exit(2)
                })
        });
    Opts {
        quick,
        per_packet_only,
        nmap_cpu_only,
        profile_new_sources,
        out,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> Value {
    json!({
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "kernel": sh("uname -r"),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "cores": sh("nproc"),
        "memory": sh("grep MemTotal /proc/meminfo | awk '{print $2 \" kB\"}'"),
    })
}

/// One per-packet case: scanwatch and the no-op program alternate `rounds`
/// times on the same frame, `repeat` runs each inside the kernel. With a
/// floor program (the least any program doing this job can do), that runs
/// in the same rounds too.
fn per_packet(
    h: &mut XdpHarness,
    b: &mut BenchPrograms,
    name: &str,
    frame: &[u8],
    (repeat, rounds): (u32, usize),
    expect: u32,
    floor: Option<&str>,
) -> Value {
    let mut sw = Vec::new();
    let mut noop = Vec::new();
    let mut fl = Vec::new();
    let mut action = 0;
    for _ in 0..rounds {
        let (a, ns) = h.run_repeat(frame, repeat).expect("test run");
        action = a;
        sw.push(ns as f64);
        let (_, ns) = b.run_noop(frame, repeat).expect("noop run");
        noop.push(ns as f64);
        if let Some(program) = floor {
            let (a, ns) = b.run(program, frame, repeat).expect("floor run");
            assert_eq!(a, expect, "{name}: floor program's XDP action");
            fl.push(ns as f64);
        }
    }
    assert_eq!(action, expect, "{name}: XDP action");
    let (s, n) = (median(sw), median(noop));
    let mut v = json!({ "case": name, "scanwatch_ns": s, "noop_ns": n, "ratio": s / n.max(0.1), "repeat": repeat, "rounds": rounds });
    let floor_text = match floor {
        Some(program) => {
            let f = median(fl);
            v["floor_program"] = json!(program);
            v["floor_ns"] = json!(f);
            v["floor_ratio"] = json!(f / n.max(0.1));
            format!("  floor {f:>6.1} ns  floor ratio {:>5.2}", f / n.max(0.1))
        }
        None => String::new(),
    };
    println!(
        "{name:<48} {s:>7.1} ns  noop {n:>6.1} ns  ratio {:>5.2}{floor_text}",
        s / n.max(0.1)
    );
    v
}

/// A SYN to port `port` of the target from the `n`-th source of the
/// new-source rows (10.0.0.0 + n: never seen before by a program loaded
/// for the row).
fn new_source_syn(n: u32, port: u16) -> Vec<u8> {
    Packet::from_ips(
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)),
        "198.18.0.2".parse().expect("ip"),
        Transport::tcp(port, tcp::SYN),
    )
    .build()
}

/// First contacts the harness's program has recorded in its contact
/// table, and first SYNs whose contact waited in their admission slot
/// instead (its reply-aware detector's counters).
fn contacts_recorded(h: &mut XdpHarness) -> [u64; 2] {
    use scanwatch_common::trw::ReplyCounter;
    let c = h
        .reply()
        .expect("reply maps")
        .counters()
        .expect("reply counters");
    [
        c.get(ReplyCounter::Contacts),
        c.get(ReplyCounter::ContactsWaiting),
    ]
}

/// The shares of `runs` new sources that recorded a first contact in the
/// contact table and that kept it waiting in their admission slot, from
/// [`contacts_recorded`] before and after.
fn contact_shares(before: [u64; 2], after: [u64; 2], runs: f64) -> [f64; 2] {
    [
        (after[0] - before[0]) as f64 / runs,
        (after[1] - before[1]) as f64 / runs,
    ]
}

/// What one BPF-to-BPF call costs on this machine: `scanwatch_floor_call`
/// (the counting floor, its counter bumped in a function of its own)
/// against `scanwatch_floor_count` ([`against_count_floor`]).
fn call_cost(b: &mut BenchPrograms, frame: &[u8], runs: (u32, usize)) -> Value {
    let (mut v, [call, floor, _]) = against_count_floor(
        b,
        frame,
        runs,
        FLOOR_CALL,
        (
            "one BPF-to-BPF call (floor_call, floor_count)",
            "one BPF-to-BPF call: the counting floor with its counter bumped in a function of its own",
        ),
    );
    let one_call = call - floor;
    println!("{:<48} {one_call:>7.1} ns", "one BPF-to-BPF call");
    v["one_call_ns"] = json!(one_call);
    v
}

/// The benign path's second floor: `scanwatch_floor_validated` (the ACK
/// found no probe with every header field and length checked as the walk
/// checks them, counted per interface) against `scanwatch_floor_count`
/// ([`against_count_floor`]).
fn validated_floor(b: &mut BenchPrograms, frame: &[u8], runs: (u32, usize)) -> Value {
    against_count_floor(
        b,
        frame,
        runs,
        FLOOR_VALIDATED,
        (
            "benign-path floor, validated (floor_validated)",
            "benign-path floor: the ACK found no probe with every header field and length checked, counted per interface",
        ),
    )
    .0
}

/// The benchmark program `program` against the no-op and
/// `scanwatch_floor_count`, interleaved, on `frame`: a row of the
/// per-packet table whose measured program is `program` and whose floor
/// column is `scanwatch_floor_count`, named `(short, long)` (printed,
/// reported), and the medians it holds: the program's, the floor's and
/// the no-op's ns.
fn against_count_floor(
    b: &mut BenchPrograms,
    frame: &[u8],
    (repeat, rounds): (u32, usize),
    program: &str,
    (short, long): (&str, &str),
) -> (Value, [f64; 3]) {
    let (mut p, mut f, mut n) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        n.push(b.run_noop(frame, repeat).expect("noop").1 as f64);
        f.push(b.run(FLOOR_COUNT, frame, repeat).expect("floor").1 as f64);
        p.push(b.run(program, frame, repeat).expect(program).1 as f64);
    }
    let (p, f, n) = (median(p), median(f), median(n));
    println!(
        "{short:<48} {p:>7.1} ns  noop {n:>6.1} ns  ratio {:>5.2}  floor {f:>6.1} ns  floor ratio {:>5.2}",
        p / n.max(0.1),
        f / n.max(0.1),
    );
    let name = format!("{long} (`{program}`; its floor column: `{FLOOR_COUNT}`)");
    let row = json!({ "case": name, "program": program, "scanwatch_ns": p, "noop_ns": n, "ratio": p / n.max(0.1),
            "floor_program": FLOOR_COUNT, "floor_ns": f, "floor_ratio": f / n.max(0.1),
            "repeat": repeat, "rounds": rounds });
    (row, [p, f, n])
}

/// SYNs from sources never seen before: each run is one new entry, so each
/// is a separate test run (repeat 1), compared with the no-op program run
/// the same way (both include the kernel's per-run timing overhead), and
/// with the same program loaded with the reply-aware detector off (what
/// the new source's first contact costs), interleaved. A new source's
/// first SYN keeps its first contact in its admission slot, whether the
/// slot was free or another source's (`tracking::RECORD_CONTACT_TAKEN`):
/// the row reports the shares that wrote one to the contact table (none
/// expected) and that kept it waiting.
/// [`new_sources_quiet`] measures a new source at a free slot, and
/// [`new_sources_taken`] one at a table whose every slot is taken (a
/// flood's steady state), at the default size and with 8,192 slots.
fn new_sources(
    h: &mut XdpHarness,
    off: &mut XdpHarness,
    b: &mut BenchPrograms,
    count: u32,
    rounds: usize,
) -> Value {
    let before = contacts_recorded(h);
    let [s, n, f, o] = fresh_runs(rounds, count, |next| {
        let f = new_source_syn(next, 22);
        [
            h.run_repeat(&f, 1).expect("run").1,
            b.run_noop(&f, 1).expect("noop").1,
            // The floor program's map is separate: the source is new to it too.
            b.run(FLOOR_ADMIT, &f, 1).expect("floor").1,
            off.run_repeat(&f, 1).expect("run").1,
        ]
    });
    let [share, waiting] = contact_shares(
        before,
        contacts_recorded(h),
        rounds as f64 * f64::from(count),
    );
    println!(
        "{:<48} {s:>7.1} ns  noop {n:>6.1} ns  ratio {:>5.2}  floor {f:>6.1} ns  floor ratio {:>5.2}  detector off {o:>6.1} ns  ratio {:>5.2}  first contacts recorded {:>5.1}%  waiting {:>5.1}%",
        "SYN from a new source (repeat 1 each)",
        s / n.max(0.1),
        f / n.max(0.1),
        o / n.max(0.1),
        100.0 * share,
        100.0 * waiting
    );
    json!({ "case": "SYN from a new source", "scanwatch_ns": s, "noop_ns": n, "ratio": s / n.max(0.1), "repeat": 1, "sources_per_round": count, "rounds": rounds,
            "floor_program": FLOOR_ADMIT, "floor_ns": f, "floor_ratio": f / n.max(0.1),
            "reply_off_ns": o, "reply_off_ratio": o / n.max(0.1), "contacts_recorded_share": share, "contacts_waiting_share": waiting })
}

/// What one line a packet has not touched before costs, by the size of
/// the table it is in: `scanwatch_floor_span` reads and writes back one
/// 64-byte line, chosen by a hash of a fresh source each run, of a table
/// of 64 KiB to 32 MiB (repeat 1, the no-op between runs, each size in
/// turn within a round); and one line on each of 512 or 1,024 pages (a
/// line every 4 KiB), which tells the cache from the TLB. A new source's
/// cost is mostly such lines.
fn line_cost(o: &Opts) -> Value {
    let (count, rounds) = if o.quick { (2_000, 3) } else { (20_000, 5) };
    let mut b = BenchPrograms::load().expect("load the benchmark programs");
    // log2 of the lines used (64 bytes each) and of their spacing: every
    // line of 64 KiB, 256 KiB, 1, 2, 4, 32 MiB; one line a 4 KiB page over
    // 2 and 4 MiB.
    const SPANS: [(u8, u8); 8] = [
        (10, 0),
        (12, 0),
        (14, 0),
        (15, 0),
        (16, 0),
        (19, 0),
        (9, 6),
        (10, 6),
    ];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); SPANS.len()];
    let mut next = 0u32;
    for _ in 0..rounds {
        for (bits, out) in SPANS.iter().zip(ratios.iter_mut()) {
            let (mut s, mut n) = (0u64, 0u64);
            for _ in 0..count {
                next += 1;
                let f = new_source_syn(next, u16::from(bits.0) << 8 | u16::from(bits.1));
                s += b.run(FLOOR_SPAN, &f, 1).expect("span").1;
                n += b.run_noop(&f, 1).expect("noop").1;
            }
            out.push(s as f64 / n.max(1) as f64);
        }
    }
    let rows: Vec<Value> = SPANS
        .iter()
        .zip(ratios)
        .map(|((lines, spacing), r)| {
            let bytes = 64u64 << (lines + spacing);
            let ratio = median(r);
            let what = if *spacing == 0 {
                format!("one new line of a {} KiB table (repeat 1)", bytes >> 10)
            } else {
                format!("one line a page, {} pages (repeat 1)", 1u32 << lines)
            };
            println!("{what:<48} ratio {ratio:>5.2}");
            json!({ "table_bytes": bytes, "lines_used": 1u64 << lines, "line_spacing_bytes": 64u64 << spacing, "ratio": ratio })
        })
        .collect();
    json!({ "case": "one line never touched before, by table size (scanwatch_floor_span)", "program": FLOOR_SPAN,
            "repeat": 1, "runs_per_round": count, "rounds": rounds, "spans": rows })
}

/// Admission slots of the small-table row of [`new_sources_taken`].
const SMALL_ADMISSION: u32 = 8_192;
/// Admission slots of its smallest row: 16 KiB, the slot's line mostly in
/// cache, so the row is what the new source's code costs without a cold
/// line of that table (the fewest slots the kernel takes).
const TINY_ADMISSION: u32 = scanwatch_common::tracking::MIN_ADMISSION_SLOTS;

/// SYNs from new sources at an admission table of `slots` slots whose
/// every slot another new source took within the last seconds: a
/// random-source flood's steady state. The program is loaded afresh
/// (default settings but `[detection] admission_slots`, the reply-aware
/// detector on) and `4 * slots` new sources go through it untimed first;
/// then `count` new sources a round, repeat 1 each, interleaved with the
/// no-op. Such a source finds its slot taken within 8.6 s and keeps its
/// first contact in it (the row reports the shares). With 8,192 slots
/// (128 KiB of the slots' first parts; the default 65,536 is 1 MiB): what a smaller admission table
/// saves each new source's packet (the trade is in docs/detection.md);
/// with 1,024 (16 KiB): the new source's code with its slot in cache.
fn new_sources_taken(b: &mut BenchPrograms, count: u32, rounds: usize, slots: u32) -> Value {
    let detect = scanwatch_common::DetectConfig {
        admission_slots: slots,
        ..scanwatch::config::Detection::default().kernel_config()
    };
    let mut h = XdpHarness::load_for_bench_with(262_144, detect).expect("load the XDP program");
    // The floor program's table has the default size: run it in the same
    // state, its every slot taken by the same warm-up.
    let floor = slots == scanwatch_common::tracking::DEFAULT_ADMISSION_SLOTS;
    // Sources numbered past the measured ones' (`fresh_runs` counts from 1).
    let warm = 4 * slots;
    for n in 0..warm {
        let f = new_source_syn(u32::MAX / 2 + n, 22);
        h.run_repeat(&f, 1).expect("run");
        if floor {
            b.run(FLOOR_ADMIT, &f, 1).expect("floor");
        }
    }
    let before = contacts_recorded(&mut h);
    let [s, n, f] = fresh_runs(rounds, count, |next| {
        let f = new_source_syn(next, 22);
        [
            h.run_repeat(&f, 1).expect("run").1,
            b.run_noop(&f, 1).expect("noop").1,
            if floor {
                b.run(FLOOR_ADMIT, &f, 1).expect("floor").1
            } else {
                0
            },
        ]
    });
    let [share, waiting] = contact_shares(
        before,
        contacts_recorded(&mut h),
        rounds as f64 * f64::from(count),
    );
    let name = match slots {
        SMALL_ADMISSION => "SYN from a new source, 8,192 admission slots",
        TINY_ADMISSION => "SYN from a new source, 1,024 admission slots (in cache)",
        _ => "SYN from a new source, every slot taken",
    };
    let floor_text = if floor {
        format!("  floor {f:>6.1} ns  floor ratio {:>5.2}", f / n.max(0.1))
    } else {
        String::new()
    };
    println!(
        "{name:<48} {s:>7.1} ns  noop {n:>6.1} ns  ratio {:>5.2}{floor_text}  first contacts recorded {:>5.1}%  waiting {:>5.1}%",
        s / n.max(0.1),
        100.0 * share,
        100.0 * waiting
    );
    let mut row = json!({ "case": name, "scanwatch_ns": s, "noop_ns": n, "ratio": s / n.max(0.1), "repeat": 1,
            "sources_per_round": count, "rounds": rounds, "admission_slots": slots, "warm_up_sources": warm,
            "contacts_recorded_share": share, "contacts_waiting_share": waiting });
    if floor {
        row["floor_program"] = json!(FLOOR_ADMIT);
        row["floor_ns"] = json!(f);
        row["floor_ratio"] = json!(f / n.max(0.1));
    }
    row
}

/// `--profile-new-sources`: [`new_sources_taken`] twenty times over,
/// nothing else (no report written), so that a `perf record` of the
/// run samples the new-source path and little besides.
fn profile_new_sources(slots: u32) {
    let mut b = BenchPrograms::load().expect("load the benchmark programs");
    for _ in 0..20 {
        new_sources_taken(&mut b, 20_000, 5, slots);
    }
}

/// The per-packet rows' blocked source.
const BLOCKED_SOURCE: &str = "198.18.51.1";

/// Blocks [`BLOCKED_SOURCE`] for an hour (a manual block), as the
/// per-packet rows and `--profile-benign-loaded` load it.
fn block_bench_source(m: &mut Mitigation) {
    m.block(
        format!("{BLOCKED_SOURCE}/32")
            .parse::<IpNet>()
            .expect("net"),
        Some(Duration::from_secs(3600)),
        block_origin::MANUAL,
        "bench",
    )
    .expect("block");
}

/// `--profile-tracked` / `--profile-benign` / `--profile-benign-loaded`:
/// the tracked-source SYN row's packet or the benign ACK row's (`loaded`:
/// with one block loaded; the row "benign ACK while 1 block and 1 feed
/// entry are loaded" has a drop feed too, and the same prefilter test on
/// the ACK's path), 200 runs of 100,000 repeats (a few seconds:
/// one load), nothing else, for `perf record` of that path (DEVELOPING.md).
fn profile_row(benign: bool, loaded: bool) {
    let mut h = XdpHarness::load_for_bench(262_144).expect("load the XDP program");
    let _mitigation = loaded.then(|| {
        let mut m = h
            .take_mitigation(MitigationConfig::default(), vec![])
            .expect("mitigation maps");
        block_bench_source(&mut m);
        m
    });
    let (what, frame) = if benign {
        ("benign ACK", benign_ack())
    } else {
        (
            "SYN from a tracked source",
            Packet::new("198.18.50.2", "198.18.0.2", Transport::tcp(22, tcp::SYN)).build(),
        )
    };
    let mut ns = Vec::new();
    for _ in 0..200 {
        ns.push(h.run_repeat(&frame, 100_000).expect("run").1 as f64);
    }
    println!("{what}: {:.1} ns (median of 200 runs)", median(ns));
}

/// The benign row's packet: an established connection's ACK with 512
/// bytes of TLS records to port 443 (a web port, not a request).
fn benign_ack() -> Vec<u8> {
    let mut ack = Packet::new(
        "198.18.50.1",
        "198.18.0.2",
        Transport::tcp(443, tcp::ACK | tcp::PSH),
    );
    if let Transport::Tcp { payload, .. } = &mut ack.transport {
        payload.extend_from_slice(&[0x17; 512]);
    }
    ack.build()
}

/// New sources a round of [`new_sources_quiet`]: few enough that most land
/// in a free slot of a fresh admission table (about 99% of 1,000 in the
/// default 65,536 slots).
const QUIET_SOURCES: u32 = 1_000;

/// A SYN from a new source whose admission slot is free: a host no flood
/// reaches (in [`new_sources_taken`] every slot is taken, as under a
/// flood). Its first contact waits in the slot too. Each round loads the
/// program afresh (empty tables; the reply-aware detector on, web
/// sampling off) and runs [`QUIET_SOURCES`] new sources, repeat 1 each,
/// with the no-op between runs. Reports the shares of sources that wrote
/// a contact to the contact table and that kept it waiting.
fn new_sources_quiet(b: &mut BenchPrograms, rounds: usize) -> Value {
    let reply = scanwatch::config::Detection::default().reply_config();
    let (mut runs, mut noops, mut recorded) = (Vec::new(), Vec::new(), [0u64; 2]);
    for _ in 0..rounds {
        let mut h =
            XdpHarness::load_reply(262_144, reply).expect("load with the reply-aware detector");
        let [s, n] = fresh_runs(1, QUIET_SOURCES, |next| {
            let f = new_source_syn(next, 22);
            [
                h.run_repeat(&f, 1).expect("run").1,
                b.run_noop(&f, 1).expect("noop").1,
            ]
        });
        let [c, w] = contacts_recorded(&mut h);
        recorded = [recorded[0] + c, recorded[1] + w];
        runs.push(s);
        noops.push(n);
    }
    let (s, n) = (median(runs), median(noops));
    let [share, waiting] =
        contact_shares([0; 2], recorded, rounds as f64 * f64::from(QUIET_SOURCES));
    println!(
        "{:<48} {s:>7.1} ns  noop {n:>6.1} ns  ratio {:>5.2}  first contacts recorded {:>5.1}%  waiting {:>5.1}%",
        "SYN from a new source, quiet table (repeat 1)",
        s / n.max(0.1),
        100.0 * share,
        100.0 * waiting
    );
    json!({ "case": "SYN from a new source, admission table quiet", "scanwatch_ns": s, "noop_ns": n, "ratio": s / n.max(0.1), "repeat": 1,
            "sources_per_round": QUIET_SOURCES, "rounds": rounds, "contacts_recorded_share": share, "contacts_waiting_share": waiting })
}

/// A SYN from a tracked source run the way [`new_sources`] runs its new
/// ones (repeat 1 each, with the no-op, the floor program and the program
/// with the detector off between runs): what the program costs in this
/// mode before any cold line of its tables, as its code runs after a
/// system call. A new source costs this plus the lines it reads for the
/// first time (its admission slot, its tag word, its first contact).
fn tracked_cold(
    h: &mut XdpHarness,
    off: &mut XdpHarness,
    b: &mut BenchPrograms,
    count: u32,
    rounds: usize,
) -> Value {
    let frame = Packet::new("198.18.50.12", "198.18.0.2", Transport::tcp(22, tcp::SYN)).build();
    // Tracked from here on: the same SYN repeated is admitted at the SYN rate.
    h.run_repeat(&frame, 10_000).expect("prime");
    off.run_repeat(&frame, 10_000).expect("prime");
    let [s, n, _, _] = fresh_runs(rounds, count, |_| {
        [
            h.run_repeat(&frame, 1).expect("run").1,
            b.run_noop(&frame, 1).expect("noop").1,
            b.run(FLOOR_ADMIT, &frame, 1).expect("floor").1,
            off.run_repeat(&frame, 1).expect("run").1,
        ]
    });
    let src: IpAddr = "198.18.50.12".parse().expect("ip");
    assert!(
        h.source(src).expect("source table").is_some(),
        "the primed source is tracked"
    );
    println!(
        "{:<48} {s:>7.1} ns  noop {n:>6.1} ns  ratio {:>5.2}",
        "SYN from a tracked source (repeat 1 each)",
        s / n.max(0.1)
    );
    json!({ "case": "SYN from a tracked source, run as the new sources are (repeat 1 each)", "scanwatch_ns": s, "noop_ns": n, "ratio": s / n.max(0.1), "repeat": 1, "runs_per_round": count, "rounds": rounds })
}

/// The scanner-tool signatures' cost: the tracked-source SYN with them
/// (the agent's program) and without (the same program loaded with
/// `tool_signatures` 0), and the no-op program, interleaved.
fn tool_signatures(
    h: &mut XdpHarness,
    b: &mut BenchPrograms,
    syn: &[u8],
    (repeat, rounds): (u32, usize),
) -> Value {
    let detect = scanwatch_common::DetectConfig {
        tool_signatures: 0,
        ..scanwatch::config::Detection::default().kernel_config()
    };
    let mut off =
        XdpHarness::load_for_bench_with(262_144, detect).expect("load without signatures");
    let (mut with, mut without, mut noop) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        with.push(h.run_repeat(syn, repeat).expect("run").1 as f64);
        without.push(off.run_repeat(syn, repeat).expect("run").1 as f64);
        noop.push(b.run_noop(syn, repeat).expect("noop").1 as f64);
    }
    let (w, o, n) = (median(with), median(without), median(noop));
    println!(
        "{:<48} {w:>7.1} ns  noop {n:>6.1} ns  ratio {:>5.2}  without {o:>6.1} ns  ratio {:>5.2}",
        "SYN from a tracked source, tool signatures",
        w / n.max(0.1),
        o / n.max(0.1)
    );
    json!({ "case": "SYN from a tracked source: with and without the tool signatures", "scanwatch_ns": w, "noop_ns": n,
            "ratio": w / n.max(0.1), "without_signatures_ns": o, "without_ratio": o / n.max(0.1),
            "signatures_ns": w - o, "repeat": repeat, "rounds": rounds })
}

/// Web sampling's cost (`[detection.web]`): a request's first segment to a
/// web port (sampled: a ring record of 576 bytes; the ring is drained
/// between runs of `batch`), and a later segment of the connection (TLS
/// data to port 443: the port test and one read of its first bytes), with
/// sampling on (the agent's default) and off, against the no-op program,
/// interleaved. The egress side: an `HTTP/1.1 404` response (reported) and
/// a later response segment.
fn web_sampling(
    h: &mut XdpHarness,
    b: &mut BenchPrograms,
    ack: &[u8],
    rounds: usize,
) -> Vec<Value> {
    let batch = 1_000u32; // fits the 1 MiB ring (about 1,800 records)
    let mut off = XdpHarness::load_for_bench_web(
        262_144,
        scanwatch::config::Detection::default().kernel_config(),
        WebConfig::DISABLED,
    )
    .expect("load without web sampling");
    let segment = |src: &str, dst: &str, sport: u16, dport: u16, payload: &[u8]| {
        Packet::new(
            src,
            dst,
            Transport::segment(sport, dport, tcp::ACK | tcp::PSH, payload),
        )
        .build()
    };
    let get = segment(
        "198.18.54.1",
        "198.18.0.2",
        40000,
        80,
        b"GET /wp-login.php HTTP/1.1\r\nHost: lab.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: */*\r\n\r\n",
    );
    let status = segment(
        "198.18.0.2",
        "198.18.54.1",
        80,
        40000,
        b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\nContent-Length: 153\r\n\r\n",
    );
    let later = segment("198.18.0.2", "198.18.54.1", 443, 40000, &[0x17; 512]);
    let (mut req, mut req_noop, mut resp, mut resp_noop) = (vec![], vec![], vec![], vec![]);
    let (mut on, mut without, mut noop) = (vec![], vec![], vec![]);
    let (mut eg_on, mut eg_off, mut eg_noop) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        req.push(h.run_repeat(&get, batch).expect("run").1 as f64);
        req_noop.push(b.run_noop(&get, batch).expect("noop").1 as f64);
        resp.push(h.run_egress_repeat(&status, batch).expect("tc run").1 as f64);
        resp_noop.push(b.run_egress_noop(&status, batch).expect("noop").1 as f64);
        let sampled = h.web_records();
        assert_eq!(
            sampled.len(),
            2 * batch as usize,
            "every request and status reported"
        );
        on.push(h.run_repeat(ack, 100 * batch).expect("run").1 as f64);
        without.push(off.run_repeat(ack, 100 * batch).expect("run").1 as f64);
        noop.push(b.run_noop(ack, 100 * batch).expect("noop").1 as f64);
        eg_on.push(h.run_egress_repeat(&later, 100 * batch).expect("tc").1 as f64);
        eg_off.push(off.run_egress_repeat(&later, 100 * batch).expect("tc").1 as f64);
        eg_noop.push(b.run_egress_noop(&later, 100 * batch).expect("noop").1 as f64);
    }
    assert!(h.web_records().is_empty() && off.web_records().is_empty());
    let row = |name: &str, s: Vec<f64>, n: Vec<f64>, without: Option<Vec<f64>>, program: &str| {
        let (s, n) = (median(s), median(n));
        let mut v = json!({ "case": name, "scanwatch_ns": s, "noop_ns": n, "ratio": s / n.max(0.1), "rounds": rounds, "program": program });
        let extra = match without {
            Some(w) => {
                let w = median(w);
                v["without_web_ns"] = json!(w);
                v["without_ratio"] = json!(w / n.max(0.1));
                format!("  without {w:>6.1} ns  ratio {:>5.2}", w / n.max(0.1))
            }
            None => String::new(),
        };
        println!(
            "{name:<48} {s:>7.1} ns  noop {n:>6.1} ns  ratio {:>5.2}{extra}",
            s / n.max(0.1)
        );
        v
    };
    vec![
        row(
            "web: request's first segment (sampled)",
            req,
            req_noop,
            None,
            "xdp",
        ),
        row(
            "web: later segment to a web port",
            on,
            noop,
            Some(without),
            "xdp",
        ),
        row(
            "egress: HTTP/1.1 404 status (reported)",
            resp,
            resp_noop,
            None,
            "tc egress",
        ),
        row(
            "egress: later segment from a web port",
            eg_on,
            eg_noop,
            Some(eg_off),
            "tc egress",
        ),
    ]
}

/// How many times [`per_packet_loads`] loads the programs afresh.
const LOADS: usize = 5;

/// The TEST_RUN rows ([`per_packet_all`]) measured with [`LOADS`] loads
/// of every program (one with `--quick`), each load's rounds as before.
/// Each load lands elsewhere (the kernel puts its JIT image at a random
/// offset, its maps get new memory), and on the VMs here one load ran
/// the benign ACK in 15 ns and another in 25 (`--profile-benign` runs of
/// one build; docs/benchmarks.md): a single load's figure is one draw.
/// Each row reports the median of its loads ([`combine_loads`]) and
/// every load's ratio.
fn per_packet_loads(o: &Opts) -> Vec<Value> {
    let loads = if o.quick { 1 } else { LOADS };
    let runs: Vec<Vec<Value>> = (0..loads)
        .map(|i| {
            println!(
                "TEST_RUN rows, programs loaded afresh: load {} of {loads}",
                i + 1
            );
            per_packet_all(o)
        })
        .collect();
    combine_loads(&runs)
}

/// One row per case of the loads' rows `runs` (the same cases in the same
/// order): every float is the median of the loads' (the ratio, the
/// median of the loads' ratios), anything else the first load's; with
/// `ratio_by_load`, every load's ratio.
fn combine_loads(runs: &[Vec<Value>]) -> Vec<Value> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut out = row.clone();
            let rows: Vec<&Value> = runs.iter().map(|r| &r[i]).collect();
            for r in &rows {
                assert_eq!(r["case"], row["case"], "the loads ran the same cases");
            }
            for (key, value) in row.as_object().into_iter().flatten() {
                if value.is_f64() {
                    let all = rows.iter().filter_map(|r| r[key].as_f64()).collect();
                    out[key] = json!(median(all));
                }
            }
            let ratios: Vec<f64> = rows.iter().filter_map(|r| r["ratio"].as_f64()).collect();
            out["ratio_by_load"] = json!(ratios);
            out["loads"] = json!(runs.len());
            out
        })
        .collect()
}

fn per_packet_all(o: &Opts) -> Vec<Value> {
    let (repeat, rounds, fresh) = if o.quick {
        (100_000, 3, 2_000)
    } else {
        (1_000_000, 7, 20_000)
    };
    let mut h = XdpHarness::load_for_bench(262_144).expect("load the XDP program");
    // The same program with the reply-aware detector off, run between the
    // new-source and cold tracked-source runs.
    let mut off = XdpHarness::load(262_144).expect("load with the detector off");
    // The baselines and floors.
    let mut b = BenchPrograms::load().expect("load the benchmark programs");
    let b = &mut b;
    let ack = benign_ack();
    let syn = Packet::new("198.18.50.2", "198.18.0.2", Transport::tcp(22, tcp::SYN)).build();
    let udp = Packet::new("198.18.50.3", "198.18.0.2", Transport::udp(161)).build();
    let icmp = Packet::new("198.18.50.4", "198.18.0.2", Transport::icmp(8)).build();
    let syn6 = Packet::new("fd00::50:5", "fd00::2", Transport::tcp(22, tcp::SYN))
        .ipv6_ext(Ipv6Ext::HopByHop)
        .build();
    let vlan = Packet::new("198.18.50.6", "198.18.0.2", Transport::tcp(22, tcp::SYN))
        .vlan(TPID_8021Q)
        .build();
    let (pass, drop) = (2, 1);
    let mut out = vec![
        per_packet(
            &mut h,
            b,
            "established TCP ACK with 512 B payload (benign)",
            &ack,
            (repeat, rounds),
            pass,
            Some(FLOOR_COUNT),
        ),
        call_cost(b, &ack, (repeat, rounds)),
        validated_floor(b, &ack, (repeat, rounds)),
        new_sources(&mut h, &mut off, b, fresh, rounds.min(5)),
        tracked_cold(&mut h, &mut off, b, fresh, rounds.min(5)),
        new_sources_quiet(b, rounds.min(5)),
        new_sources_taken(
            b,
            fresh,
            rounds.min(5),
            scanwatch_common::tracking::DEFAULT_ADMISSION_SLOTS,
        ),
        new_sources_taken(b, fresh, rounds.min(5), SMALL_ADMISSION),
        new_sources_taken(b, fresh, rounds.min(5), TINY_ADMISSION),
        per_packet(
            &mut h,
            b,
            "SYN from a tracked source",
            &syn,
            (repeat, rounds),
            pass,
            Some(FLOOR_TRACKED),
        ),
        tool_signatures(&mut h, b, &syn, (repeat, rounds)),
    ];
    out.extend(web_sampling(&mut h, b, &ack, rounds));
    out.extend([
        per_packet(
            &mut h,
            b,
            "UDP probe (tracked source)",
            &udp,
            (repeat, rounds),
            pass,
            None,
        ),
        per_packet(
            &mut h,
            b,
            "ICMP echo (tracked source)",
            &icmp,
            (repeat, rounds),
            pass,
            None,
        ),
        per_packet(
            &mut h,
            b,
            "IPv6 SYN with hop-by-hop header",
            &syn6,
            (repeat, rounds),
            pass,
            None,
        ),
        per_packet(
            &mut h,
            b,
            "802.1Q VLAN-tagged SYN",
            &vlan,
            (repeat, rounds),
            pass,
            None,
        ),
    ]);
    // Mitigation: one blocked source, one drop-feed network.
    let mut m = h
        .take_mitigation(
            MitigationConfig {
                auto_block: true,
                never_block_host_addresses: false,
                ..MitigationConfig::default()
            },
            vec![],
        )
        .expect("mitigation maps");
    let blocked = Packet::new(BLOCKED_SOURCE, "198.18.0.2", Transport::tcp(22, tcp::SYN)).build();
    block_bench_source(&mut m);
    b.block_floor_host(BLOCKED_SOURCE.parse().expect("ip"))
        .expect("floor block");
    let feed_dir = std::env::temp_dir().join(format!("scanwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&feed_dir).expect("dir");
    std::fs::write(feed_dir.join("feed.netset"), "198.18.52.0/24\n").expect("feed");
    m.load_feeds(&[scanwatch::config::FeedConfig {
        name: "bench".into(),
        path: feed_dir.join("feed.netset"),
        action: scanwatch::config::FeedAction::Drop,
    }]);
    let fed = Packet::new("198.18.52.9", "198.18.0.2", Transport::tcp(22, tcp::SYN)).build();
    out.push(per_packet(
        &mut h,
        b,
        "packet from a blocked source (drop)",
        &blocked,
        (repeat, rounds),
        drop,
        Some(FLOOR_BLOCKLIST),
    ));
    out.push(per_packet(
        &mut h,
        b,
        "packet from a drop-feed CIDR (drop)",
        &fed,
        (repeat, rounds),
        drop,
        None,
    ));
    out.push(per_packet(
        &mut h,
        b,
        "benign ACK while 1 block and 1 feed entry are loaded",
        &ack,
        (repeat, rounds),
        pass,
        None,
    ));
    // Many blocks and feed networks of mixed lengths, none covering the ACK's source.
    let entries = if o.quick { 20_000 } else { 100_000 };
    let loaded = load_many(&mut m, entries, &feed_dir);
    let mut case = per_packet(
        &mut h,
        b,
        &format!("benign ACK while {entries} blocks and feed entries are loaded"),
        &ack,
        (repeat, rounds),
        pass,
        None,
    );
    case["loaded"] = loaded;
    out.push(case);
    let _ = std::fs::remove_dir_all(&feed_dir);
    out.extend(reply_per_packet(repeat, rounds, fresh));
    out
}

/// Loads `entries` blocks and feed entries of mixed lengths, none covering
/// 198.0.0.0/8 (the per-packet cases' sources), beside the one block and
/// the `bench` feed already there: two fifths blocks (IPv4 /32 and /24,
/// IPv6 /128 and /64), three fifths a second drop feed (IPv4 /32, /24, /22,
/// /16 and a few /12, IPv6 /48 and /32). Returns what was loaded and the
/// prefilter's figures: its computed false-positive rate per IPv6 level test,
/// and the share of 100,000 random IPv4 sources outside every entry that
/// it answers *maybe* (those take the exact lookups).
fn load_many(m: &mut Mitigation, entries: u32, dir: &Path) -> Value {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let v4 = |r: u64| {
        let first = 1 + (r % 190) as u8;
        IpAddr::V4(Ipv4Addr::new(
            first,
            (r >> 8) as u8,
            (r >> 16) as u8,
            (r >> 24) as u8,
        ))
    };
    let v6 = |r: u64| {
        IpAddr::V6(std::net::Ipv6Addr::new(
            0x2001 + (r % 0xe00) as u16,
            (r >> 16) as u16,
            (r >> 32) as u16,
            (r >> 48) as u16,
            0,
            0,
            0,
            1,
        ))
    };
    let net = |ip: IpAddr, len: u8| IpNet::new(ip, len).expect("prefix length").trunc();
    let started = Instant::now();
    let blocks = entries * 2 / 5;
    for i in 0..blocks {
        let r = next();
        let target = match i % 10 {
            0..=6 => net(v4(r), 32),
            7 => net(v4(r), 24),
            8 => net(v6(r), 128),
            _ => net(v6(r), 64),
        };
        m.block(target, None, block_origin::MANUAL, "bench")
            .expect("block");
    }
    let mut lines = String::new();
    for i in 0..entries - blocks {
        let r = next();
        let entry = match i % 20 {
            0..=9 => net(v4(r), 32),
            10..=14 => net(v4(r), 24),
            15 | 16 => net(v4(r), 22),
            17 if i % 100 == 17 => net(v4(r), 12),
            17 => net(v4(r), 16),
            18 => net(v6(r), 48),
            _ => net(v6(r), 32),
        };
        lines.push_str(&format!("{entry}\n"));
    }
    std::fs::write(dir.join("many.netset"), lines).expect("feed");
    let feed = |name: &str, file: &str| scanwatch::config::FeedConfig {
        name: name.into(),
        path: dir.join(file),
        action: scanwatch::config::FeedAction::Drop,
    };
    let problems = m.load_feeds(&[feed("bench", "feed.netset"), feed("many", "many.netset")]);
    assert!(problems.is_empty(), "{problems:?}");
    let seconds = started.elapsed().as_secs_f64();
    let pf = m.prefilter();
    let probes = 100_000u32;
    let maybe = (0..probes)
        .filter(|_| {
            let r = next();
            // 200.0.0.0 - 223.255.255.255: outside every entry.
            let a = [
                200 + (r % 24) as u8,
                (r >> 8) as u8,
                (r >> 16) as u8,
                (r >> 24) as u8,
            ];
            pf.may_match(&scanwatch_common::SourceKey::v4(a).addr)
        })
        .count();
    let share = maybe as f64 / f64::from(probes);
    let (blocked, fed) = (m.stats.blocked_sources, m.feed_stats["many"].entries);
    println!(
        "loaded {blocked} blocks and {fed} feed entries in {seconds:.1} s; prefilter: IPv6 {} words, {} bits set in both, false positives {:.4}% per IPv6 level test, {:.4}% of uncovered IPv4 sources tested maybe",
        pf.words.len(),
        pf.bits_set(),
        pf.false_positive_rate() * 100.0,
        share * 100.0
    );
    json!({ "blocks": blocked, "feed_entries": fed, "load_seconds": seconds, "prefilter_words": pf.words.len(),
            "prefilter_bits_set": pf.bits_set(), "false_positive_rate_per_ipv6_level_test": pf.false_positive_rate(),
            "uncovered_ipv4_sources_tested_maybe": share })
}

/// One egress case: the TC program against the no-op TC program.
fn egress_case(
    h: &mut XdpHarness,
    b: &mut BenchPrograms,
    name: &str,
    frame: &[u8],
    repeat: u32,
    rounds: usize,
) -> Value {
    let mut sw = Vec::new();
    let mut noop = Vec::new();
    for _ in 0..rounds {
        let (a, ns) = h.run_egress_repeat(frame, repeat).expect("tc run");
        assert_eq!(a, -1, "{name}: the egress program never decides");
        sw.push(ns as f64);
        noop.push(b.run_egress_noop(frame, repeat).expect("noop").1 as f64);
    }
    let (s, n) = (median(sw), median(noop));
    println!(
        "{name:<48} {s:>7.1} ns  noop {n:>6.1} ns  ratio {:>5.2}",
        s / n.max(0.1)
    );
    json!({ "case": name, "scanwatch_ns": s, "noop_ns": n, "ratio": s / n.max(0.1), "repeat": repeat, "rounds": rounds, "program": "tc egress" })
}

/// The reply-aware detector: XDP with first-contact bookkeeping on, and
/// the TC egress program (ratio to the no-op TC program).
fn reply_per_packet(repeat: u32, rounds: usize, fresh: u32) -> Vec<Value> {
    let mut h = XdpHarness::load_reply(
        262_144,
        scanwatch::config::Detection::default().reply_config(),
    )
    .expect("load with the reply-aware detector");
    let mut b = BenchPrograms::load().expect("load the benchmark programs");
    let ack = Packet::new(
        "198.18.0.2",
        "198.18.53.1",
        Transport::Tcp {
            sport: 443,
            dport: 40000,
            flags: tcp::ACK | tcp::PSH,
            options: Vec::new(),
            payload: vec![0x17; 512],
        },
    )
    .build();
    let syn = Packet::new("198.18.53.2", "198.18.0.2", Transport::tcp(22, tcp::SYN)).build();
    let answer = |flags: u8, remote: &str| {
        Packet::new(
            "198.18.0.2",
            remote,
            Transport::Tcp {
                sport: 22,
                dport: 40000,
                flags,
                options: Vec::new(),
                payload: Vec::new(),
            },
        )
        .build()
    };
    // The SYN's contact exists after the first run: every later run is a repeat.
    h.run(&syn).expect("xdp run");
    let syn_ack = answer(tcp::SYN | tcp::ACK, "198.18.53.2");
    h.run_egress(&syn_ack).expect("tc run");
    // (The XDP side with the detector on is the main per-packet table: the
    // benchmarks load the program as the agent does by default.)
    let mut out = vec![
        egress_case(
            &mut h,
            &mut b,
            "egress: established ACK, 512 B payload (benign)",
            &ack,
            repeat,
            rounds,
        ),
        egress_case(
            &mut h,
            &mut b,
            "egress: SYN-ACK answering no pending contact",
            &syn_ack,
            repeat,
            rounds,
        ),
    ];
    // An RST resolving a pending first contact changes state: one fresh
    // contact per run (repeat 1), against the no-op run the same way. The
    // walk's upper boundary is out of reach here: a source decided at its
    // fourth RST records no more contacts (`SourceStats::REPLY_DECIDED`),
    // and its later RSTs would measure the skip instead.
    let mut never = scanwatch::config::Detection::default().reply_config();
    never.upper = i64::MAX;
    let mut r =
        XdpHarness::load_reply(262_144, never).expect("load with the boundary out of reach");
    let [s, n] = fresh_runs(rounds.min(5), fresh, |next| {
        let port = 1000 + (next % 60_000) as u16;
        let remote = Ipv4Addr::from(0x0b00_0000 + next / 60_000).to_string();
        let probe = Packet::new(&remote, "198.18.0.2", Transport::tcp(port, tcp::SYN)).build();
        r.run(&probe).expect("xdp run");
        let rst = Packet::new(
            "198.18.0.2",
            &remote,
            Transport::Tcp {
                sport: port,
                dport: 40000,
                flags: tcp::RST | tcp::ACK,
                options: Vec::new(),
                payload: Vec::new(),
            },
        )
        .build();
        [
            r.run_egress_repeat(&rst, 1).expect("tc run").1,
            b.run_egress_noop(&rst, 1).expect("noop").1,
        ]
    });
    println!(
        "{:<48} {s:>7.1} ns  noop {n:>6.1} ns  ratio {:>5.2}",
        "egress: RST resolving a first contact (repeat 1)",
        s / n.max(0.1)
    );
    out.push(json!({ "case": "egress: RST resolving a pending first contact (test step)", "scanwatch_ns": s, "noop_ns": n, "ratio": s / n.max(0.1), "repeat": 1, "contacts_per_round": fresh, "rounds": rounds.min(5), "program": "tc egress" }));
    out.push(new_contacts(&mut h, &mut b, rounds.min(5), fresh));
    out
}

/// Runs `run` on fresh inputs (1, 2, ...) `fresh` times a round, for
/// `rounds` rounds: the median over rounds of the mean ns of each of the
/// `N` programs it runs (interleaved, repeat 1 each).
fn fresh_runs<const N: usize>(
    rounds: usize,
    fresh: u32,
    mut run: impl FnMut(u32) -> [u64; N],
) -> [f64; N] {
    let mut means: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
    let mut next = 0u32;
    for _ in 0..rounds {
        let mut sums = [0u64; N];
        for _ in 0..fresh {
            next += 1;
            for (sum, ns) in sums.iter_mut().zip(run(next)) {
                *sum += ns;
            }
        }
        for (m, sum) in means.iter_mut().zip(sums) {
            m.push(sum as f64 / f64::from(fresh));
        }
    }
    means.map(median)
}

/// XDP: SYNs to ports a tracked source has not contacted yet, each a new
/// first contact written into its slot (repeat 1), against the same SYNs
/// with the reply-aware detector off and the no-op program, interleaved.
fn new_contacts(h: &mut XdpHarness, b: &mut BenchPrograms, rounds: usize, fresh: u32) -> Value {
    let mut off = XdpHarness::load(262_144).expect("load with the detector off");
    let [s, o, n] = fresh_runs(rounds, fresh, |next| {
        let port = 1 + (next % 65_535) as u16;
        let remote = Ipv4Addr::from(0x0d00_0000 + next / 65_535).to_string();
        let f = Packet::new(&remote, "198.18.0.2", Transport::tcp(port, tcp::SYN)).build();
        [
            h.run_repeat(&f, 1).expect("xdp run").1,
            off.run_repeat(&f, 1).expect("xdp run").1,
            b.run_noop(&f, 1).expect("noop").1,
        ]
    });
    println!(
        "{:<48} {s:>7.1} ns  noop {n:>6.1} ns  ratio {:>5.2}  detector off {o:>6.1} ns",
        "XDP: SYN to a new port, new first contact (repeat 1)",
        s / n.max(0.1)
    );
    json!({ "case": "XDP: SYN to a new port of a tracked source (writes a first contact)", "scanwatch_ns": s, "noop_ns": n, "ratio": s / n.max(0.1),
            "reply_off_ns": o, "contact_ns": s - o, "repeat": 1, "contacts_per_round": fresh, "rounds": rounds, "program": "xdp" })
}

/// The agent's no-answer sweep over a full contact table (65,536 pending
/// TCP contacts from 256 sources, one per slot: the keys are chosen with the
/// harness's fixed hash seed): the sweep that marks them all, then one
/// that finds nothing to do (the steady cost of the periodic pass).
fn reply_sweep() -> Value {
    use scanwatch_common::{
        SourceKey,
        contact_table::CONTACTS_MASK,
        sketch::port_entry,
        trw::{ContactKey, ReplyCounter},
    };
    // Every source tracked from its first probe: each SYN below is one
    // first contact.
    let mut detect = scanwatch::config::Detection::default().kernel_config();
    detect.admit_after = 1;
    let mut h = XdpHarness::load_reply_with(
        262_144,
        scanwatch::config::Detection::default().reply_config(),
        &detect,
    )
    .expect("load with the reply-aware detector");
    let seed = scanwatch::kernel::testrun::HARNESS_CONTACT_SEED;
    let capacity = scanwatch_common::trw::DEFAULT_CONTACTS_CAPACITY as usize;
    let local_ip: IpAddr = "198.18.0.2".parse().expect("ip");
    let local = SourceKey::from_ip(local_ip).addr;
    let mut free = vec![true; capacity];
    let mut left = capacity;
    'fill: for port in 1..=u16::MAX {
        for s in 0..256u32 {
            let src = IpAddr::V4(Ipv4Addr::from(0x0c00_0000 + s));
            let key = ContactKey {
                remote: h.source_key(src).addr,
                local,
                port: port_entry(port, false),
            };
            let slot = seed.slot(&key, CONTACTS_MASK) as usize;
            if !std::mem::replace(&mut free[slot], false) {
                continue;
            }
            let f = Packet::from_ips(src, local_ip, Transport::tcp(port, tcp::SYN)).build();
            h.run(&f).expect("xdp run");
            left -= 1;
            if left == 0 {
                break 'fill;
            }
        }
    }
    let counters = h.reply().expect("reply maps").counters().expect("counters");
    assert_eq!(
        (
            counters.get(ReplyCounter::Contacts),
            counters.get(ReplyCounter::ContactsOverwritten)
        ),
        (capacity as u64, 0),
        "one contact per slot"
    );
    let reply = h.reply().expect("reply maps");
    let now = scanwatch::model::kernel_now_ns();
    let t = Instant::now();
    let first = reply.sweep(0, now).expect("sweep");
    let marking = t.elapsed();
    let t = Instant::now();
    let second = reply.sweep(0, now + 1).expect("sweep");
    let idle = t.elapsed();
    println!(
        "reply sweep of a full table ({} contacts): {:.2} ms marking {} no-answers ({} crossings), {:.2} ms with nothing to mark",
        first.scanned,
        marking.as_secs_f64() * 1e3,
        first.no_answers,
        first.crossings.len(),
        idle.as_secs_f64() * 1e3
    );
    json!({ "contacts": first.scanned, "marking_ms": marking.as_secs_f64() * 1e3, "no_answers": first.no_answers,
            "crossings": first.crossings.len(), "idle_walk_ms": idle.as_secs_f64() * 1e3, "idle_scanned": second.scanned })
}

/// Kernel memory of every map at default sizes, from fdinfo `memlock`.
fn memory() -> Value {
    // What the verifier walked to accept the program as the agent loads it
    // by default (reply-aware detector and web sampling on), and with both
    // off (their code is then pruned as dead).
    let verified = XdpHarness::load_for_bench(scanwatch_common::maps::DEFAULT_SOURCE_MAP_SIZE)
        .and_then(|mut h| h.verified_instructions())
        .expect("program info");
    let mut h = XdpHarness::load(scanwatch_common::maps::DEFAULT_SOURCE_MAP_SIZE).expect("load");
    let verified_bare = h.verified_instructions().expect("program info");
    let mut maps = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo")
        .expect("fdinfo")
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:")) else {
            continue;
        };
        let Ok(id) = id.parse::<u32>() else { continue };
        let Ok(info) = aya::maps::MapInfo::from_id(id) else {
            continue;
        };
        let name = info.name_as_str().unwrap_or("?").to_string();
        maps.insert(
            name,
            json!({ "max_entries": info.max_entries(), "key_size": info.key_size(), "value_size": info.value_size(),
                    "memlock_bytes": memlock.parse::<u64>().unwrap_or(0) }),
        );
    }
    drop(h);
    let total: u64 = maps
        .values()
        .filter_map(|v| v["memlock_bytes"].as_u64())
        .sum();
    let per_source = maps.get("SOURCES").and_then(|v| {
        Some(v["memlock_bytes"].as_u64()? / u64::from(v["max_entries"].as_u64()? as u32))
    });
    println!(
        "kernel map memory at default sizes: {total} bytes; per tracked source: {per_source:?} bytes; XDP program verified in {verified:?} instructions ({verified_bare:?} with the reply-aware detector and web sampling off; limit 1000000)"
    );
    json!({ "maps": maps, "total_bytes": total, "bytes_per_source": per_source,
            "xdp_verified_instructions": verified, "xdp_verified_instructions_reply_web_off": verified_bare })
}

fn proc_stat(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let rss_pages = f.get(21).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks, rss_pages * 4096)
}

/// The agent with its source map holding a million sources.
fn agent_scale(o: &Opts) -> Value {
    let (sources, seconds): (u32, u64) = if o.quick {
        (100_000, 5)
    } else {
        (1_000_000, 60)
    };
    let mut lab = Lab::new().expect("lab");
    let agent = BenchAgent::start(
        &mut lab,
        &["--map-size", "1048576", "--metrics-addr", "198.18.0.2:9477"],
    );
    let (pid, pin, dir) = (agent.pid, agent.pin.clone(), agent.dir.clone());
    let t = Instant::now();
    let mut maps = scanwatch::kernel::detect_maps::ScanwatchMaps::open_pinned(&pin).expect("pins");
    maps.insert_idle_sources(sources, 0xee)
        .expect("fill the source map");
    println!(
        "filled {sources} sources in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let tck = sh("getconf CLK_TCK").parse::<f64>().unwrap_or(100.0);
    let (t0, _) = proc_stat(pid);
    std::thread::sleep(Duration::from_secs(seconds));
    let (t1, rss) = proc_stat(pid);
    let cpu = (t1 - t0) as f64 / tck / seconds as f64 * 100.0;
    // A scrape, timed by curl in the scanner namespace.
    let scrape: Vec<f64> = (0..5)
        .filter_map(|_| {
            let o = lab
                .in_scanner()
                .args([
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{time_total}",
                    "http://198.18.0.2:9477/metrics",
                ])
                .output()
                .ok()?;
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .collect();
    // A real scan: kernel crossing to alert line.
    let _ = lab
        .in_scanner()
        .args(["nmap", "-n", "-Pn", "-sS", "-p", "1-200", "198.18.0.2"])
        .output();
    let alerts_path = dir.join("alerts.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut latency_ms = None;
    while latency_ms.is_none() && Instant::now() < deadline {
        if let Some(line) = std::fs::read_to_string(&alerts_path)
            .unwrap_or_default()
            .lines()
            .next()
        {
            let v: Value = serde_json::from_str(line).unwrap_or_default();
            let t = |f: &str| {
                chrono::DateTime::parse_from_rfc3339(v[f].as_str().unwrap_or_default()).ok()
            };
            if let (Some(a), Some(c)) = (t("time"), t("crossed_at")) {
                latency_ms = Some((a - c).num_milliseconds());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let scrape_ms = median(scrape) * 1000.0;
    println!(
        "agent with {sources} sources: {cpu:.2}% of one core over {seconds} s, RSS {:.1} MB, scrape {scrape_ms:.1} ms, crossing to alert {latency_ms:?} ms",
        rss as f64 / 1e6
    );
    agent.stop(&mut lab);
    drop(lab);
    json!({ "sources": sources, "seconds": seconds, "cpu_percent_of_one_core": cpu, "rss_bytes": rss,
            "scrape_ms_median": scrape_ms, "crossing_to_alert_ms": latency_ms })
}

/// The agent running in the lab's target namespace with a pin directory
/// and alert log of its own (removed by [`BenchAgent::stop`]).
struct BenchAgent {
    pid: u32,
    pin: PathBuf,
    dir: PathBuf,
}

impl BenchAgent {
    /// Starts the agent on the target's veth with `args` and waits until it
    /// has attached (its pins are there).
    fn start(lab: &mut Lab, args: &[&str]) -> Self {
        let pin = PathBuf::from(format!("/sys/fs/bpf/scanwatch-bench-{}", lab.target_ns));
        let dir = std::env::temp_dir().join(format!("scanwatch-bench-{}", lab.target_ns));
        let mut cmd = lab.in_target();
        cmd.arg(scanwatch_lab::agent_bin::agent_binary())
            .args(["run", "--iface", &lab.target_if])
            .args(args)
            .arg("--pin-dir")
            .arg(&pin)
            .arg("--alert-log")
            .arg(dir.join("alerts.jsonl"))
            .arg("--control-socket")
            .arg(dir.join("control.sock"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let pid = lab.spawn(cmd).expect("agent");
        let agent = Self { pid, pin, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agent.pin.join("IFACE_NAMES").exists() {
            if Instant::now() >= deadline {
                // Stopped and cleaned up first: no pins left behind.
                agent.stop(lab);
                panic!("agent not ready within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    fn stop(self, lab: &mut Lab) {
        lab.stop(self.pid, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.pin);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// BPF run-time statistics on while the returned descriptor is open
/// (`BPF_ENABLE_STATS`, the same switch as `kernel.bpf_stats_enabled`,
/// counted: closing it restores what others set, even on a panic).
fn enable_bpf_stats() -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd as _;
    const BPF_ENABLE_STATS: libc::c_long = 32;
    const BPF_STATS_RUN_TIME: u32 = 0;
    let attr = [BPF_STATS_RUN_TIME, 0u32];
    // SAFETY: the bpf syscall reads `attr` (8 bytes) and returns a new fd.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    assert!(
        fd >= 0,
        "BPF_ENABLE_STATS: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a descriptor the kernel just returned to us.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }
}

/// CPU a process and the BPF programs it holds have used so far.
#[derive(Clone, Copy, Default)]
struct CpuSample {
    /// utime + stime of every thread, in clock ticks (/proc/PID/stat).
    ticks: u64,
    /// Time on CPU of its live threads, ns (/proc/PID/task/*/schedstat).
    sched_ns: u64,
    /// (`run_time_ns`, `run_cnt`) of its XDP and its TC programs.
    xdp: (u64, u64),
    tc: (u64, u64),
}

fn cpu_sample(pid: u32) -> CpuSample {
    const XDP: u32 = 6; // BPF_PROG_TYPE_XDP
    const SCHED_CLS: u32 = 3; // BPF_PROG_TYPE_SCHED_CLS
    let mut out = CpuSample {
        ticks: proc_stat(pid).0,
        ..CpuSample::default()
    };
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        out.sched_ns += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    // Each program once (a link's fdinfo names its program, without stats).
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (Some(kind), Some(id), Some(ns), Some(cnt)) = (
            field("prog_type:"),
            field("prog_id:"),
            field("run_time_ns:"),
            field("run_cnt:"),
        ) else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        match u32::try_from(kind) {
            Ok(XDP) => out.xdp = (out.xdp.0 + ns, out.xdp.1 + cnt),
            Ok(SCHED_CLS) => out.tc = (out.tc.0 + ns, out.tc.1 + cnt),
            _ => {}
        }
    }
    out
}

/// CPU seconds between two samples: (agent from /proc/PID/stat, agent from
/// schedstat, XDP program, TC program), and the programs' runs.
fn cpu_between(a: CpuSample, b: CpuSample, tck: f64) -> Value {
    let agent = b.ticks.saturating_sub(a.ticks) as f64 / tck;
    let sched = b.sched_ns.saturating_sub(a.sched_ns) as f64 / 1e9;
    let xdp = b.xdp.0.saturating_sub(a.xdp.0) as f64 / 1e9;
    let tc = b.tc.0.saturating_sub(a.tc.0) as f64 / 1e9;
    json!({ "agent_s": agent, "agent_schedstat_s": sched, "xdp_s": xdp, "tc_s": tc, "programs_s": xdp + tc, "total_s": agent + xdp + tc, "total_schedstat_s": sched + xdp + tc,
            "xdp_runs": b.xdp.1.saturating_sub(a.xdp.1), "tc_runs": b.tc.1.saturating_sub(a.tc.1) })
}

/// CPU for one nmap SYN scan of every port of the target (`--quick`: ports
/// 1-10000), agent and programs: the real agent in the lab with
/// `no_answer_timeout_seconds = 2`, measured from before the scan until
/// past the timeout and the sweep that follows it, and over the same time
/// with no scan before it (idle).
fn nmap_cpu(o: &Opts) -> Value {
    let ports = if o.quick { "1-10000" } else { "1-65535" };
    let timeout_s = 2;
    let mut lab = Lab::new().expect("lab");
    let config = std::env::temp_dir().join(format!("scanwatch-bench-{}.toml", lab.target_ns));
    std::fs::write(
        &config,
        format!("[detection.reply_scan]\nno_answer_timeout_seconds = {timeout_s}\n"),
    )
    .expect("config");
    let config_s = config.to_string_lossy().into_owned();
    let agent = BenchAgent::start(
        &mut lab,
        &["--config", &config_s, "--metrics-addr", "198.18.0.2:9479"],
    );
    let stats = enable_bpf_stats();
    let tck = sh("getconf CLK_TCK").parse::<f64>().unwrap_or(100.0);
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_sample(agent.pid);
    let t = Instant::now();
    let out = lab
        .in_scanner()
        .args(["timeout", "90", "nmap", "-n", "-Pn", "-sS", "-p", ports])
        .args(["--min-rate", "20000", "198.18.0.2"])
        .output()
        .expect("nmap");
    let scan_s = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "nmap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Past the timeout, and a sweep (every half timeout) after it.
    std::thread::sleep(Duration::from_secs(timeout_s + timeout_s / 2 + 1));
    let after = cpu_sample(agent.pid);
    let window = t.elapsed();
    std::thread::sleep(window);
    let idle_end = cpu_sample(agent.pid);
    drop(stats);
    agent.stop(&mut lab);
    drop(lab);
    let _ = std::fs::remove_file(&config);
    let scan = cpu_between(before, after, tck);
    let idle = cpu_between(after, idle_end, tck);
    println!(
        "nmap -sS -p {ports}{} in {scan_s:.1} s, measured over {:.1} s: agent {:.3} s (schedstat {:.3} s), XDP {:.4} s ({} runs), TC {:.4} s ({} runs), total {:.3} s (with schedstat {:.3} s; target <= 0.05 s); the same time idle after it: agent {:.3} s, programs {:.4} s",
        if o.quick {
            " (--quick: not all 65,535 ports)"
        } else {
            ""
        },
        window.as_secs_f64(),
        scan["agent_s"].as_f64().unwrap_or(f64::NAN),
        scan["agent_schedstat_s"].as_f64().unwrap_or(f64::NAN),
        scan["xdp_s"].as_f64().unwrap_or(f64::NAN),
        scan["xdp_runs"],
        scan["tc_s"].as_f64().unwrap_or(f64::NAN),
        scan["tc_runs"],
        scan["total_s"].as_f64().unwrap_or(f64::NAN),
        scan["total_schedstat_s"].as_f64().unwrap_or(f64::NAN),
        idle["agent_s"].as_f64().unwrap_or(f64::NAN),
        idle["programs_s"].as_f64().unwrap_or(f64::NAN),
    );
    json!({ "ports": ports, "all_ports": !o.quick, "agent_binary": scanwatch_lab::agent_bin::agent_binary(), "nmap_seconds": scan_s, "window_seconds": window.as_secs_f64(),
            "no_answer_timeout_seconds": timeout_s, "scan": scan, "idle_after": idle, "target_total_s": 0.05 })
}

/// Runs `f` on a thread that entered the network namespace at `ns_path`
/// (setns affects only the calling thread).
fn in_netns<T: Send + 'static>(ns_path: PathBuf, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd as _;
        let ns = std::fs::File::open(&ns_path).expect("netns file");
        // SAFETY: setns on a valid namespace fd, for this thread only.
        assert_eq!(
            unsafe { libc_setns(ns.as_raw_fd(), 0x4000_0000) },
            0,
            "setns"
        );
        f()
    })
    .join()
    .expect("netns thread")
}

fn rx_packets(lab: &Lab) -> u64 {
    let out = Command::new("ip")
        .args([
            "-n",
            &lab.target_ns,
            "-s",
            "-j",
            "link",
            "show",
            "dev",
            &lab.target_if,
        ])
        .output()
        .expect("ip");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v[0]["stats64"]["rx"]["packets"].as_u64().unwrap_or(0)
}

/// Sends `count` copies of `frame` out of the scanner's veth with
/// BPF_PROG_TEST_RUN live frames (an XDP_TX program), from the scanner
/// namespace; returns the seconds it took.
fn generate(lab: &Lab, frame: Vec<u8>, count: u32) -> f64 {
    generate_with(lab, BENCH_TX, frame, count)
}

/// scanwatch loaded with the default detection settings and `opts`, its
/// counters slot assigned to `ifname` (of the calling thread's namespace).
fn load_for(
    ifname: &str,
    opts: &scanwatch::kernel::object::LoadOptions<'_>,
) -> (aya::Ebpf, scanwatch::kernel::object::Interface) {
    let detection = scanwatch::config::Detection::default();
    let mut ebpf = scanwatch::kernel::object::load_with(262_144, &detection.kernel_config(), opts)
        .expect("load");
    let iface = scanwatch::kernel::object::Interface::resolve(ifname).expect("iface");
    scanwatch::kernel::detect_maps::ScanwatchMaps::assign_slots(&mut ebpf, &[iface.ifindex])
        .expect("slots");
    (ebpf, iface)
}

/// Attaches what `case` names to the target veth: nothing, the no-op
/// program, or scanwatch loaded as the agent loads it by default.
/// What `attach_case` attached (detached when dropped).
#[allow(dead_code, reason = "held for its Drop")]
enum Attached {
    Noop(BenchPrograms),
    /// A benchmark program other than the no-op (a floor), by name.
    Bench(BenchPrograms, &'static str),
    Scanwatch(aya::Ebpf),
}

fn attach_case(target_ns: PathBuf, ifname: String, case: &'static str) -> Option<Attached> {
    in_netns(target_ns, move || {
        use aya::programs::XdpMode;
        match case {
            "none" => None,
            "noop" => {
                let mut programs = BenchPrograms::load().expect("benchmark programs");
                programs
                    .xdp(NOOP)
                    .expect("noop")
                    .attach(&ifname, XdpMode::Driver)
                    .expect("attach noop");
                Some(Attached::Noop(programs))
            }
            "floor" => {
                let name = scanwatch_integration::bench_programs::FLOOR_ADMIT;
                let mut programs = BenchPrograms::load().expect("benchmark programs");
                programs
                    .xdp(name)
                    .expect("floor")
                    .attach(&ifname, XdpMode::Driver)
                    .expect("attach floor");
                Some(Attached::Bench(programs, name))
            }
            _ => {
                let (mut ebpf, iface) = load_for(
                    &ifname,
                    &scanwatch::kernel::object::LoadOptions {
                        reply: scanwatch::config::Detection::default().reply_config(),
                        ..scanwatch::kernel::object::LoadOptions::default()
                    },
                );
                scanwatch::kernel::xdp_link::attach(
                    &mut ebpf,
                    &iface,
                    scanwatch::model::AttachMode::Native,
                )
                .expect("attach");
                Some(Attached::Scanwatch(ebpf))
            }
        }
    })
}

/// Packets per second received on the target veth with no XDP program, the
/// no-op program and scanwatch, from the same generator, for two streams:
/// benign packets of an established flow (scanwatch's fast path) and SYNs
/// from one source (its probe path: per-source tracking and first
/// contacts). The three targets alternate within each round, so that a
/// slow spell of this shared machine hits all of them.
fn throughput(o: &Opts) -> Value {
    let count: u32 = if o.quick { 2_000_000 } else { 10_000_000 };
    let rounds = if o.quick { 1 } else { 5 };
    let lab = Lab::new().expect("lab");
    gro_on(&lab);
    let target_mac = mac_of(&lab.target_ns, &lab.target_if);
    let scanner_mac = mac_of(&lab.scanner_ns, &lab.scanner_if);
    // To an address the target does not own: its stack drops them cheaply (no forwarding).
    let frame = |flags: u8| {
        let mut f = Packet::new("198.18.0.1", "198.19.200.1", Transport::tcp(80, flags)).build();
        f[0..6].copy_from_slice(&target_mac);
        f[6..12].copy_from_slice(&scanner_mac);
        f
    };
    let streams = [
        ("established-flow ACKs (benign)", frame(tcp::ACK)),
        ("SYNs from one source (probes)", frame(tcp::SYN)),
    ];
    let target_ns = PathBuf::from(format!("/run/netns/{}", lab.target_ns));
    let cases = ["none", "noop", "scanwatch"];
    let mut traffic = Vec::new();
    for (stream, frame) in &streams {
        let mut pps: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for _ in 0..rounds {
            for case in cases {
                let attached = attach_case(target_ns.clone(), lab.target_if.clone(), case);
                let before = rx_packets(&lab);
                let secs = generate(&lab, frame.clone(), count);
                std::thread::sleep(Duration::from_millis(200));
                let received = rx_packets(&lab) - before;
                pps.entry(case).or_default().push(received as f64 / secs);
                drop(attached);
            }
        }
        let mut results = BTreeMap::new();
        for case in cases {
            let m = median(pps.remove(case).unwrap_or_default());
            println!("veth throughput, {stream}, {case:<9}: {m:.0} packets/s received");
            results.insert(case, m);
        }
        let ratio = results["scanwatch"] / results["noop"].max(1.0);
        println!("veth throughput ratio scanwatch / no-op, {stream}: {ratio:.2}");
        traffic.push(json!({ "stream": stream, "packets_per_second": results, "scanwatch_over_noop": ratio }));
    }
    json!({ "streams": traffic, "frames_per_round": count, "rounds": rounds, "interleaved": true })
}

impl Attached {
    /// The attached XDP program's kernel run-time statistics: total ns run
    /// and runs (they grow only while BPF run-time statistics are enabled).
    fn run_stats(&mut self) -> (u64, u64) {
        let info = match self {
            Self::Noop(programs) => programs.xdp(NOOP).expect("noop").info(),
            Self::Bench(programs, name) => programs.xdp(name).expect("program").info(),
            Self::Scanwatch(ebpf) => scanwatch::kernel::object::xdp_program(ebpf)
                .expect("scanwatch program")
                .info(),
        }
        .expect("program info");
        (
            u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
            info.run_count(),
        )
    }

    /// Sources scanwatch created since it was loaded (its own counter); takes
    /// its maps out of the object, so call it once, last.
    fn sources_created(&mut self) -> Option<u64> {
        match self {
            Self::Noop(_) | Self::Bench(..) => None,
            Self::Scanwatch(ebpf) => scanwatch::kernel::detect_maps::ScanwatchMaps::take(ebpf)
                .ok()?
                .total_counters()
                .ok()
                .map(|c| c.get(scanwatch_common::Counter::SourcesCreated)),
        }
    }
}

/// Like [`generate`], with XDP program `program` of the benchmark object
/// as the generator (e.g. the random-source flood).
fn generate_with(lab: &Lab, program: &'static str, frame: Vec<u8>, count: u32) -> f64 {
    let ns = PathBuf::from(format!("/run/netns/{}", lab.scanner_ns));
    let ifname = lab.scanner_if.clone();
    in_netns(ns, move || {
        use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions};
        let ifindex = scanwatch::kernel::object::Interface::resolve(&ifname)
            .expect("scanner veth")
            .ifindex;
        let mut programs = BenchPrograms::load().expect("benchmark programs");
        let prog = programs.xdp(program).expect("generator program");
        let len = frame.len() as u32;
        let ctx: Vec<u8> = [0u32, len, 0, ifindex, 0, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let started = Instant::now();
        let mut left = count;
        while left > 0 {
            let n = left.min(10_000_000);
            let opts = TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(&ctx),
                repeat: n,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..TestRunOptions::default()
            };
            prog.test_run(opts).expect("live frames run");
            left -= n;
        }
        started.elapsed().as_secs_f64()
    })
}

/// The flood streams' first frames: a SYN from 198.19.0.0 with IP ID
/// 0xffff (ID + source low word = 0xffff, which the generator keeps, so
/// the header checksum stays valid), and one from fd00:0:1:1::1; each to an
/// address of the target's subnet that it does not own (its stack, not
/// forwarding, drops them silently: no answers, no ICMP).
fn flood_frames(lab: &Lab) -> (Vec<u8>, Vec<u8>) {
    let target_mac = mac_of(&lab.target_ns, &lab.target_if);
    let scanner_mac = mac_of(&lab.scanner_ns, &lab.scanner_if);
    let macs = |mut f: Vec<u8>| {
        f[0..6].copy_from_slice(&target_mac);
        f[6..12].copy_from_slice(&scanner_mac);
        f
    };
    let mut v4 =
        macs(Packet::new("198.19.0.0", "198.18.0.200", Transport::tcp(80, tcp::SYN)).build());
    v4[18..20].copy_from_slice(&0xffffu16.to_be_bytes());
    v4[24..26].fill(0);
    let sum = scanwatch_lab::frames::checksum(&v4[14..34]);
    v4[24..26].copy_from_slice(&sum.to_be_bytes());
    let v6 = macs(Packet::new("fd00:0:1:1::1", "fd00::c8", Transport::tcp(80, tcp::SYN)).build());
    (v4, v6)
}

/// Checks the flood generator on plain test runs (no live frames): the
/// frame goes out (XDP_TX) with only its source and (IPv4) ID changed, the
/// IPv4 header checksum still valid, the source inside the first frame's
/// /16 (IPv4) or /32 (IPv6), and different from run to run.
fn check_flood_generator(v4: &[u8], v6: &[u8]) {
    use aya::programs::{TestRun as _, TestRunOptions};
    use scanwatch_integration::bench_programs::BENCH_FLOOD;
    let mut programs = BenchPrograms::load().expect("benchmark programs");
    let prog = programs.xdp(BENCH_FLOOD).expect("flood program");
    let run = |frame: &[u8]| {
        let mut out = vec![0u8; frame.len()];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .expect("flood generator test run");
        assert_eq!(result.return_value, 3, "the flood generator returns XDP_TX");
        out
    };
    let (mut v4_sources, mut v6_nets) = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..16 {
        let f = run(v4);
        assert_eq!(
            scanwatch_lab::frames::checksum(&f[14..34]),
            0,
            "IPv4 header checksum after the rewrite"
        );
        assert!(
            f[..18] == v4[..18] && f[20..28] == v4[20..28] && f[30..] == v4[30..],
            "the IPv4 rewrite touches only the ID and the source's low 16 bits"
        );
        *v4_sources.entry([f[28], f[29]]).or_insert(0) += 1;
        let f = run(v6);
        assert!(
            f[..26] == v6[..26] && f[30..] == v6[30..],
            "the IPv6 rewrite touches only source bytes 4..8"
        );
        *v6_nets.entry([f[26], f[27], f[28], f[29]]).or_insert(0) += 1;
    }
    assert!(
        v4_sources.len() >= 8 && v6_nets.len() >= 8,
        "the flood generator varies its sources: {} IPv4, {} IPv6 of 16",
        v4_sources.len(),
        v6_nets.len()
    );
}

/// Random-source SYN floods on a veth pair: every packet a new source (an
/// IPv4 source in a /16, or an IPv6 source in a fresh /64), from the
/// `scanwatch_bench_flood` live-frames generator, received with no XDP
/// program, the no-op program and scanwatch (as the agent loads it by
/// default), alternating within each round. Packets per second received
/// (medians) and, from the kernel's BPF run-time statistics (enabled for
/// the flood only), the attached program's own ns per packet: generator
/// and receiver share the softirq on this 2-core machine, so the
/// generator's wall time includes the receiver's cost.
fn flood(o: &Opts) -> Value {
    use scanwatch_integration::bench_programs::BENCH_FLOOD;
    // Several times the source map (262,144 entries at the default size):
    // the IPv6 stream spends most of a round evicting, as a long flood does.
    let count: u32 = if o.quick { 1_000_000 } else { 3_000_000 };
    let rounds = if o.quick { 1 } else { 5 };
    let lab = Lab::new().expect("lab");
    gro_on(&lab);
    let (v4, v6) = flood_frames(&lab);
    check_flood_generator(&v4, &v6);
    let streams = [
        ("random-source SYN flood, IPv4 sources in a /16", v4),
        ("random-source SYN flood, IPv6 sources in random /64s", v6),
    ];
    let target_ns = PathBuf::from(format!("/run/netns/{}", lab.target_ns));
    // "floor": the least a program that remembers every new source can do
    // (scanwatch_floor_admit).
    let cases = ["none", "noop", "floor", "scanwatch"];
    // Run-time statistics while this descriptor lives: the kernel turns
    // them off again when it is closed (also on a panic or a kill).
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF run-time statistics");
    let mut out = Vec::new();
    for (stream, frame) in &streams {
        let mut pps: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut ns: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut share: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut created = Vec::new();
        for _ in 0..rounds {
            for case in cases {
                let mut attached = attach_case(target_ns.clone(), lab.target_if.clone(), case);
                let stats_before = attached.as_mut().map(Attached::run_stats);
                let before = rx_packets(&lab);
                let secs = generate_with(&lab, BENCH_FLOOD, frame.clone(), count);
                std::thread::sleep(Duration::from_millis(200));
                let received = rx_packets(&lab) - before;
                pps.entry(case).or_default().push(received as f64 / secs);
                if let (Some(a), Some((t0, n0))) = (attached.as_mut(), stats_before) {
                    let (t1, n1) = a.run_stats();
                    ns.entry(case)
                        .or_default()
                        .push((t1 - t0) as f64 / (n1 - n0).max(1) as f64);
                    share
                        .entry(case)
                        .or_default()
                        .push((t1 - t0) as f64 / 1e9 / secs);
                    if let Some(c) = a.sources_created() {
                        created.push(c as f64);
                    }
                }
                drop(attached);
            }
        }
        let mut results = BTreeMap::new();
        for case in cases {
            let m = median(pps.remove(case).unwrap_or_default());
            println!("veth throughput, {stream}, {case:<9}: {m:.0} packets/s received");
            results.insert(case, m);
        }
        let ns: BTreeMap<&str, f64> = ns.into_iter().map(|(k, v)| (k, median(v))).collect();
        let share: BTreeMap<&str, f64> = share.into_iter().map(|(k, v)| (k, median(v))).collect();
        let ratio = results["scanwatch"] / results["noop"].max(1.0);
        let floor_ratio = results["floor"] / results["noop"].max(1.0);
        let created = median(created);
        println!(
            "veth throughput ratio scanwatch / no-op, {stream}: {ratio:.2} (target >= 0.8; floor program {floor_ratio:.2}); receiver program {:.0} ns/packet no-op, {:.0} floor, {:.0} scanwatch ({:.0}% of the wall time); scanwatch created {created:.0} sources a round",
            ns.get("noop").copied().unwrap_or(f64::NAN),
            ns.get("floor").copied().unwrap_or(f64::NAN),
            ns.get("scanwatch").copied().unwrap_or(f64::NAN),
            share.get("scanwatch").copied().unwrap_or(f64::NAN) * 100.0
        );
        out.push(json!({ "stream": stream, "packets_per_second": results, "scanwatch_over_noop": ratio, "floor_over_noop": floor_ratio, "floor_program": scanwatch_integration::bench_programs::FLOOR_ADMIT, "target": 0.8,
                         "program_ns_per_packet": ns, "program_share_of_wall_time": share, "scanwatch_sources_created_per_round": created }));
    }
    drop(stats);
    json!({ "streams": out, "frames_per_round": count, "rounds": rounds, "interleaved": true, "generator": BENCH_FLOOD })
}

/// The random-source flood table of BENCHMARKS.md.
fn flood_report(md: &mut String, f: &Value) {
    md.push_str(&format!(
        "\n## Random-source SYN flood on a veth pair\n\nThe live-frames generator `{}` gives every frame a fresh pseudo-random source before sending it (IPv4: a source in 198.19.0.0/16, the IP ID keeping the header checksum valid; IPv6: a fresh /64 inside fd00::/32), {} SYNs a round to an address of the target's subnet that it does not own (its stack drops them: no answers), median of {} rounds; no XDP, the no-op program, the floor program `{}` (one hash, one read of `jiffies`, and one slot of a 65,536-slot table read and written back per packet: the least a program that counts every new source in bounded memory does) and scanwatch alternate within each round. Packets per second received by the target veth, and the receiver program's own ns per packet from the kernel's BPF run-time statistics (enabled for the flood only; every program carries their small cost). Generator and receiver share the softirq on this 2-core machine, so a slower receiver slows the generator.\n\nThe last column: sources scanwatch admitted to its source table in a round (its own counter), the flood's sources that reached `admit_after` distinct destinations or the SYN rate (see docs/detection.md, \"Kernel state\").\n\n| stream | no XDP pps | no-op pps | floor pps | scanwatch pps | floor / no-op | scanwatch / no-op | target | no-op ns/packet | floor ns/packet | scanwatch ns/packet | sources admitted a round |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        f["generator"].as_str().unwrap_or("?"),
        f["frames_per_round"],
        f["rounds"],
        scanwatch_integration::bench_programs::FLOOR_ADMIT
    ));
    for st in f["streams"].as_array().into_iter().flatten() {
        let pps = &st["packets_per_second"];
        let ns = &st["program_ns_per_packet"];
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | >= 0.8 | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            st["stream"].as_str().unwrap_or("?"),
            pps["none"].as_f64().unwrap_or(f64::NAN),
            pps["noop"].as_f64().unwrap_or(f64::NAN),
            pps["floor"].as_f64().unwrap_or(f64::NAN),
            pps["scanwatch"].as_f64().unwrap_or(f64::NAN),
            st["floor_over_noop"].as_f64().unwrap_or(f64::NAN),
            st["scanwatch_over_noop"].as_f64().unwrap_or(f64::NAN),
            ns["noop"].as_f64().unwrap_or(f64::NAN),
            ns["floor"].as_f64().unwrap_or(f64::NAN),
            ns["scanwatch"].as_f64().unwrap_or(f64::NAN),
            st["scanwatch_sources_created_per_round"]
                .as_f64()
                .unwrap_or(f64::NAN)
        ));
    }
}

fn mac_of(ns: &str, ifn: &str) -> [u8; 6] {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "link", "show", "dev", ifn])
        .output()
        .expect("ip");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let s = v[0]["address"]
        .as_str()
        .unwrap_or("00:00:00:00:00:00")
        .to_string();
    let mut m = [0u8; 6];
    for (i, p) in s.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).unwrap_or(0);
    }
    m
}

/// GRO on the target veth: veth delivers XDP-transmitted frames only to a
/// peer with NAPI (an XDP program or GRO), so the no-XDP case needs it too.
fn gro_on(lab: &Lab) {
    let _ = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.target_ns))
        .args(["ethtool", "-K", &lab.target_if, "gro", "on"])
        .output();
}

fn in_target(lab: &Lab, args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.target_ns))
        .args(args)
        .output()
        .expect("nsenter");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The address of blocklist entry `i` (the generator's source is entry 0).
fn entry_addr(i: u32) -> Ipv4Addr {
    if i == 0 {
        Ipv4Addr::new(198, 18, 0, 1)
    } else {
        Ipv4Addr::from(0x0b00_0000 + i)
    }
}

/// scanwatch loaded as the agent loads it (blocklist sized for the run),
/// its blocklist filled, attached to the target veth only while measured.
struct ScanwatchBlocker {
    ebpf: Option<aya::Ebpf>,
    /// Held for its maps (the blocks live as long as the object).
    _mitigation: scanwatch::output::mitigation::Mitigation,
    maps: scanwatch::kernel::detect_maps::ScanwatchMaps,
    iface: scanwatch::kernel::object::Interface,
    target_ns: PathBuf,
    attached: Option<scanwatch::kernel::xdp_link::Attachment>,
}

impl ScanwatchBlocker {
    fn load(lab: &Lab, entries: u32) -> Self {
        let target_ns = PathBuf::from(format!("/run/netns/{}", lab.target_ns));
        let ifname = lab.target_if.clone();
        let (ebpf, mitigation, maps, iface) = in_netns(target_ns.clone(), move || {
            let cfg = MitigationConfig {
                capacity: 131_072,
                never_block_host_addresses: false,
                ..MitigationConfig::default()
            };
            let (mut ebpf, iface) = load_for(
                &ifname,
                &scanwatch::kernel::object::LoadOptions {
                    blocklist_capacity: 131_072,
                    ..scanwatch::kernel::object::LoadOptions::default()
                },
            );
            let mut m = scanwatch::output::mitigation::Mitigation::new(
                scanwatch::kernel::block_maps::BlockMaps::take(&mut ebpf).expect("block maps"),
                cfg,
                vec![],
            )
            .expect("mitigation");
            for i in 0..entries {
                m.block(
                    IpNet::from(IpAddr::V4(entry_addr(i))),
                    None,
                    block_origin::MANUAL,
                    "bench",
                )
                .expect("block");
            }
            let maps =
                scanwatch::kernel::detect_maps::ScanwatchMaps::take(&mut ebpf).expect("maps");
            (ebpf, m, maps, iface)
        });
        Self {
            ebpf: Some(ebpf),
            _mitigation: mitigation,
            maps,
            iface,
            target_ns,
            attached: None,
        }
    }

    fn dropped(&self) -> u64 {
        self.maps
            .total_counters()
            .map(|c| c.get(scanwatch_common::Counter::DroppedBlocklist))
            .unwrap_or(0)
    }

    fn attach(&mut self) {
        let mut ebpf = self.ebpf.take().expect("loaded");
        let iface = self.iface.clone();
        let (ebpf, attached) = in_netns(self.target_ns.clone(), move || {
            let a = scanwatch::kernel::xdp_link::attach(
                &mut ebpf,
                &iface,
                scanwatch::model::AttachMode::Native,
            )
            .expect("attach");
            (ebpf, a)
        });
        self.ebpf = Some(ebpf);
        self.attached = Some(attached);
    }

    fn detach(&mut self) {
        if let (Some(ebpf), Some(a)) = (self.ebpf.as_mut(), self.attached.take()) {
            scanwatch::kernel::xdp_link::release(ebpf, a);
        }
    }
}

/// The nftables set and the iptables rules of a drop-rate run, as files
/// loaded into the target namespace for each measurement.
fn netfilter_files(lab: &Lab, entries: u32) -> (PathBuf, PathBuf) {
    let mut rules = String::from(
        "table inet bench {\n set blocked { type ipv4_addr; flags interval; elements = { ",
    );
    rules.push_str(
        &(0..entries)
            .map(|i| entry_addr(i).to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    rules.push_str(" }; }\n chain pre { type filter hook prerouting priority raw; ip saddr @blocked counter drop; }\n}\n");
    let nft = std::env::temp_dir().join(format!("scanwatch-bench-{}.nft", lab.target_ns));
    std::fs::write(&nft, rules).expect("nft file");
    let mut restore = String::from("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    // The generator's source last: the worst case of a linear rule list.
    for i in (0..entries).rev() {
        restore.push_str(&format!("-A PREROUTING -s {}/32 -j DROP\n", entry_addr(i)));
    }
    restore.push_str("COMMIT\n");
    let ipt = std::env::temp_dir().join(format!("scanwatch-bench-{}.ipt", lab.target_ns));
    std::fs::write(&ipt, restore).expect("iptables file");
    (nft, ipt)
}

/// Packets the nftables set's or the iptables rules' counters dropped.
fn netfilter_dropped(lab: &Lab, kind: &str) -> u64 {
    if kind == "nftables" {
        let j: Value = serde_json::from_str(&in_target(
            lab,
            &["nft", "-j", "list", "table", "inet", "bench"],
        ))
        .unwrap_or_default();
        return j["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["rule"]["expr"].as_array())
            .flatten()
            .filter_map(|x| x["counter"]["packets"].as_u64())
            .sum();
    }
    in_target(
        lab,
        &[
            "iptables",
            "-t",
            "raw",
            "-L",
            "PREROUTING",
            "-v",
            "-x",
            "-n",
        ],
    )
    .lines()
    .filter(|l| l.contains("DROP"))
    .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
    .sum()
}

/// One measurement: `kind` switched on, `count` frames from the blocked
/// source, switched off again; packets per second dropped.
fn drop_once(
    lab: &Lab,
    kind: &str,
    sw: &mut ScanwatchBlocker,
    files: &(PathBuf, PathBuf),
    frame: &[u8],
    count: u32,
) -> f64 {
    let dropped = |sw: &ScanwatchBlocker| match kind {
        "scanwatch" => sw.dropped(),
        _ => netfilter_dropped(lab, kind),
    };
    match kind {
        "scanwatch" => sw.attach(),
        "nftables" => drop(in_target(lab, &["nft", "-f", &files.0.to_string_lossy()])),
        _ => drop(in_target(
            lab,
            &["iptables-restore", &files.1.to_string_lossy()],
        )),
    }
    let before = dropped(sw);
    let secs = generate(lab, frame.to_vec(), count);
    std::thread::sleep(Duration::from_millis(200));
    let after = dropped(sw);
    match kind {
        "scanwatch" => sw.detach(),
        // Nothing of either stays hooked for the next measurement.
        _ => drop(in_target(lab, &["nft", "flush", "ruleset"])),
    }
    after.saturating_sub(before) as f64 / secs
}

/// Packets per second dropped for a blocked source: scanwatch's blocklist,
/// an nftables set and iptables rules in the raw table, each holding
/// `entries` addresses, on the same generated traffic. Each is set up
/// once per size and switched on in turn within every round (the order
/// reversed every other round), so that a slow spell of this shared
/// machine hits all of them; medians over the rounds.
fn drop_rate(o: &Opts) -> Value {
    let (count, rounds, sizes): (u32, usize, &[u32]) = if o.quick {
        (1_000_000, 3, &[1_000, 10_000])
    } else {
        (10_000_000, 5, &[1_000, 100_000])
    };
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for &entries in sizes {
        let lab = Lab::new().expect("lab");
        gro_on(&lab);
        let mut frame =
            Packet::new("198.18.0.1", "198.18.0.2", Transport::tcp(80, tcp::SYN)).build();
        frame[0..6].copy_from_slice(&mac_of(&lab.target_ns, &lab.target_if));
        frame[6..12].copy_from_slice(&mac_of(&lab.scanner_ns, &lab.scanner_if));
        // One rule per address: 100k iptables rules take minutes to load.
        let mut kinds = vec!["scanwatch", "nftables"];
        if entries <= 1_000 {
            kinds.push("iptables");
        }
        let mut sw = ScanwatchBlocker::load(&lab, entries);
        let files = netfilter_files(&lab, entries);
        let mut pps: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut per_round = Vec::new();
        for round in 0..rounds {
            let mut order = kinds.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for kind in order {
                let rate = drop_once(&lab, kind, &mut sw, &files, &frame, count);
                pps.entry(kind).or_default().push(rate);
            }
            per_round.push(pps["scanwatch"][round] / pps["nftables"][round].max(1.0));
        }
        let _ = std::fs::remove_file(&files.0);
        let _ = std::fs::remove_file(&files.1);
        drop(sw);
        for kind in &kinds {
            let m = median(pps[kind].clone());
            println!(
                "drop rate, {kind:<9} with {entries:>6} entries: {m:.0} packets/s dropped (median of {rounds} interleaved rounds)"
            );
            rows.push(json!({ "kind": kind, "entries": entries, "dropped_per_second": m, "rounds": pps[kind] }));
        }
        // The rounds pair the blockers: the median of the paired ratios.
        let ratio = median(per_round.clone());
        let of_medians =
            median(pps["scanwatch"].clone()) / median(pps["nftables"].clone()).max(1.0);
        println!(
            "drop rate ratio scanwatch / nftables with {entries} entries: {ratio:.2} (median of the rounds' ratios {}; ratio of the medians {of_medians:.2})",
            per_round
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        ratios.push(json!({ "entries": entries, "scanwatch_over_nftables": ratio, "per_round": per_round, "ratio_of_medians": of_medians }));
    }
    json!({ "rows": rows, "ratios": ratios, "frames_per_round": count, "rounds": rounds, "interleaved": true })
}

/// A CrowdSec decision's way into the data path: the seconds from `cscli
/// decisions add --ip SOURCE` until a connection attempt from SOURCE
/// first goes unanswered (a 5 ms poll, each attempt waiting 0.2 s).
fn time_to_drop(lab: &Lab, cs: &scanwatch_lab::crowdsec::Crowdsec, source: &str) -> f64 {
    let script = format!(
        "import socket, sys, time\nt0 = float(sys.argv[1])\nwhile True:\n    t = time.time()\n    try:\n        socket.create_connection(('198.18.0.2', 8080), timeout=0.2, source_address=('{source}', 0)).close()\n    except OSError:\n        print(t - t0)\n        break\n    if t - t0 > 60:\n        print(-1)\n        break\n    time.sleep(0.005)\n"
    );
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let poller = lab
        .in_scanner()
        .args(["python3", "-c", &script, &format!("{t0:.6}")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    cs.decisions(lab, &["add", "--ip", source, "--duration", "10m"]);
    let out = poller.wait_with_output().expect("poller");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .expect("the source was never dropped")
}

/// What one remediation component did with the same decisions.
fn bouncer_rounds(
    lab: &Lab,
    cs: &scanwatch_lab::crowdsec::Crowdsec,
    name: &str,
    sources: &[String],
    frame: &[u8],
    count: u32,
    dropped: &dyn Fn() -> Option<u64>,
) -> Value {
    let mut latency = Vec::new();
    for s in sources {
        latency.push(time_to_drop(lab, cs, s));
    }
    // The flood's source is banned too (it is not a scanner address).
    cs.decisions(lab, &["add", "--ip", "198.18.0.49", "--duration", "10m"]);
    std::thread::sleep(Duration::from_secs(3));
    let before = dropped();
    let secs = generate(lab, frame.to_vec(), count);
    std::thread::sleep(Duration::from_millis(300));
    let counted = dropped().zip(before).map(|(a, b)| a.saturating_sub(b));
    cs.decisions(lab, &["delete", "--all"]);
    let m = median(latency.clone());
    println!(
        "crowdsec decision -> first drop, {name}: median {m:.2} s over {} decisions {latency:.2?}; {:.0} banned frames/s through the generator ({} dropped of {count})",
        latency.len(),
        f64::from(count) / secs,
        counted.map_or_else(|| "?".to_string(), |c| c.to_string()),
    );
    json!({ "bouncer": name, "decision_to_drop_s": latency, "median_s": m, "frames": count,
            "frames_per_second": f64::from(count) / secs, "dropped": counted })
}

/// `scanwatch_dropped_packets_total` of the agent at 198.18.0.2:9477.
fn agent_dropped(lab: &Lab) -> Option<u64> {
    let text = sh(&format!(
        "nsenter --net=/run/netns/{} curl -s --max-time 5 http://198.18.0.2:9477/metrics",
        lab.scanner_ns
    ));
    text.lines()
        .filter(|l| l.starts_with("scanwatch_dropped_packets_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .reduce(|a, b| a + b)
}

/// Packets the firewall bouncer's nftables rules counted (if they count).
fn nft_dropped(lab: &Lab) -> Option<u64> {
    let j: Value = serde_json::from_str(&in_target(lab, &["nft", "-j", "list", "ruleset"])).ok()?;
    j["nftables"]
        .as_array()?
        .iter()
        .filter_map(|e| e["rule"]["expr"].as_array())
        .flatten()
        .filter_map(|x| x["counter"]["packets"].as_u64())
        .reduce(|a, b| a + b)
}

/// The same CrowdSec decisions enforced by the agent (XDP) and by the
/// packaged `crowdsec-firewall-bouncer` (nftables), one after the other on
/// the same lab, both pulling every second: the time from `cscli decisions
/// add` to the first dropped packet, and banned frames per second through
/// the generator (the receiver's drop work runs in the sender's softirq).
fn crowdsec_bouncers(o: &Opts) -> Value {
    let (rounds, count) = if o.quick {
        (3, 300_000)
    } else {
        (10, 3_000_000)
    };
    let mut lab = Lab::new().expect("lab");
    gro_on(&lab);
    let dir = std::env::temp_dir().join(format!("scanwatch-bench-{}-crowdsec", lab.target_ns));
    let cs = scanwatch_lab::crowdsec::Crowdsec::start(&mut lab, &dir);
    let sources: Vec<String> = (0..2 * rounds)
        .map(|i| format!("198.18.0.{}", 50 + i))
        .collect();
    for s in &sources {
        lab.add_scanner_address(&format!("{s}/24"))
            .expect("address");
    }
    let mut web = lab.in_target();
    web.args([
        "python3",
        "-m",
        "http.server",
        "8080",
        "--bind",
        "198.18.0.2",
    ])
    .current_dir(&dir)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    lab.spawn(web).expect("web server");
    let mut frame = Packet::new("198.18.0.49", "198.18.0.2", Transport::tcp(80, tcp::SYN)).build();
    frame[0..6].copy_from_slice(&mac_of(&lab.target_ns, &lab.target_if));
    frame[6..12].copy_from_slice(&mac_of(&lab.scanner_ns, &lab.scanner_if));

    // scanwatch as the bouncer.
    let key = cs.bouncer(&lab, "scanwatch");
    let conf = dir.join("scanwatch.toml");
    std::fs::write(
        &conf,
        format!(
            "[crowdsec]\nlapi_url = \"http://{}\"\napi_key_file = \"{}\"\nupdate_frequency_seconds = 1\n",
            scanwatch_lab::crowdsec::LAPI,
            key.display()
        ),
    )
    .expect("config");
    let agent = BenchAgent::start(
        &mut lab,
        &[
            "--config",
            &conf.to_string_lossy(),
            "--metrics-addr",
            "198.18.0.2:9477",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    let sw = bouncer_rounds(
        &lab,
        &cs,
        "scanwatch",
        &sources[..rounds],
        &frame,
        count,
        &|| agent_dropped(&lab),
    );
    agent.stop(&mut lab);

    // The packaged firewall bouncer (nftables), in the same namespace.
    let key = cs.bouncer(&lab, "firewall");
    let api_key = std::fs::read_to_string(&key).expect("key");
    let fw_conf = dir.join("crowdsec-firewall-bouncer.yaml");
    std::fs::write(
        &fw_conf,
        format!(
            "mode: nftables\npid_dir: {d}/\nupdate_frequency: 1s\ndaemonize: false\nlog_mode: file\nlog_dir: {d}/\nlog_level: info\n\
             api_url: http://{}/\napi_key: {}\ninsecure_skip_verify: false\ndisable_ipv6: false\ndeny_action: DROP\ndeny_log: false\n\
             supported_decisions_types:\n  - ban\nblacklists_ipv4: crowdsec-blacklists\nblacklists_ipv6: crowdsec6-blacklists\n\
             nftables:\n  ipv4:\n    enabled: true\n    set-only: false\n    table: crowdsec\n    chain: crowdsec-chain\n  \
             ipv6:\n    enabled: true\n    set-only: false\n    table: crowdsec6\n    chain: crowdsec6-chain\nprometheus:\n  enabled: false\n",
            scanwatch_lab::crowdsec::LAPI,
            api_key.trim(),
            d = dir.display()
        ),
    )
    .expect("bouncer config");
    let mut fw = lab.in_target();
    fw.args(["crowdsec-firewall-bouncer", "-c"])
        .arg(&fw_conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let fw_pid = lab.spawn(fw).expect("crowdsec-firewall-bouncer");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sh(&format!(
        "nsenter --net=/run/netns/{} nft list tables",
        lab.target_ns
    ))
    .contains("crowdsec")
    {
        assert!(
            Instant::now() < deadline,
            "crowdsec-firewall-bouncer made no nftables table"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let nft = bouncer_rounds(
        &lab,
        &cs,
        "crowdsec-firewall-bouncer",
        &sources[rounds..],
        &frame,
        count,
        &|| nft_dropped(&lab),
    );
    lab.stop(fw_pid, Duration::from_secs(10));
    let _ = in_target(&lab, &["nft", "flush", "ruleset"]);
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
    json!({ "update_frequency_seconds": 1, "rounds": rounds, "scanwatch": sw, "firewall_bouncer": nft })
}

/// The CrowdSec comparison, as a table.
fn crowdsec_report(md: &mut String, c: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    md.push_str(&format!(
        "\n## CrowdSec decisions: scanwatch's bouncer and crowdsec-firewall-bouncer\n\nA CrowdSec Local API of the benchmark's own (Debian's crowdsec 1.4.6, `-no-cs`); the agent (`[crowdsec]`, XDP) and then the packaged `crowdsec-firewall-bouncer` 0.0.25 (nftables) on the same target namespace, both pulling every {} s. Time to drop: from the start of `cscli decisions add --ip SOURCE` (itself a fraction of it) to the first connection attempt from SOURCE left unanswered, {} decisions each. Banned frames/s: the generator's SYNs from a banned address ({} frames), all dropped by either (the receiver's work runs in the sender's softirq, so the rate is the blocker's cost).\n\n| bouncer | decision to first drop, median s | each | banned frames/s |\n|---|---|---|---|\n",
        c["update_frequency_seconds"], c["rounds"], c["scanwatch"]["frames"]
    ));
    for b in [&c["scanwatch"], &c["firewall_bouncer"]] {
        let each: Vec<String> = b["decision_to_drop_s"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .map(|x| format!("{x:.2}"))
            .collect();
        md.push_str(&format!(
            "| {} | {:.2} | {} | {:.0} |\n",
            b["bouncer"].as_str().unwrap_or("?"),
            f(&b["median_s"]),
            each.join(", "),
            f(&b["frames_per_second"])
        ));
    }
}

/// The CPU of one nmap scan (agent and programs) and the sweep, as a table.
fn write_nmap_cpu(md: &mut String, n: &Value, sweep: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    md.push_str(&format!(
        "\n## CPU for one nmap scan of every port, agent + programs\n\n`nmap -n -Pn -sS -p {} --min-rate 20000` from the scanner namespace against the real agent (`no_answer_timeout_seconds = {}`; binary `{}`){}; {:.1} s of nmap, measured over {:.1} s (until past the timeout and the sweep after it). Agent: utime+stime from /proc/PID/stat (clock ticks; in brackets, from the threads' schedstat at ns resolution, and the total with that); programs: the sum of `run_time_ns` of the agent's XDP and TC programs (BPF run-time statistics on for the run). The idle row: the same time right after, without a scan.\n\n| window | agent s | XDP program s (runs) | TC egress program s (runs) | total s | target |\n|---|---|---|---|---|---|\n",
        n["ports"].as_str().unwrap_or("?"),
        n["no_answer_timeout_seconds"],
        n["agent_binary"].as_str().unwrap_or("?"),
        if n["all_ports"].as_bool() == Some(true) { "" } else { " (--quick: a smaller port range)" },
        f(&n["nmap_seconds"]),
        f(&n["window_seconds"]),
    ));
    for (name, w, target) in [
        ("one scan", &n["scan"], "<= 0.05"),
        ("idle, same time", &n["idle_after"], ""),
    ] {
        md.push_str(&format!(
            "| {name} | {:.3} ({:.3}) | {:.4} ({}) | {:.4} ({}) | {:.3} ({:.3}) | {target} |\n",
            f(&w["agent_s"]),
            f(&w["agent_schedstat_s"]),
            f(&w["xdp_s"]),
            w["xdp_runs"],
            f(&w["tc_s"]),
            w["tc_runs"],
            f(&w["total_s"]),
            f(&w["total_schedstat_s"])
        ));
    }
    md.push_str(&format!(
        "\nThe agent's no-answer sweep over a full contact table ({} pending contacts, `reply_sweep`): {:.2} ms marking them all, {:.2} ms with nothing to mark.\n",
        sweep["contacts"], f(&sweep["marking_ms"]), f(&sweep["idle_walk_ms"])
    ));
}

fn write_report(o: &Opts, r: &Value) {
    std::fs::create_dir_all(&o.out).expect("out dir");
    std::fs::write(
        o.out.join("benchmarks.json"),
        serde_json::to_string_pretty(r).expect("json"),
    )
    .expect("write json");
    let mut md = String::new();
    let m = &r["machine"];
    md.push_str("# scanwatch benchmarks\n\nWritten by `cargo xtask bench`");
    md.push_str(if o.quick {
        " --quick (short runs, fewer rounds and entries: indicative only)"
    } else {
        ""
    });
    md.push_str(&format!(
        ". Machine: {} ({} cores, {}), kernel {}, {}.\n\nRatios compare scanwatch with a do-nothing XDP program (`XDP_PASS`) measured in the same run; medians of repeated rounds. These machines are shared and noisy: read the ratios, not the nanoseconds.\n\n",
        m["cpu"].as_str().unwrap_or("?"), m["cores"].as_str().unwrap_or("?"), m["memory"].as_str().unwrap_or("?"), m["kernel"].as_str().unwrap_or("?"), m["date"].as_str().unwrap_or("?")
    ));
    md.push_str(&format!("## Per-packet cost (BPF_PROG_TEST_RUN)\n\nThe floor columns: the least any program doing that job can do, measured in the same rounds (`scanwatch_floor_count`: one bounds check, four header bytes read in place, one per-CPU counter; `scanwatch_floor_admit`: the source hashed, one read of `jiffies` (the clock, inlined), and its slot of a 65,536-slot table (the size of scanwatch's admission table by default) read and written back (its count), the least a detector that counts every new source in bounded memory does; `scanwatch_floor_blocklist`: one exact-match hash lookup of the IPv4 source; `scanwatch_floor_tracked`: a SYN read at fixed offsets, the source hashed, its slot's key compared, one atomic add to its count and the clock stored, the least a detector that counts a tracked source's probes exactly in one slot all CPUs update does). A target below the floor ratio cannot be met by any design that does the job. The feature-off column: the same program loaded without the feature the case measures (the tool signatures, web sampling; for new sources and new first contacts, the reply-aware detector), in the same rounds.\n\nLoads of every program: {}, each measured as above: each load lands elsewhere (the kernel puts its JIT image at a random offset, its maps get new memory), and one load can run the same path half as fast again as another. Each figure is the median of the loads' (the ratio: of the loads' ratios); the loads' ratios are in the \"ratios by load\" column.\n\n| case | scanwatch ns | no-op ns | ratio | ratios by load | feature off ns | target | floor ns | floor ratio |\n|---|---|---|---|---|---|---|---|---|\n",
        r["per_packet"][0]["loads"].as_u64().unwrap_or(1)
    ));
    for c in r["per_packet"].as_array().into_iter().flatten() {
        let case = c["case"].as_str().unwrap_or("?");
        let target = if case.starts_with("established") {
            "<= 1.5"
        } else if case == "SYN from a new source"
            || case == "SYN from a new source, every slot taken"
        {
            "<= 3"
        } else if case == "SYN from a tracked source" {
            "<= 4"
        } else if case.contains("blocked source") || case.starts_with("benign ACK while") {
            "<= 1.5"
        } else {
            ""
        };
        let (floor_ns, floor_ratio) = match (c["floor_ns"].as_f64(), c["floor_ratio"].as_f64()) {
            (Some(ns), Some(r)) => (format!("{ns:.1}"), format!("{r:.2}")),
            _ => (String::new(), String::new()),
        };
        let off = c["without_web_ns"]
            .as_f64()
            .or(c["without_signatures_ns"].as_f64())
            .or(c["reply_off_ns"].as_f64())
            .map_or(String::new(), |ns| format!("{ns:.1}"));
        // Rows of new sources: how many recorded a first contact in the
        // contact table, and how many kept it in their admission slot.
        let case = match (
            c["contacts_recorded_share"].as_f64(),
            c["contacts_waiting_share"].as_f64(),
        ) {
            (Some(share), Some(waiting)) => format!(
                "{case} ({:.1}% wrote a first contact to the contact table, {:.1}% kept it in the admission slot)",
                100.0 * share,
                100.0 * waiting
            ),
            _ => case.to_string(),
        };
        let by_load = c["ratio_by_load"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        md.push_str(&format!(
            "| {case} | {:.1} | {:.1} | {:.2} | {by_load} | {off} | {target} | {floor_ns} | {floor_ratio} |\n",
            c["scanwatch_ns"].as_f64().unwrap_or(f64::NAN),
            c["noop_ns"].as_f64().unwrap_or(f64::NAN),
            c["ratio"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    let lc = &r["line_cost"];
    md.push_str("\nWhat one line never touched before costs, by the size of the table it is in (`scanwatch_floor_span`: one 64-byte line, chosen by a hash of a fresh source, read and written back; repeat 1, ratio to the no-op run the same way): a new source's cost is mostly such lines (its admission slot, its tag-index byte). The rows with one line a 4 KiB page use few lines over many pages: the TLB without the cache.\n\n| table | lines used | one line every | ratio |\n|---|---|---|---|\n");
    for s in lc["spans"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} KiB | {} | {} B | {:.2} |\n",
            s["table_bytes"].as_u64().unwrap_or(0) / 1024,
            s["lines_used"].as_u64().unwrap_or(0),
            s["line_spacing_bytes"].as_u64().unwrap_or(0),
            s["ratio"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    let mem = &r["memory"];
    md.push_str("\n## Kernel map memory at default sizes (fdinfo memlock)\n\n| map | entries | key B | value B | bytes |\n|---|---|---|---|---|\n");
    for (name, v) in mem["maps"].as_object().into_iter().flatten() {
        md.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            v["max_entries"], v["key_size"], v["value_size"], v["memlock_bytes"]
        ));
    }
    md.push_str(&format!(
        "\nTotal {} bytes; {} bytes per tracked source.\n",
        mem["total_bytes"], mem["bytes_per_source"]
    ));
    md.push_str(&format!(
        "\nThe XDP program as the agent loads it by default was accepted after {} instructions processed by the verifier, whose limit is 1,000,000 (`bpf_prog_info.verified_insns`); {} with the reply-aware detector and web sampling off.\n",
        mem["xdp_verified_instructions"], mem["xdp_verified_instructions_reply_web_off"]
    ));
    let a = &r["agent_scale"];
    md.push_str(&format!(
        "\n## Agent with a full source map\n\n{} tracked sources (filled through the pinned map): {:.2}% of one core over {} s (which includes a background count of the map every 60 s), RSS {:.1} MB, a `/metrics` scrape {:.1} ms (median of 5, curl), kernel crossing to alert line {} ms for a real nmap scan. Target: <= 5% of one core, alert <= 1 s.\n",
        a["sources"], a["cpu_percent_of_one_core"].as_f64().unwrap_or(f64::NAN), a["seconds"],
        a["rss_bytes"].as_f64().unwrap_or(0.0) / 1e6, a["scrape_ms_median"].as_f64().unwrap_or(f64::NAN), a["crossing_to_alert_ms"]
    ));
    write_nmap_cpu(&mut md, &r["nmap_cpu"], &r["reply_sweep"]);
    let t = &r["throughput"];
    md.push_str(&format!(
        "\n## Throughput on a veth pair\n\nA generator (BPF_PROG_TEST_RUN live frames with an XDP_TX program, {} frames a round, median of {} rounds; no XDP, the no-op program and scanwatch alternate within each round) sends TCP packets from one address in the scanner namespace to an address the target does not own; packets per second received by the target veth. On this 2-core machine generator and receiver share the cores.\n\n| stream | no XDP program | no-op XDP program | scanwatch | scanwatch / no-op | target |\n|---|---|---|---|---|---|\n",
        t["frames_per_round"], t["rounds"]
    ));
    for st in t["streams"].as_array().into_iter().flatten() {
        let pps = &st["packets_per_second"];
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} | >= 0.9 |\n",
            st["stream"].as_str().unwrap_or("?"),
            pps["none"].as_f64().unwrap_or(f64::NAN),
            pps["noop"].as_f64().unwrap_or(f64::NAN),
            pps["scanwatch"].as_f64().unwrap_or(f64::NAN),
            st["scanwatch_over_noop"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    flood_report(&mut md, &r["flood"]);
    md.push_str(&format!(
        "\n## Dropping a blocked source\n\nThe same generator sends SYNs from a blocked address; packets per second dropped ({} frames a measurement), by scanwatch's blocklist (XDP), an nftables set (prerouting, raw priority) and iptables rules in the raw table (`iptables-restore`, iptables 1.8.9 with its nf_tables backend, one rule per address, the blocked source last), each holding the same number of addresses. Each is set up once per size and switched on in turn within each of {} rounds (the order reversed every other round); medians of the rounds:\n\n| blocker | entries | dropped packets/s |\n|---|---|---|\n",
        r["drop_rate"]["frames_per_round"], r["drop_rate"]["rounds"]
    ));
    for row in r["drop_rate"]["rows"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {:.0} |\n",
            row["kind"].as_str().unwrap_or("?"),
            row["entries"],
            row["dropped_per_second"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    for ratio in r["drop_rate"]["ratios"].as_array().into_iter().flatten() {
        let rounds: Vec<String> = ratio["per_round"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .map(|x| format!("{x:.2}"))
            .collect();
        md.push_str(&format!(
            "\nscanwatch / nftables with {} entries: {:.2}, the median of the rounds' ratios {} (target >= 3; the ratio of the medians above: {:.2}).",
            ratio["entries"],
            ratio["scanwatch_over_nftables"]
                .as_f64()
                .unwrap_or(f64::NAN),
            rounds.join(", "),
            ratio["ratio_of_medians"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    md.push('\n');
    crowdsec_report(&mut md, &r["crowdsec"]);
    std::fs::write(o.out.join("BENCHMARKS.md"), md).expect("write md");
    println!(
        "wrote {} and {}",
        o.out.join("BENCHMARKS.md").display(),
        o.out.join("benchmarks.json").display()
    );
}

fn main() {
    let o = opts();
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc_geteuid() },
        0,
        "the benchmarks load XDP programs: run as root"
    );
    let started = Instant::now();
    if std::env::args().any(|a| a == "--flood-only") {
        // A quick look at the random-source flood while working on the
        // data path: printed, no report written.
        flood(&o);
        return;
    }
    if o.nmap_cpu_only {
        nmap_cpu(&o);
        return;
    }
    if std::env::args().any(|a| a == "--crowdsec-only") {
        crowdsec_bouncers(&o);
        return;
    }
    if let Some(slots) = o.profile_new_sources {
        profile_new_sources(slots);
        return;
    }
    if std::env::args().any(|a| a == "--profile-tracked") {
        profile_row(false, false);
        return;
    }
    if std::env::args().any(|a| a == "--profile-benign") {
        profile_row(true, false);
        return;
    }
    if std::env::args().any(|a| a == "--profile-benign-loaded") {
        profile_row(true, true);
        return;
    }
    // The verifier's count, for a change that may have brought it near its
    // limit: alone (`--verifier-only`, a second) or after the TEST_RUN rows.
    let print_verified = || {
        let verified = XdpHarness::load_for_bench(scanwatch_common::maps::DEFAULT_SOURCE_MAP_SIZE)
            .and_then(|mut h| h.verified_instructions());
        println!("XDP program verified in {verified:?} instructions (limit 1000000)");
    };
    if std::env::args().any(|a| a == "--verifier-only") {
        print_verified();
        return;
    }
    let per_packet = per_packet_loads(&o);
    let line_cost = line_cost(&o);
    if o.per_packet_only {
        // A quick look while working on the XDP program: no report written.
        print_verified();
        return;
    }
    let memory = memory();
    let reply_sweep = reply_sweep();
    let nmap = nmap_cpu(&o);
    let agent = agent_scale(&o);
    let throughput = throughput(&o);
    let flood = flood(&o);
    let drops = drop_rate(&o);
    let crowdsec = crowdsec_bouncers(&o);
    let r = json!({ "machine": machine(), "quick": o.quick, "per_packet": per_packet, "line_cost": line_cost, "memory": memory, "agent_scale": agent, "throughput": throughput, "drop_rate": drops, "reply_sweep": reply_sweep, "nmap_cpu": nmap, "flood": flood, "crowdsec": crowdsec });
    // The benchmark itself must keep working: every figure is a number.
    for c in r["per_packet"].as_array().into_iter().flatten() {
        assert!(
            c["ratio"].as_f64().is_some_and(f64::is_finite),
            "no ratio for {c}"
        );
    }
    assert!(r["memory"]["total_bytes"].as_u64().is_some_and(|b| b > 0));
    assert!(
        r["nmap_cpu"]["scan"]["total_s"]
            .as_f64()
            .is_some_and(f64::is_finite),
        "no CPU figure for the nmap scan"
    );
    assert!(
        r["agent_scale"]["crossing_to_alert_ms"].as_i64().is_some(),
        "no alert latency"
    );
    for b in ["scanwatch", "firewall_bouncer"] {
        assert!(
            r["crowdsec"][b]["median_s"]
                .as_f64()
                .is_some_and(f64::is_finite),
            "no CrowdSec figure for {b}"
        );
    }
    write_report(&o, &r);
    println!("benchmarks took {:.0} s", started.elapsed().as_secs_f64());
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
    #[link_name = "setns"]
    fn libc_setns(fd: i32, nstype: i32) -> i32;
}
