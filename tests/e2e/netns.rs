//! Network namespaces for the end-to-end tests that need one: a test that feeds hostile input to
//! the real binary (nothing it provokes may leave the box), or one whose tool needs an interface
//! besides loopback (baresip). The test creates a fresh namespace, runs itself again inside it
//! (`ip netns exec`, marked by [`NETNS_ENV`]), and deletes it afterwards.

use std::process::{Command, Stdio};

/// Set inside the namespace to its name.
pub const NETNS_ENV: &str = "SIPFORK_E2E_NETNS";

/// Are we the copy of the test that runs inside its namespace?
pub fn inside() -> bool {
    std::env::var_os(NETNS_ENV).is_some()
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next())
            == Some("0")
    })
}

/// A network namespace, deleted when dropped.
struct Netns(String);

impl Netns {
    fn exec(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .expect("run ip netns exec");
        assert!(
            out.status.success(),
            "{args:?} in {}: {}",
            self.0,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Creates namespace `sipfork-e2e-LABEL-PID`, brings loopback up, runs `setup` commands in it,
/// then runs test `test_name` (its full path as the test binary's filter sees it) of this very
/// binary inside and asserts that it ran and passed. Returns false, after printing why, when the
/// namespace cannot be created without root (the caller skips).
pub fn run_inside(label: &str, test_name: &str, setup: &[&str]) -> bool {
    let name = format!("sipfork-e2e-{label}-{}", std::process::id());
    let added = Command::new("ip").args(["netns", "add", &name]).output();
    match added {
        Ok(o) if o.status.success() => {}
        Ok(o) if !is_root() => {
            eprintln!(
                "skipping {test_name}: cannot create a network namespace without root ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return false;
        }
        Err(why) if !is_root() => {
            eprintln!("skipping {test_name}: `ip` is not available ({why})");
            return false;
        }
        other => panic!("ip netns add {name}: {other:?}"),
    }
    let ns = Netns(name);
    ns.exec(&["ip", "link", "set", "lo", "up"]);
    for cmd in setup {
        ns.exec(&cmd.split(' ').collect::<Vec<_>>());
    }
    let me = std::env::current_exe().expect("test binary path");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(me)
        .args([test_name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(NETNS_ENV, &ns.0)
        .stdin(Stdio::null())
        .output()
        .expect("run the test inside the namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(out.status.success(), "inside the namespace: {}", out.status);
    // The filter must have found this test, or nothing ran.
    assert!(
        stdout.contains("1 passed"),
        "the test did not run inside:\n{stdout}"
    );
    true
}
