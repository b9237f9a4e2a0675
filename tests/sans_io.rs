//! The core is sans-IO (ARCHITECTURE.md §1, DECISIONS.md): `src/sip` and `src/core` never read a
//! clock, spawn a thread, open a socket or file, take a lock, draw OS randomness or use `unsafe`.
//! This test scans those trees (comments excluded) and names every line that breaks the rule.

use std::path::{Path, PathBuf};

/// Patterns that have no business in a sans-IO tree, with the reason.
const FORBIDDEN: &[(&str, &str)] = &[
    ("Instant::now", "reads a clock"),
    ("SystemTime", "reads a clock"),
    (
        "std::time::Instant",
        "the core's time is crate::time::Instant, passed in",
    ),
    ("UdpSocket", "opens a socket"),
    ("TcpListener", "opens a socket"),
    ("TcpStream", "opens a socket"),
    ("thread::spawn", "spawns a thread"),
    ("std::thread", "uses threads"),
    ("Mutex", "takes a lock"),
    ("RwLock", "takes a lock"),
    ("Condvar", "takes a lock"),
    ("std::fs", "touches files"),
    ("File::open", "touches files"),
    ("getrandom", "draws OS randomness"),
    ("RandomState", "draws OS randomness"),
    ("thread_rng", "draws OS randomness"),
    ("unsafe ", "uses unsafe code"),
    ("libc::", "calls the OS"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source tree is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line without its `//` comment (string literals are not special-cased: none of
/// the patterns appears in one in these trees).
fn code_of(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

#[test]
fn sip_and_core_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for tree in ["sip", "core"] {
        rust_files(&root.join(tree), &mut files);
    }
    assert!(files.len() > 20, "the scan found the source trees");
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("source is UTF-8");
        for (n, line) in text.lines().enumerate() {
            let code = code_of(line);
            for (pattern, why) in FORBIDDEN {
                if code.contains(pattern) {
                    offences.push(format!(
                        "{}:{}: {why}: {}",
                        file.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "sans-IO rule broken:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_scan_catches_what_it_looks_for() {
    assert!(code_of("let t = std::time::Instant::now(); // x").contains("Instant::now"));
    assert!(!code_of("// Instant::now is forbidden").contains("Instant::now"));
}
