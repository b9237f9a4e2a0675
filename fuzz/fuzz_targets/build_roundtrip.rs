//! Any bytes that parse: every builder runs on them as the proxy would chain them (response,
//! forward, CANCEL, the device's 487 and its ACK, an in-dialog BYE; forwarded responses and their
//! ACKs), and what it writes parses back to the same fields
//! (`sipfork::testing::build_checks`). The last input octet picks the parameter set (source
//! address, To tag, Record-Route, Route dropping, Reason, body), so the seed vectors run as they
//! are.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipfork::sip::parse;
use sipfork::testing::build_checks::exercise_builders;

fuzz_target!(|data: &[u8]| {
    let variant = data.last().copied().unwrap_or(0);
    if let Ok(msg) = parse(data) {
        exercise_builders(&msg, variant);
    }
});
