//! Feed files: every line is a network or a counted bad line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = scanwatch::output::feeds::parse(text);
    let lines = text.lines().count();
    assert!(parsed.nets.len() <= lines);
    assert!(parsed.bad.iter().all(|b| (1..=lines).contains(&b.line)));
    assert!(
        parsed.nets.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicates"
    );
    assert!(
        parsed.nets.iter().all(|n| n.trunc() == *n),
        "host bits cleared"
    );
});
