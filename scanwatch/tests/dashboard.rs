//! The shipped Grafana dashboard (deploy/grafana/scanwatch.json) is well
//! formed: unique panel ids, a position and a scanwatch query for each
//! panel, and the panels an operator looks for. (Grafana is not packaged
//! here; the lab test `scanwatch-integration/tests/prometheus.rs` runs every
//! query against a real Prometheus.)

use std::path::{Path, PathBuf};

use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

#[test]
fn dashboard_is_well_formed() {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/scanwatch.json")).expect("dashboard"),
    )
    .expect("JSON");
    assert_eq!(dash["uid"], "scanwatch");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut ids = std::collections::BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "unique panel ids"
        );
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        for k in ["x", "y", "w", "h"] {
            assert!(
                p["gridPos"][k].as_u64().is_some(),
                "gridPos.{k} of {}",
                p["title"]
            );
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty());
        for t in targets {
            assert!(
                t["expr"]
                    .as_str()
                    .is_some_and(|e| e.contains("scanwatch") || e.contains("up{"))
            );
        }
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for needed in [
        "Probe rate by kind",
        "Detections by type",
        "Top scanners",
        "Dropped packets (mitigation)",
        "Source map pressure",
    ] {
        assert!(titles.contains(&needed), "{needed} panel");
    }
}
