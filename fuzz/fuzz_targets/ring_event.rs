//! Ring-buffer records (`ScanEvent` bytes from the XDP program): decoded
//! only when long enough, and any bits make a usable event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanwatch::{config::Detection, kernel::decode_event};
use scanwatch_common::ScanEvent;

fuzz_target!(|data: &[u8]| {
    let decoded = decode_event(data);
    assert_eq!(decoded.is_some(), data.len() >= size_of::<ScanEvent>());
    if let Some(event) = decoded {
        // What the engine does with an event before it reads the maps.
        let ip = event.source.ip();
        let _ = Detection::default().ignored(ip);
        let _ = ip.to_string();
    }
});
