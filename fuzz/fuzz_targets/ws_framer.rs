//! The WebSocket codec of `ws:`/`wss:` connections (`sipfork::core::transport::ws`): byte 0
//! picks the limits, byte 1 whether a valid upgrade goes first, then `(cut: u8)` bytes up to the
//! first zero say where the stream is split into reads, and the rest is the stream (handshake,
//! frames: masked or not, fragmented, control, garbage). The invariants are checked by
//! `sipfork::testing::ws_fuzz::run` (its seeds also run as a test: `tests/core/ws_fuzz.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sipfork::testing::ws_fuzz::run(data);
});
