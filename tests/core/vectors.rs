//! Access to the SIP test vectors vendored in `tests/vectors/` (RFC 4475 torture tests; RFC 3261,
//! 3665 and 5118 flows; origin in `tests/vectors/README.md`).

use std::path::PathBuf;

/// Root of the vectors.
pub fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors"))
}

/// The bytes of one vector file.
pub fn read(dir: &str, file: &str) -> Vec<u8> {
    let path = root().join(dir).join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of a MANIFEST.tsv (header row skipped), split at tabs.
pub fn manifest(dir: &str) -> Vec<Vec<String>> {
    let text = String::from_utf8(read(dir, "MANIFEST.tsv")).expect("invariant: manifest is UTF-8");
    text.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// Every message file of both folders, with its name.
pub fn all_messages() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (dir, ext) in [("rfc4475", "dat"), ("flows", "sip")] {
        let mut names: Vec<_> = std::fs::read_dir(root().join(dir))
            .expect("invariant: vector folder exists")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(ext))
            .collect();
        names.sort();
        for n in names {
            let bytes = read(dir, &n);
            out.push((n, bytes));
        }
    }
    out
}
