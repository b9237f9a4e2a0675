//! The appliance as an operator installs it (`tuning/`): the systemd unit passes
//! `systemd-analyze verify`, `tuning/install.sh` stages the binary, the user's directories, the
//! config (which `check-config` accepts) and the unit, and the Debian package (`tuning/deb.sh`,
//! cargo deb) lists the unit and the config. Each check that needs a tool this machine lacks is
//! skipped with a printed reason.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sipfork");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A scratch directory under the target's temporary directory, emptied first.
fn scratch(label: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("packaging-{}-{label}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn has(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    if !has("systemd-analyze") {
        eprintln!("skipping: systemd-analyze is not installed (no systemd here)");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the binary under test.
    let dir = scratch("verify");
    let unit = std::fs::read_to_string(format!("{ROOT}/tuning/sipfork.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/bin/sipfork "), "{unit}");
    let unit = unit.replace(
        "\nExecStart=/usr/bin/sipfork ",
        &format!("\nExecStart={BIN} "),
    );
    let path = dir.join("sipfork.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Clean: nothing said about our unit (lines about other units of this host are not ours).
    assert!(!stderr.contains("sipfork.service"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn install_sh_stages_binary_config_directories_unit_and_sysctls() {
    let dir = scratch("install");
    let out = Command::new(format!("{ROOT}/tuning/install.sh"))
        .env("DESTDIR", &dir)
        .env("BIN", BIN)
        .output()
        .expect("run tuning/install.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "install.sh: {stderr}");
    for file in [
        "usr/local/bin/sipfork",
        "etc/sipfork/sipfork.toml",
        "etc/systemd/system/sipfork.service",
        "etc/sysctl.d/99-sipfork.conf",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing; {stderr}");
    }
    assert!(dir.join("var/lib/sipfork").is_dir());
    let unit = std::fs::read_to_string(dir.join("etc/systemd/system/sipfork.service")).unwrap();
    assert!(
        unit.contains("\nExecStart=/usr/local/bin/sipfork --config /etc/sipfork/sipfork.toml\n"),
        "{unit}"
    );
    assert!(unit.contains("\nUser=sipfork\n") && unit.contains("\nStateDirectory=sipfork\n"));
    assert!(unit.contains("\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n"));
    // The installed config is the example with its journal in the service's state directory,
    // and it validates.
    let config = dir.join("etc/sipfork/sipfork.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\ndata_dir = \"/var/lib/sipfork\""), "{text}");
    let check = Command::new(BIN)
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("run sipfork check-config");
    assert!(
        check.status.success(),
        "check-config: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // A second run keeps the operator's config.
    std::fs::write(&config, "# edited\n").unwrap();
    let again = Command::new(format!("{ROOT}/tuning/install.sh"))
        .env("DESTDIR", &dir)
        .env("BIN", BIN)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# edited\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_debian_package_lists_the_unit_and_the_config() {
    if !has("cargo-deb") || !has("dpkg-deb") {
        eprintln!(
            "skipping: cargo-deb or dpkg-deb is not installed (cargo install cargo-deb; \
             tuning/deb.sh builds and checks the package)"
        );
        return;
    }
    if !Path::new(ROOT).join("target/release/sipfork").is_file() {
        eprintln!("skipping: no target/release/sipfork to package (a debug test run)");
        return;
    }
    let dir = scratch("deb");
    let out = Command::new(format!("{ROOT}/tuning/deb.sh"))
        .arg("--no-build")
        .env("OUT", &dir)
        .output()
        .expect("run tuning/deb.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "deb.sh: {stderr}");
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let listing = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for want in [
        "./etc/sipfork/sipfork.toml",
        "systemd/system/sipfork.service",
        "./etc/sysctl.d/99-sipfork.conf",
        "./usr/bin/sipfork",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(want)),
            "{want} not in {deb}:\n{listing}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
