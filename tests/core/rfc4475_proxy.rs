//! RFC 4475 torture vectors sent to a running core (proxy + registrar role): what sipfork
//! answers to each, as `tests/core/RFC4475-DISPOSITIONS.md` records, including the policy
//! answers the parser alone cannot give (416, 420, 483, 501) and the silent drops. Every answer
//! goes back to the sender, never to an address named inside the vector (the vectors name hosts
//! in 192.0.2.0/24, a real subnet on the machines this runs on).

use sipfork::testing::sim::World;
use sipfork::time::ms;

use crate::vectors::root;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:5060"
domain = "example.com"
shards = 1
[auth]
mode = "none"
[[extensions]]
numbers = "1000-1099"
"#;

/// What sipfork answers to each vector, by name: a status, or `None` for a silent drop.
/// Reasons are in RFC4475-DISPOSITIONS.md; here, for the requests the parser passes, the
/// answer is the proxy's: the users in the vectors are not provisioned extensions, and only
/// `example.com` is a domain of ours, so routable requests get 404.
const EXPECTED: &[(&str, Option<u16>)] = &[
    ("wsinv", Some(403)), // To has a tag: in-dialog, but not routed through a dialog of ours
    ("intmeth", Some(404)), // odd user at our domain: no such extension
    ("esc01", Some(404)), // example.net is not ours
    ("escnull", Some(404)), // REGISTER of an unprovisioned AOR
    ("esc02", Some(404)), // unknown method, routed on the R-URI: registrar.example.com not ours
    ("lwsdisp", Some(404)),
    ("longreq", Some(404)),
    ("dblreq", Some(404)), // one REGISTER (trailing octets ignored), unprovisioned AOR
    ("semiuri", Some(404)),
    ("transports", Some(404)),
    ("mpart01", Some(404)), // example.org is not ours
    ("unreason", None),     // a response nobody asked for: stray, dropped
    ("noreason", None),
    ("badinv01", Some(400)),
    ("clerr", Some(400)),
    ("ncl", Some(400)),
    ("scalar02", Some(400)),
    ("scalarlg", None),
    ("quotbal", Some(400)),
    ("ltgtruri", Some(400)),
    ("lwsruri", Some(400)),
    ("lwsstart", Some(400)),
    ("trws", Some(400)),
    ("escruri", Some(400)),
    ("baddate", Some(404)), // Date is ignored; then routed like any INVITE
    ("regbadct", Some(400)),
    ("badaspec", Some(400)),
    ("baddn", Some(400)),
    ("badvers", Some(505)),
    ("mismatch01", Some(400)),
    ("mismatch02", Some(400)),
    ("bigcode", None),
    ("badbranch", Some(404)), // RFC 2543 transaction matching, then routed
    ("insuf", Some(400)),
    ("unkscm", Some(416)),
    ("novelsc", Some(416)),
    ("unksm2", Some(400)), // registrar: To must be a SIP AOR
    ("bext01", Some(420)),
    ("invut", Some(404)),
    ("regaut01", Some(404)), // unknown scheme credentials ignored; unprovisioned AOR
    ("multi01", Some(400)),
    ("mcl01", Some(400)),
    ("bcast", None), // a 200 whose top Via is not ours: dropped, never sent to 255.255.255.255
    ("zeromf", Some(483)),
    ("cparam01", Some(404)),
    ("cparam02", Some(404)),
    ("regescrt", Some(404)),
    ("sdp01", Some(404)),
    ("inv2543", Some(404)),
    ("test", None), // no Via: nothing can be answered
];

#[test]
fn every_vector_gets_the_answer_in_the_disposition_table() {
    let dir = root().join("rfc4475");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("vectors directory")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".dat").map(str::to_owned)
        })
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        EXPECTED.len(),
        "one expectation per vector file"
    );
    let mut failures = Vec::new();
    for name in &names {
        let want = EXPECTED
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no expectation for {name}"))
            .1;
        let bytes = std::fs::read(dir.join(format!("{name}.dat"))).unwrap();
        let mut w = World::new(CONFIG, 1, 7);
        let sender = w.add_phone("sender", "1050", 5070);
        let sender_addr = w.phone_ref(sender).addr;
        w.send_raw(sender, &bytes);
        w.run_for(ms(50));
        let got: Vec<u16> = w.phone_ref(sender).statuses();
        let elsewhere: Vec<_> = w
            .log
            .iter()
            .filter(|t| t.from == w.proxy && t.to != sender_addr)
            .map(|t| format!("{} -> {}", t.line, t.to))
            .collect();
        if !elsewhere.is_empty() {
            failures.push(format!("{name}: sent elsewhere: {elsewhere:?}"));
        }
        let ok = match want {
            Some(status) => got == vec![status],
            None => got.is_empty(),
        };
        if !ok {
            failures.push(format!("{name}: wanted {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
