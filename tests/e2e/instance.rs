//! One instance per port and per data directory (a second `sipfork` on either is refused with a
//! message naming what is taken, and the first keeps running untouched).
//!
//! Without these checks a second instance on the same port silently joined the first one's
//! `SO_REUSEPORT` group and took half of its traffic, and a second instance on the same
//! `data_dir` with another shard count re-partitioned (and unlinked) the live journals of the
//! first.

use crate::harness::{run_expecting_refusal, set_server_values, Appliance, Io, Scratch, Setup};

/// Writes a copy of `app`'s configuration into `dir` with the `[server]` values changed.
fn variant(app: &Appliance, dir: &Scratch, values: &[(&str, String)]) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&app.config).expect("read config");
    let path = dir.0.join("second.toml");
    std::fs::write(&path, set_server_values(&text, values)).expect("write config");
    path
}

fn free_addr() -> String {
    format!("\"127.0.0.1:{}\"", crate::harness::free_port())
}

#[test]
fn a_second_instance_on_the_same_port_is_refused() {
    let dir = Scratch::new("same-port");
    let app = Appliance::start(&dir.0, Setup::new(Io::Mmsg)).expect("mmsg always starts");
    let second = Scratch::new("same-port-second");
    let config = variant(
        &app,
        &second,
        &[
            (
                "data_dir",
                format!("\"{}\"", second.0.join("data").display()),
            ),
            ("admin", free_addr()),
        ],
    );
    let (code, stderr) = run_expecting_refusal(&config);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on UDP {}", app.sip)),
        "the message names the address:\n{stderr}"
    );
    assert!(stderr.contains("Address already in use"), "{stderr}");
    assert!(stderr.contains("another port"), "{stderr}");
    // The first one still serves, alone.
    assert_eq!(app.get("/health").map(|(s, _)| s).ok(), Some(200));
}

#[test]
fn a_second_instance_on_the_same_data_dir_is_refused_and_the_journals_stay() {
    let dir = Scratch::new("same-dir");
    let app = Appliance::start(&dir.0, Setup::new(Io::Mmsg)).expect("mmsg always starts");
    let journals = || {
        let mut names: Vec<String> = std::fs::read_dir(&app.data_dir)
            .expect("data dir")
            .filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_owned()))
            .filter(|n| n.ends_with(".journal"))
            .collect();
        names.sort();
        names
    };
    let before = journals();
    assert_eq!(
        before,
        ["shard-0-of-2.journal", "shard-1-of-2.journal"],
        "the first instance's journals"
    );
    let second = Scratch::new("same-dir-second");
    // Another port and another shard count: without the lock this re-partitioned the first
    // instance's live journals into one.
    let config = variant(
        &app,
        &second,
        &[
            ("listen", free_addr()),
            ("admin", free_addr()),
            ("shards", "1".into()),
        ],
    );
    let (code, stderr) = run_expecting_refusal(&config);
    assert_ne!(code, 0, "{stderr}");
    let dir_text = app.data_dir.display().to_string();
    assert!(
        stderr.contains(&format!("data_dir {dir_text} is in use by another process")),
        "the message names the directory:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("(PID {})", app.pid())),
        "the message names the holder:\n{stderr}"
    );
    assert_eq!(
        journals(),
        before,
        "the first instance's journals are untouched"
    );
    assert_eq!(app.get("/health").map(|(s, _)| s).ok(), Some(200));
}
