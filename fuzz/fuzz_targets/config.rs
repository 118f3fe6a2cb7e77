//! The TOML configuration: any text is either a validated config or a
//! `ConfigError` (never a panic), and a validated config is usable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanwatch::{config::Config, model::ScanType};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml") {
        Ok(config) => {
            // What the agent derives from a valid config must not panic either.
            let _ = config.detection.kernel_config();
            let _ = config.detection.window();
            let _ = config.detection.suppression();
            for offenses in [0, 1, 7, u32::MAX] {
                let _ = config.mitigation.ttl_for(&ScanType::ALL, offenses);
            }
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.contains("fuzz.toml"), "errors name the file: {shown}");
        }
    }
});
