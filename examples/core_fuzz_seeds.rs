//! Writes the seed corpus of the `core_datagrams` fuzz target (`sipfork::testing::core_fuzz`):
//! a whole 3-way forked call recorded from the bench's driver, and every shared vector as one
//! datagram from the caller.
//!
//! usage: `cargo run --example core_fuzz_seeds -- OUT_DIR [VECTOR_DIR...]`
//! (from `fuzz/`: `cargo run --manifest-path ../Cargo.toml --example core_fuzz_seeds --
//! corpus/core_datagrams ../tests/vectors/rfc4475 ../tests/vectors/flows`)

use std::path::PathBuf;

use sipfork::testing::core_fuzz::{encode, recorded_call};
use sipfork::testing::forked_call::CALLER;
use sipfork::time::Duration;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(out) = args.next().map(PathBuf::from) else {
        eprintln!("usage: core_fuzz_seeds OUT_DIR [VECTOR_DIR...]");
        std::process::exit(2);
    };
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("forked-call"), recorded_call())?;
    let mut written = 1;
    for dir in args {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "sip" || e == "dat"))
            .collect();
        entries.sort();
        for path in entries {
            let bytes = std::fs::read(&path)?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let seed = encode(&[(Duration::ZERO, CALLER, bytes)]);
            std::fs::write(out.join(format!("vector-{name}")), seed)?;
            written += 1;
        }
    }
    println!("{written} seeds in {}", out.display());
    Ok(())
}
