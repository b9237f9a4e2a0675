//! Any bytes: `parse` and `salvage` never panic, and every accessor of a parsed message runs and
//! agrees with the others (`sipfork::testing::sip_checks::exercise`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipfork::sip::{parse, salvage, ParseError};
use sipfork::testing::sip_checks::exercise;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(msg) => exercise(&msg),
        Err(e) => {
            // `parse` checks framing only; header-value errors come from the accessors.
            use ParseError::*;
            assert!(
                matches!(
                    e,
                    Empty
                        | MessageTooLarge
                        | BadStartLine
                        | BadRequestUri
                        | VersionNotSupported
                        | BadStatusCode
                        | BadLineEnd
                        | BadHeaderName
                        | MissingColon
                        | TooManyHeaders
                        | UnterminatedHeaders
                        | BadContentLength
                        | ContentLengthTooLarge
                        | ConflictingContentLength
                ),
                "{e:?}"
            );
            assert!(!e.reason().is_empty());
            let _ = (e.disposition(true), e.disposition(false));
        }
    }
    if let Some(msg) = salvage(data) {
        for h in msg.headers() {
            assert!(msg.offset_of(h.row).is_some());
        }
        let _ = (
            msg.top_via(),
            msg.call_id(),
            msg.cseq(),
            msg.from(),
            msg.to(),
        );
    }
});
