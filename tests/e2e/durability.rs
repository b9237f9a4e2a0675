//! Issue 12, durability: `data_dir` on a small tmpfs that fills up mid-run. No 200 OK goes out
//! for a binding the journal does not hold, `/health` turns 503 with the reason, the shard
//! recovers (rewrites its journal from its live bindings) once space returns, and after
//! `kill -9` every acknowledged binding is back. Needs root for the tmpfs mount; elsewhere it is
//! skipped with a printed reason.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Appliance, Io, Scratch, Setup};
use crate::phone::Phone;
use crate::registrar::devices;

/// A tmpfs mounted on a directory, unmounted when dropped (also when the test panics).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system refuses (ENOSPC); returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let block = [0u8; 4096];
    let mut written = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "filling: {e}");
                break;
            }
        }
    }
    written
}

/// Extension → its device contacts, as the admin API reports them.
fn contacts_of(app: &Appliance, exts: impl Iterator<Item = u32>) -> BTreeMap<u32, Vec<String>> {
    exts.map(|ext| {
        let mut c: Vec<String> = devices(app, &ext.to_string())
            .devices
            .into_iter()
            .map(|d| d.contact)
            .collect();
        c.sort();
        (ext, c)
    })
    .collect()
}

fn wait_for_health(app: &Appliance, want: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let got = app.get("/health").expect("admin answers");
        if got.0 == want {
            return got.1;
        }
        assert!(
            Instant::now() < deadline,
            "/health stayed {got:?}, wanted {want}:\n{}",
            app.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the appliance answered.
#[derive(Default)]
struct Ledger {
    /// Extension → the contacts its last 200 OK listed.
    acked: BTreeMap<u32, Vec<String>>,
    /// Extensions that got 503.
    refused: Vec<u32>,
}

impl Ledger {
    /// Registers `ext` at `127.0.0.1:port`; true for 200, false for 503 (anything else fails).
    fn register(&mut self, phone: &mut Phone, ext: u32, port: u32) -> bool {
        let contact = format!("sip:{ext}@127.0.0.1:{port}");
        let req = phone.register(
            &ext.to_string(),
            &[format!("<{contact}>")],
            "Expires: 3600\r\n",
        );
        let r = phone.transact(&req);
        match r.status {
            200 => {
                let mut listed = r.contacts();
                assert!(listed.contains(&contact), "{}", r.text);
                listed.sort();
                self.acked.insert(ext, listed);
                true
            }
            503 => {
                assert_eq!(r.header("Retry-After"), Some("10"), "{}", r.text);
                assert!(r.contacts().is_empty());
                self.refused.push(ext);
                false
            }
            other => panic!("REGISTER {ext}: {other}\n{}", r.text),
        }
    }
}

#[test]
fn a_full_disk_never_acknowledges_a_binding_it_did_not_store() {
    let dir = Scratch::new("full-disk");
    // The harness keeps journals in DIR/data: that is the tmpfs.
    let tmpfs = match Tmpfs::mount(&dir.0.join("data"), "512k") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("skipping the full-disk test: cannot mount a tmpfs ({why})");
            return;
        }
    };
    let setup = Setup {
        shards: 2,
        ..Setup::new(Io::Mmsg)
    };
    let mut app = Appliance::start(&dir.0, setup).expect("mmsg always starts");
    let mut phone = Phone::new(app.sip);
    let mut l = Ledger::default();

    for ext in 1000..1040 {
        assert!(l.register(&mut phone, ext, 40000), "disk not full yet");
    }
    let filler = dir.0.join("data").join("filler");
    assert!(fill(&filler) > 0);
    // Each REGISTER is a record of some 200 bytes: the pages the journals hold fill within a
    // few hundred.
    let mut ext = 1040;
    while l.refused.is_empty() {
        assert!(
            ext < 1900,
            "the journal never ran out of space:\n{}",
            app.log()
        );
        l.register(&mut phone, ext, 40000);
        ext += 1;
    }
    // Refused: no binding in memory either, and later REGISTERs are refused at once, also
    // refreshes that would change an acknowledged binding.
    let first_refused = l.refused[0];
    assert!(devices(&app, &first_refused.to_string()).devices.is_empty());
    let health = wait_for_health(&app, 503, Duration::from_secs(2));
    assert!(health.contains("journal write failed"), "{health}");
    assert!(health.contains("No space left"), "{health}");
    // A refresh on the refusing shard (its journal is unhealthy). The other shard may still take
    // REGISTERs: each journal allocates space ahead of its own end (up to a 256 KiB bridge of
    // this small tmpfs), which it may fill.
    let shard = |ext: u32| sipfork::core::shard::owner_of(ext.to_string().as_bytes(), 2);
    let refresh = *l
        .acked
        .keys()
        .find(|&&ext| shard(ext) == shard(first_refused))
        .expect("an acknowledged extension on the refusing shard");
    let before_refresh = contacts_of(&app, refresh..refresh + 1);
    assert!(!l.register(&mut phone, refresh, 40001));
    assert_eq!(contacts_of(&app, refresh..refresh + 1), before_refresh);
    let page = app.get_ok("/metrics");
    assert!(crate::harness::metric_sum(&page, "sipfork_registrations_unjournaled_total") >= 2);
    assert!(crate::harness::metric_sum(&page, "sipfork_journal_unhealthy") >= 1);

    // Space returns: the shard rewrites its journal and takes REGISTERs again.
    std::fs::remove_file(&filler).unwrap();
    wait_for_health(&app, 200, Duration::from_secs(20));
    assert!(
        l.register(&mut phone, first_refused, 40002),
        "{}",
        app.log()
    );
    assert!(l.register(&mut phone, 1000, 40003));
    for ext in 1900..1910 {
        assert!(l.register(&mut phone, ext, 40000));
    }

    // Every acknowledged binding, as last acknowledged, survives kill -9.
    let (acked, refused) = (l.acked, l.refused);
    let exts: Vec<u32> = acked
        .keys()
        .copied()
        .chain(refused.iter().copied())
        .collect();
    let live = contacts_of(&app, exts.iter().copied());
    app.signal_and_wait("KILL");
    app.restart(|_| {});
    let back = contacts_of(&app, exts.iter().copied());
    assert_eq!(back, live, "after kill -9:\n{}", app.log());
    for (ext, contacts) in &acked {
        assert_eq!(&back[ext], contacts, "acknowledged binding of {ext}");
    }
    for ext in refused.iter().filter(|e| !acked.contains_key(e)) {
        assert!(back[ext].is_empty(), "refused {ext} came back");
    }
    app.signal_and_wait("TERM");
    drop(tmpfs);
}
