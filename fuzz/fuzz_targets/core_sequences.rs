//! Whole conversations of scripted phones (registrations, calls, answers, rejections, CANCELs,
//! BYEs, targeted drops, junk, time passing) through one or two shard cores on a lossy network
//! (issue 12): nothing panics, state stays bounded, and after silence every call, dialog and
//! timer is gone (`sipfork::testing::seq_fuzz::run`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sipfork::testing::seq_fuzz::run(data);
});
