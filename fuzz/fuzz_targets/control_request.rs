//! Control-socket request lines: decoded and checked, or refused with a
//! message; an accepted request round-trips and has a usable target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanwatch::app::control::{Request, decode_request};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    match decode_request(line) {
        Ok(req) => {
            if let Request::Block { target, .. } | Request::Unblock { target } = &req {
                assert!(scanwatch::model::parse_target(target).is_ok());
            }
            let again = serde_json::to_string(&req).expect("encode");
            assert_eq!(decode_request(&again), Ok(req));
        }
        Err(e) => assert!(e.starts_with("bad request"), "{e}"),
    }
    // The CLI's duration parser (block --ttl) on the same bytes.
    let _ = scanwatch::model::parse_duration(line);
});
