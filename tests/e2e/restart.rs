//! DECISIONS.md "Registrar and persistence": a binding whose 200 OK left the appliance survives
//! `kill -9`, comes back with its remaining expiry, and a changed shard count re-partitions the
//! journals without losing one.

use std::collections::BTreeMap;

use crate::harness::{each_backend, Appliance, Setup};
use crate::phone::Phone;
use crate::registrar::devices;

/// Extension → its (contact, wall-clock expiry) pairs, as the admin API reports them.
type Snapshot = BTreeMap<String, Vec<(String, u64)>>;

const EXTENSIONS: std::ops::Range<u32> = 1100..1160;

fn snapshot(app: &Appliance) -> Snapshot {
    EXTENSIONS
        .map(|ext| {
            let ext = ext.to_string();
            let mut devices: Vec<(String, u64)> = devices(app, &ext)
                .devices
                .into_iter()
                .map(|d| (d.contact, d.expires_at))
                .collect();
            devices.sort();
            (ext, devices)
        })
        .collect()
}

fn assert_same(app: &Appliance, before: &Snapshot, when: &str) {
    let after = snapshot(app);
    assert_eq!(&after, before, "{when}:\n{}", app.log());
    // Each shard reported what it restored; together, every binding.
    let restored: u64 = app
        .log()
        .lines()
        .filter(|l| l.contains("bindings restored"))
        .filter_map(|l| {
            l.split("restored=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(restored >= 120, "{when}: restored {restored}");
}

#[test]
fn kill_9_keeps_every_binding_with_its_remaining_expiry_across_shard_counts() {
    each_backend("kill9", Setup::new, |app| {
        let mut phone = Phone::new(app.sip);
        for ext in EXTENSIONS {
            let contacts = [
                format!("<sip:{ext}@127.0.0.1:44001>;expires=600"),
                format!("<sip:{ext}@127.0.0.1:44002>;expires=3600"),
            ];
            let req = phone.register(&ext.to_string(), &contacts, "");
            let r = phone.transact(&req);
            assert_eq!(r.status, 200, "{}", r.text);
            assert_eq!(r.contacts().len(), 2);
        }
        let before = snapshot(app);
        assert!(before.values().all(|d| d.len() == 2));
        let expires_in_before = devices(app, "1100").devices[0].expires_in;

        // kill -9 right after the last 200 OK arrived: no clean shutdown, no fsync.
        app.signal_and_wait("KILL");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        app.restart(|_| {});
        assert_same(app, &before, "same shard count");
        let expires_in_after = devices(app, "1100").devices[0].expires_in;
        assert!(
            expires_in_after < expires_in_before,
            "remaining expiry keeps running: {expires_in_before} -> {expires_in_after}"
        );

        for shards in [3, 1] {
            app.signal_and_wait("KILL");
            app.restart(|s| s.shards = shards);
            assert_same(app, &before, &format!("{shards} shards"));
            assert_eq!(app.metric_sum("sipfork_bindings"), 120);
        }
        let mut names: Vec<String> = std::fs::read_dir(&app.data_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        // The journal of the one shard left, and the instance lock (kept: an flock on it, never
        // a stale file to remove).
        assert_eq!(
            names,
            ["lock", "shard-0-of-1.journal"],
            "old partitions removed"
        );
        // A clean stop flushes too.
        let status = app.signal_and_wait("TERM");
        assert!(status.success());
        app.restart(|_| {});
        assert_same(app, &before, "after SIGTERM");
    });
}
