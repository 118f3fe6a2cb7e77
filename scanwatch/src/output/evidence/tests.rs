//! The evidence store in a temporary directory: held records written with
//! the alert, later ones appended up to the budget, other windows and
//! ignored sources kept out, the size cap removing the oldest files.

use std::time::{Duration, Instant, SystemTime};

use scanwatch_common::evidence::EVIDENCE_BYTES;

use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "scanwatch-evidence-unit-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn settings(dir: &Path, budget: u32, max_bytes: u64) -> StoreSettings {
    StoreSettings {
        directory: dir.join("evidence"),
        max_bytes,
        budget,
        window_ns: 300_000_000_000,
        names: BTreeMap::from([(2, "veth0".to_string())]),
    }
}

fn record(last: u8, time_ns: u64) -> EvidenceRecord {
    let frame = super::decode::tests::syn_v4();
    let mut bytes = [0u8; EVIDENCE_BYTES];
    bytes[..frame.len()].copy_from_slice(&frame);
    bytes[29] = last;
    EvidenceRecord {
        source: SourceKey::v4([198, 18, 0, last]),
        time_ns,
        ifindex: 2,
        frame_len: frame.len() as u32,
        captured: frame.len() as u32,
        _pad: 0,
        bytes,
    }
}

fn clock() -> KernelClock {
    KernelClock::at(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        crate::model::kernel_now_ns(),
    )
}

fn packets(file: &str) -> Vec<pcapng::ReadPacket> {
    pcapng::read(&std::fs::read(file).unwrap()).unwrap()
}

#[test]
fn held_records_go_with_the_alert_and_later_ones_are_appended() {
    let dir = temp_dir("flow");
    let mut store = EvidenceStore::open(settings(&dir, 4, 1 << 20)).unwrap();
    let now = Instant::now();
    let key = SourceKey::v4([198, 18, 0, 5]);
    // Two records before the alert, one of another source, one of a source
    // in an ignore network.
    store.on_record(&record(5, 1_000), false, now);
    store.on_record(&record(5, 2_000), false, now);
    store.on_record(&record(6, 1_500), false, now);
    store.on_record(&record(7, 1_500), true, now);
    assert_eq!((store.stats.held, store.stats.ignored), (3, 1));
    let r = store
        .on_alert(&key, "198.18.0.5", 500, "alert 1".into(), &clock())
        .unwrap();
    assert_eq!(r.packets, 2);
    assert!(r.file.ends_with("_198.18.0.5.pcapng"), "{}", r.file);
    assert_eq!(store.stats.held, 1, "the other source's record stays");
    // Later records of the window are appended, up to the budget.
    for t in [3_000, 4_000, 5_000] {
        store.on_record(&record(5, t), false, now);
    }
    assert_eq!(store.stats.packets_written, 4);
    assert_eq!(store.stats.overflow, 1, "the fifth is over the budget of 4");
    let read = packets(&r.file);
    assert_eq!(read.len(), 4);
    assert_eq!(read[0].interface, "veth0");
    assert_eq!(read[0].comment, "alert 1");
    assert_eq!(read[0].original_len, 54);
    assert_eq!(
        super::decode::decode(&read[0].data).to_string(),
        "198.18.0.5:40000 -> 198.18.0.2:80 TCP flags S ttl 255 win 1024"
    );
    assert!(read.windows(2).all(|w| w[0].time_ns < w[1].time_ns));
    // An escalation in the same window names the same file, with its count now.
    let again = store
        .on_alert(&key, "198.18.0.5", 500, "alert 2".into(), &clock())
        .unwrap();
    assert_eq!((again.file.as_str(), again.packets), (r.file.as_str(), 4));
    // A record of a later window waits for an alert of that window; without
    // one it expires.
    store.on_record(&record(5, 400_000_000_000), false, now);
    assert_eq!(store.stats.held, 2);
    store.tick(now + held::HOLD_FOR, 0);
    assert_eq!((store.stats.held, store.stats.expired), (0, 2));
    assert_eq!(
        std::fs::metadata(&r.file).unwrap().len(),
        store.stats.directory_bytes
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_new_window_is_a_new_file() {
    let dir = temp_dir("windows");
    let mut store = EvidenceStore::open(settings(&dir, 4, 1 << 20)).unwrap();
    let now = Instant::now();
    let key = SourceKey::v4([198, 18, 0, 5]);
    let first = store
        .on_alert(&key, "198.18.0.5", 0, "a".into(), &clock())
        .unwrap();
    assert_eq!(first.packets, 0, "records may come after the alert");
    store.on_record(&record(5, 10), false, now);
    store.on_record(&record(5, 300_000_000_010), false, now);
    let second = store
        .on_alert(&key, "198.18.0.5", 300_000_000_000, "b".into(), &clock())
        .unwrap();
    assert_ne!(first.file, second.file);
    assert!(
        second.file.ends_with("_198.18.0.5-2.pcapng"),
        "{}",
        second.file
    );
    assert_eq!((packets(&first.file).len(), second.packets), (1, 1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cap_removes_the_oldest_files() {
    let dir = temp_dir("cap");
    let s = settings(&dir, 64, 1 << 20);
    // Files left from an earlier run count toward the cap.
    std::fs::create_dir_all(&s.directory).unwrap();
    std::fs::write(
        s.directory.join("old_198.18.0.1.pcapng"),
        vec![0u8; 600_000],
    )
    .unwrap();
    std::fs::write(s.directory.join("notes.txt"), vec![0u8; 900_000]).unwrap();
    let mut store = EvidenceStore::open(s.clone()).unwrap();
    assert_eq!(
        store.stats.directory_bytes, 600_000,
        "only pcapng files count"
    );
    let now = Instant::now();
    let mut files = Vec::new();
    for i in 0..120u8 {
        let key = SourceKey::v4([198, 18, 0, i]);
        let r = store
            .on_alert(&key, &format!("198.18.0.{i}"), 0, "x".repeat(100), &clock())
            .unwrap();
        for t in 0..64 {
            store.on_record(&record(i, t), false, now);
        }
        files.push(r.file);
        assert!(store.stats.directory_bytes <= 1 << 20);
    }
    assert!(!s.directory.join("old_198.18.0.1.pcapng").exists());
    assert!(s.directory.join("notes.txt").exists());
    assert!(store.stats.files_removed >= 2, "{:?}", store.stats);
    // What is left: the newest files, each complete, summing to the count.
    let left = list_files(&s.directory).unwrap();
    let total: u64 = left.iter().map(|(_, n)| n).sum();
    assert_eq!(total, store.stats.directory_bytes);
    assert!(std::path::Path::new(files.last().unwrap()).exists());
    assert!(!std::path::Path::new(&files[0]).exists());
    for (path, _) in &left {
        assert_eq!(packets(&path.display().to_string()).len(), 64);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn removal_plan() {
    assert_eq!(removals([10, 10, 10], 30, 5, 40), 0);
    assert_eq!(removals([10, 10, 10], 30, 15, 40), 1);
    assert_eq!(removals([10, 10, 10], 30, 35, 40), 3);
    assert_eq!(removals([5, 20, 5], 30, 11, 40), 1);
    assert_eq!(removals([5, 20, 5], 30, 16, 40), 2);
    assert_eq!(removals(Vec::new(), 0, 100, 40), 0);
}

#[test]
fn names() {
    let wall = chrono::DateTime::from_timestamp(1_806_420_600, 0).unwrap();
    assert_eq!(
        file_name(wall, "198.18.0.5", 0),
        "2027-03-30T15-30-00Z_198.18.0.5.pcapng"
    );
    assert_eq!(
        file_name(wall, "fd00:1::/64", 2),
        "2027-03-30T15-30-00Z_fd00:1::_64-3.pcapng"
    );
    assert!(is_file_of(
        "2027-03-30T15-30-00Z_198.18.0.5.pcapng",
        "198.18.0.5"
    ));
    assert!(is_file_of(
        "2027-03-30T15-30-00Z_198.18.0.5-2.pcapng",
        "198.18.0.5"
    ));
    assert!(!is_file_of(
        "2027-03-30T15-30-00Z_198.18.0.50.pcapng",
        "198.18.0.5"
    ));
    assert!(!is_file_of(
        "2027-03-30T15-30-00Z_198.18.0.5.pcap",
        "198.18.0.5"
    ));
    assert!(is_file_of(
        "2027-03-30T15-30-00Z_fd00:1::_64.pcapng",
        "fd00:1::/64"
    ));
}

#[test]
fn an_unwritable_directory_is_an_error() {
    let dir = temp_dir("bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("evidence"), b"a file").unwrap();
    let e = EvidenceStore::open(settings(&dir, 4, 1 << 20))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("evidence directory") && e.contains("enabled = false"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
