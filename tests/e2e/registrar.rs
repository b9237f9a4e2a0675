//! Registration through the real binary: several contacts, query, `*` removal, the device limit
//! under both policies, instance replacement, 423, digest, expiry, and the `devices` command.
//! The RFC detail is tested on virtual time in `tests/core/registrar.rs`; these check that the
//! appliance wires it to the wire, the journal and the admin API.

use std::time::Duration;

use sipfork::core::registrar::digest::{compute_response, Algorithm, Ha1, ResponseInput};

use crate::harness::{each_backend, run_cli, Appliance, Io, Setup};
use crate::phone::{Phone, Response};

pub fn contact(uri: &str, params: &str) -> String {
    format!("<{uri}>{params}")
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn several_contacts_query_star_removal_and_the_devices_command() {
    each_backend("register", Setup::new, |app| {
        let mut a = Phone::new(app.sip);
        let b = Phone::new(app.sip);
        let uris: Vec<String> = (0..3)
            .map(|i| format!("sip:1000@127.0.0.1:{}", 40_000 + i))
            .collect();
        let contacts: Vec<String> = uris.iter().map(|u| contact(u, "")).collect();
        let req = a.register("1000", &contacts, "Expires: 3600\r\n");
        let r = a.transact(&req);
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(sorted(r.contacts()), sorted(uris.clone()));
        assert!(r
            .contact_expires(&uris[0])
            .is_some_and(|e| (3590..=3600).contains(&e)));

        // A second device registers from its own address.
        let mut b = b;
        let b_uri = b.contact_uri("1000");
        let req = b.register("1000", &[contact(&b_uri, ";q=0.5")], "Expires: 600\r\n");
        assert_eq!(b.transact(&req).contacts().len(), 4);

        // A query (no Contact) lists every binding and changes nothing.
        let req = a.register("1000", &[], "");
        let r = a.transact(&req);
        assert_eq!(r.status, 200);
        assert_eq!(r.contacts().len(), 4);

        // The admin API and the CLI show the four devices with their source addresses.
        let report = devices(app, "1000");
        assert_eq!(report.devices.len(), 4);
        let dev_b = report.devices.iter().find(|d| d.contact == b_uri).unwrap();
        assert_eq!(dev_b.source, b.addr.to_string());
        assert_eq!(dev_b.q, 0.5);
        assert_eq!(dev_b.transport, "UDP");
        assert_eq!(dev_b.user_agent, "sipfork-e2e/1.0");
        assert!((590..=600).contains(&dev_b.expires_in));
        let admin = app.admin.to_string();
        let (code, table, err) = run_cli(&["devices", "1000", "--admin", &admin]);
        assert_eq!(code, 0, "{err}");
        assert!(
            table.starts_with("extension 1000: 4 devices\nCONTACT"),
            "{table}"
        );
        assert!(
            table.contains(&b_uri) && table.contains("sipfork-e2e/1.0"),
            "{table}"
        );
        let (code, json, _) = run_cli(&["devices", "1000", "--admin", &admin, "--json"]);
        assert_eq!(code, 0);
        assert!(json.contains("\"extension\": \"1000\""), "{json}");
        assert_eq!(app.metric_sum("sipfork_bindings"), 4);

        // `Contact: *` with `Expires: 0` removes them all (RFC 3261 §10.2.2).
        let req = a.register("1000", &["*".into()], "Expires: 0\r\n");
        let r = a.transact(&req);
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.contacts().is_empty());
        assert!(devices(app, "1000").devices.is_empty());
        assert_eq!(app.metric_sum("sipfork_bindings"), 0);
        let page = app.get_ok("/metrics");
        assert!(crate::harness::metric_sum(&page, "sipfork_journal_deletes_total") >= 4);
    });
}

/// `GET /extensions/{ext}/devices`, decoded.
pub fn devices(app: &Appliance, ext: &str) -> sipfork::app::devices::DeviceReport {
    let body = app.get_ok(&format!("/extensions/{ext}/devices"));
    serde_json::from_str(&body).expect("device report JSON")
}

fn limited(io: Io, policy: &str) -> Setup {
    Setup {
        shards: 1,
        registrar: format!("max_contacts = 2\non_limit = \"{policy}\"\n"),
        ..Setup::new(io)
    }
}

fn register_one(phone: &mut Phone, ext: &str, uri: &str, params: &str) -> Response {
    let req = phone.register(ext, &[contact(uri, params)], "Expires: 3600\r\n");
    phone.transact(&req)
}

#[test]
fn the_device_limit_rejects_or_evicts_the_oldest() {
    for (policy, label) in [("reject", "limit-reject"), ("evict-oldest", "limit-evict")] {
        each_backend(
            label,
            |io| limited(io, policy),
            |app| {
                let mut phone = Phone::new(app.sip);
                for port in [41_001, 41_002] {
                    let r = register_one(
                        &mut phone,
                        "1001",
                        &format!("sip:1001@127.0.0.1:{port}"),
                        "",
                    );
                    assert_eq!(r.status, 200);
                    std::thread::sleep(Duration::from_millis(5)); // distinct registration times
                }
                let r = register_one(&mut phone, "1001", "sip:1001@127.0.0.1:41003", "");
                let now: Vec<String> = sorted(
                    devices(app, "1001")
                        .devices
                        .into_iter()
                        .map(|d| d.contact)
                        .collect(),
                );
                match policy {
                    "reject" => {
                        assert_eq!(r.status, 403, "{}", r.text);
                        assert!(r
                            .text
                            .starts_with("SIP/2.0 403 Too many registered devices"));
                        assert_eq!(
                            now,
                            ["sip:1001@127.0.0.1:41001", "sip:1001@127.0.0.1:41002"]
                        );
                    }
                    _ => {
                        assert_eq!(r.status, 200, "{}", r.text);
                        assert_eq!(
                            now,
                            ["sip:1001@127.0.0.1:41002", "sip:1001@127.0.0.1:41003"]
                        );
                        assert_eq!(app.metric_sum("sipfork_bindings_evicted_total"), 1);
                    }
                }
            },
        );
    }
}

#[test]
fn same_instance_replaces_its_binding() {
    each_backend("instance", Setup::new, |app| {
        let mut phone = Phone::new(app.sip);
        let instance =
            ";+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";reg-id=1";
        let r = register_one(&mut phone, "1002", "sip:1002@127.0.0.1:42001", instance);
        assert_eq!(r.status, 200, "{}", r.text);
        // The same device (same instance) comes back from a new address.
        let r = register_one(&mut phone, "1002", "sip:1002@127.0.0.1:42002", instance);
        assert_eq!(r.status, 200);
        assert_eq!(r.contacts(), ["sip:1002@127.0.0.1:42002"]);
        let report = devices(app, "1002");
        assert_eq!(report.devices.len(), 1);
        assert_eq!(
            report.devices[0].instance.as_deref(),
            Some("<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>")
        );
        // reg-id is ignored (no RFC 5626 Outbound); no class configured: ip_phone.
        assert_eq!(report.devices[0].class, "ip_phone");
    });
}

#[test]
fn too_brief_expiry_gets_423_with_min_expires() {
    each_backend("423", Setup::new, |app| {
        let mut phone = Phone::new(app.sip);
        let uri = phone.contact_uri("1003");
        let req = phone.register("1003", &[contact(&uri, "")], "Expires: 10\r\n");
        let r = phone.transact(&req);
        assert_eq!(r.status, 423, "{}", r.text);
        assert_eq!(r.header("Min-Expires"), Some("60"));
        assert!(devices(app, "1003").devices.is_empty());
    });
}

/// The `Authorization` row for a challenge's nonce.
pub(crate) fn authorization(
    ext: &str,
    server: &str,
    algorithm: Algorithm,
    nonce: &str,
    nc: u32,
) -> String {
    authorization_with(&format!("pw-{ext}"), ext, server, algorithm, nonce, nc)
}

/// The `Authorization` row of a REGISTER for `ext` with `password` (realm `e2e`).
pub(crate) fn authorization_with(
    password: &str,
    ext: &str,
    server: &str,
    algorithm: Algorithm,
    nonce: &str,
    nc: u32,
) -> String {
    let ha1 = Ha1::from_password(algorithm, ext.as_bytes(), b"e2e", password.as_bytes());
    let nc = format!("{nc:08x}");
    let uri = format!("sip:{server}");
    let response = compute_response(
        algorithm,
        &ha1,
        &ResponseInput {
            method: b"REGISTER",
            uri: uri.as_bytes(),
            nonce: nonce.as_bytes(),
            nc: nc.as_bytes(),
            cnonce: b"e2e-cnonce",
            qop: b"auth",
        },
    );
    format!(
        "Authorization: Digest username=\"{ext}\", realm=\"e2e\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{}\", algorithm={}, cnonce=\"e2e-cnonce\", qop=auth, nc={nc}\r\n",
        response.as_str(),
        algorithm.name()
    )
}

/// The nonce of the first challenge, and whether it says `stale=true`.
pub(crate) fn challenge(r: &Response) -> (String, bool) {
    assert_eq!(r.status, 401, "{}", r.text);
    let v = r.header("WWW-Authenticate").expect("a challenge");
    let nonce = v
        .split("nonce=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("nonce");
    (
        nonce.to_owned(),
        v.to_ascii_lowercase().contains("stale=true"),
    )
}

#[test]
fn digest_challenge_success_and_a_replayed_nonce_count() {
    each_backend(
        "digest",
        |io| Setup {
            auth: "digest",
            ..Setup::new(io)
        },
        |app| {
            let server = app.sip.to_string();
            let mut phone = Phone::new(app.sip);
            let uri = phone.contact_uri("1004");
            let contacts = [contact(&uri, "")];
            let req = phone.register("1004", &contacts, "Expires: 3600\r\n");
            let r = phone.transact(&req);
            let (nonce, stale) = challenge(&r);
            assert!(!stale);
            assert!(r
                .header("WWW-Authenticate")
                .unwrap()
                .contains("algorithm=SHA-256"));
            assert!(
                devices(app, "1004").devices.is_empty(),
                "nothing before auth"
            );
            // SHA-256, then MD5 with the same nonce and the next nonce-count, as phones do.
            for (nc, algorithm) in [(1, Algorithm::Sha256), (2, Algorithm::Md5)] {
                let auth = authorization("1004", &server, algorithm, &nonce, nc);
                let req = phone.register("1004", &contacts, &format!("{auth}Expires: 3600\r\n"));
                let r = phone.transact(&req);
                assert_eq!(r.status, 200, "{algorithm:?}: {}", r.text);
                assert_eq!(r.contacts(), std::slice::from_ref(&uri));
            }
            // The same credentials on a new request are a replay: a stale challenge.
            let auth = authorization("1004", &server, Algorithm::Md5, &nonce, 2);
            let evil = [contact("sip:1004@127.0.0.1:9", "")];
            let req = phone.register("1004", &evil, &format!("{auth}Expires: 3600\r\n"));
            let (_, stale) = challenge(&phone.transact(&req));
            assert!(stale, "replayed nonce-count must be refused");
            let now: Vec<String> = devices(app, "1004")
                .devices
                .into_iter()
                .map(|d| d.contact)
                .collect();
            assert_eq!(now, std::slice::from_ref(&uri));
            // Wrong password: 403.
            let mut bad = authorization("1004", &server, Algorithm::Sha256, &nonce, 3);
            let at = bad.find("response=\"").unwrap() + 10;
            bad.replace_range(at..at + 4, "0000");
            let req = phone.register("1004", &contacts, &format!("{bad}Expires: 3600\r\n"));
            assert_eq!(phone.transact(&req).status, 403);
        },
    );
}

#[test]
fn bindings_expire_on_time_and_stay_gone_after_a_restart() {
    let setup = |io| Setup {
        registrar: "min_expires = 1\n".into(),
        ..Setup::new(io)
    };
    each_backend("expiry", setup, |app| {
        let mut phone = Phone::new(app.sip);
        let short = phone.contact_uri("1005");
        let long = "sip:1005@127.0.0.1:43001".to_owned();
        let req = phone.register(
            "1005",
            &[
                contact(&short, ";expires=1"),
                contact(&long, ";expires=3600"),
            ],
            "",
        );
        let r = phone.transact(&req);
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.contact_expires(&short), Some(1));
        assert_eq!(devices(app, "1005").devices.len(), 2);
        std::thread::sleep(Duration::from_millis(1300));
        let contacts = |app: &Appliance| -> Vec<String> {
            devices(app, "1005")
                .devices
                .into_iter()
                .map(|d| d.contact)
                .collect()
        };
        assert_eq!(contacts(app), std::slice::from_ref(&long));
        assert_eq!(app.metric_sum("sipfork_bindings_expired_total"), 1);
        assert_eq!(app.metric_sum("sipfork_bindings"), 1);
        let status = app.signal_and_wait("TERM");
        assert!(status.success());
        app.restart(|_| {});
        assert_eq!(contacts(app), std::slice::from_ref(&long));
    });
}
