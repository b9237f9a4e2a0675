//! A sequence of `(delta_t, peer, bytes)` datagrams into a `Core` whose extension 1000 has three
//! registered devices (ARCHITECTURE.md §9): nothing panics, every datagram the core sends parses,
//! the core holds no more calls than it was sent datagrams, and after silence longer than any
//! transaction or dialog can last no call is left (`sipfork::testing::core_fuzz::run`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sipfork::testing::core_fuzz::run(data);
});
