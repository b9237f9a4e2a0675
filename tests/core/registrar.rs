//! Registrar (RFC 3261 §10.3, RFC 5626 §6, RFC 8760 digest) driven through
//! `Core::handle_datagram` on virtual time: REGISTER bytes in, responses and journal operations
//! out. Nothing here touches a network: addresses are only values.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sipfork::config::Config;
use sipfork::core::io::{Datagram, Inbound};
use sipfork::core::persist::PersistOp;
use sipfork::core::registrar::digest::{compute_response, Algorithm, Ha1, ResponseInput};
use sipfork::core::registrar::Restore;
use sipfork::core::shard::ShardId;
use sipfork::core::transaction::TimerValues;
use sipfork::core::{Core, CoreParams};
use sipfork::sip::{parse, ContactValue, HeaderName};
use sipfork::time::{secs, Instant};

use crate::vectors;

/// Wall clock at `Instant::ZERO` of the first core of a test (2023-11-14T22:13:20Z).
const WALL_EPOCH_US: u64 = 1_700_000_000_000_000;
const SECRET: [u8; 32] = [7; 32];

const DOMAINS: &str = r#"domain = ["example.com", "biloxi.com", "registrar.biloxi.com", "ss2.biloxi.example.com", "biloxi.example.com", "bell-telephone.com", "2001:db8::10"]"#;

/// A configuration with extensions 1000-1099 (password `pw-<number>`) and 0100 (max 2 devices).
fn config(registrar: &str, auth: &str) -> Arc<Config> {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:5060\"\n{DOMAINS}\n\
         [registrar]\nmin_expires = 60\nmax_expires = 7200\ndefault_expires = 3600\n{registrar}\n\
         [auth]\nrealm = \"example.com\"\n{auth}\n\
         [[extensions]]\nnumbers = \"1000-1099\"\npassword = \"pw-{{number}}\"\n\
         [[extensions]]\nnumbers = \"0100\"\npassword = \"pw-0100\"\nmax_contacts = 2\n"
    );
    Arc::new(Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}")))
}

fn no_auth() -> Arc<Config> {
    config("", "mode = \"none\"")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// One shard's core on virtual time, with the journal it has written so far.
struct Bench {
    core: Core,
    now: Instant,
    wall_epoch_us: u64,
    journal: BTreeMap<Vec<u8>, Vec<u8>>,
    ops: Vec<(bool, Vec<u8>)>,
}

impl Bench {
    fn new(cfg: Arc<Config>) -> Bench {
        Bench::started_at(cfg, WALL_EPOCH_US)
    }

    fn started_at(cfg: Arc<Config>, wall_epoch_us: u64) -> Bench {
        let params = CoreParams {
            shard: ShardId(0),
            shards: 1,
            local: addr("127.0.0.1:5060"),
            secret: SECRET,
            wall_epoch_us,
            timers: TimerValues::default(),
        };
        Bench {
            core: Core::new(cfg, params, Instant::ZERO),
            now: Instant::ZERO,
            wall_epoch_us,
            journal: BTreeMap::new(),
            ops: Vec::new(),
        }
    }

    /// Collects journal operations: `(true, key)` for a put, `(false, key)` for a delete.
    fn drain_persist(&mut self) {
        let (journal, ops) = (&mut self.journal, &mut self.ops);
        self.core.drain_persist(|op| match op {
            PersistOp::Put { key, value } => {
                journal.insert(key.to_vec(), value.to_vec());
                ops.push((true, key.to_vec()));
            }
            PersistOp::Delete { key } => {
                journal.remove(key);
                ops.push((false, key.to_vec()));
            }
        });
    }

    /// Hands one datagram from `from` to the core; returns what it sent.
    fn send(&mut self, from: &str, bytes: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
        self.deliver(from, bytes);
        self.drain_persist();
        self.take_outbox()
    }

    /// Hands one datagram from `from` to the core (its journal operations stay pending).
    fn deliver(&mut self, from: &str, bytes: &[u8]) {
        let d = Datagram {
            from: addr(from),
            local: addr("127.0.0.1:5060"),
            bytes,
            transport: sipfork::core::transport::Transport::Udp,
            peer_cert: None,
        };
        assert_eq!(self.core.handle_datagram(self.now, d), Inbound::Handled);
    }

    /// What the core sent since the last call.
    fn take_outbox(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        let out = self.core.outbox();
        let sent = out.iter().map(|(to, b)| (to, b.to_vec())).collect();
        out.clear();
        sent
    }

    /// Sends one request and returns its only answer.
    fn answer(&mut self, from: &str, bytes: &[u8]) -> Response {
        let mut sent = self.send(from, bytes);
        assert_eq!(sent.len(), 1, "one answer expected");
        let (to, bytes) = sent.remove(0);
        Response::read(to, bytes)
    }

    /// Moves virtual time forward by `d`, firing every timer due on the way.
    fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some(due) = self.core.poll_timeout().filter(|&t| t <= until) {
            self.now = due.max(self.now);
            self.core.handle_timeout(self.now);
        }
        self.now = until;
        self.core.handle_timeout(self.now);
        self.drain_persist();
    }

    fn wall_secs(&self) -> u64 {
        (self.wall_epoch_us + self.now.as_micros()) / 1_000_000
    }

    fn device_contacts(&self, number: &str) -> Vec<String> {
        self.core
            .devices(self.now, number.as_bytes())
            .expect("provisioned")
            .into_iter()
            .map(|d| d.contact)
            .collect()
    }
}

/// A response as the tests look at it.
#[derive(Debug)]
struct Response {
    to: SocketAddr,
    status: u16,
    reason: String,
    /// `(URI, expires)` of every Contact, in order.
    contacts: Vec<(String, Option<u32>)>,
    text: String,
}

impl Response {
    fn read(to: SocketAddr, bytes: Vec<u8>) -> Response {
        let m = parse(&bytes).expect("our responses parse");
        let contacts = m
            .contacts()
            .map(|c| match c.expect("our Contacts parse") {
                ContactValue::Addr(c) => {
                    (String::from_utf8_lossy(c.addr.uri.raw()).into(), c.expires)
                }
                ContactValue::Star => ("*".into(), None),
            })
            .collect();
        let reason = match m.kind() {
            sipfork::sip::Kind::Response { reason, .. } => String::from_utf8_lossy(reason).into(),
            _ => panic!("not a response"),
        };
        Response {
            to,
            status: m.status().unwrap(),
            reason,
            contacts,
            text: String::from_utf8_lossy(&bytes).into(),
        }
    }

    fn header(&self, name: HeaderName) -> Option<String> {
        let m = parse(self.text.as_bytes()).unwrap();
        m.first_value(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn uris(&self) -> Vec<&str> {
        self.contacts.iter().map(|(u, _)| u.as_str()).collect()
    }

    fn expires_of(&self, uri: &str) -> Option<u32> {
        self.contacts
            .iter()
            .find(|(u, _)| u == uri)
            .and_then(|(_, e)| *e)
    }
}

/// A REGISTER for extension `user` with extra rows (Contact, Expires, …; each ending CRLF).
fn reg(user: &str, call_id: &str, cseq: u32, rows: &str) -> Vec<u8> {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.5:5070;branch=z9hG4bK-{call_id}-{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@example.com>;tag=f-{call_id}\r\n\
         To: <sip:{user}@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         User-Agent: TestPhone/1.0\r\n\
         {rows}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

const PHONE: &str = "203.0.113.5:5070";

// ---------------------------------------------------------------------------------------------
// Contacts, expiry, query, removal
// ---------------------------------------------------------------------------------------------

/// RFC 3261 §10.3 step 8: the 200 lists every binding with the expiry the registrar chose.
#[test]
fn several_contacts_in_one_register() {
    let mut b = Bench::new(no_auth());
    let r = b.answer(
        PHONE,
        &reg(
            "1001",
            "c1",
            1,
            "Contact: <sip:1001@203.0.113.5:5070>, <sip:1001@203.0.113.5:5080>;expires=600\r\n",
        ),
    );
    assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
    assert_eq!(r.to, addr(PHONE), "rport: the answer goes to the source");
    assert_eq!(r.expires_of("sip:1001@203.0.113.5:5070"), Some(3600));
    assert_eq!(r.expires_of("sip:1001@203.0.113.5:5080"), Some(600));
    assert!(r.header(HeaderName::To).unwrap().contains(";tag="));
    assert_eq!(b.journal.len(), 2);
    assert_eq!(b.device_contacts("1001").len(), 2);
}

/// §10.3: a second device adds a binding; the 200 to each REGISTER lists all of them.
#[test]
fn contacts_accumulate_over_several_registers() {
    let mut b = Bench::new(no_auth());
    b.answer(
        PHONE,
        &reg("1001", "a", 1, "Contact: <sip:1001@203.0.113.5:5070>\r\n"),
    );
    b.advance(secs(1));
    let r = b.answer(
        "203.0.113.6:5070",
        &reg("1001", "b", 1, "Contact: <sip:1001@203.0.113.6:5070>\r\n"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.uris(),
        vec!["sip:1001@203.0.113.6:5070", "sip:1001@203.0.113.5:5070"],
        "most recent registration first"
    );
    assert_eq!(r.expires_of("sip:1001@203.0.113.5:5070"), Some(3599));
}

/// §10.3 step 7: a REGISTER without Contact asks for the bindings and changes nothing.
#[test]
fn register_without_contact_lists_current_bindings() {
    let mut b = Bench::new(no_auth());
    b.answer(
        PHONE,
        &reg("1001", "a", 1, "Contact: <sip:1001@203.0.113.5:5070>\r\n"),
    );
    let puts = b.ops.len();
    b.advance(secs(100));
    let r = b.answer(PHONE, &reg("1001", "q", 1, ""));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.contacts,
        vec![("sip:1001@203.0.113.5:5070".into(), Some(3500))]
    );
    assert_eq!(b.ops.len(), puts, "a query journals nothing");
    let r = b.answer(PHONE, &reg("1002", "q", 1, ""));
    assert_eq!((r.status, r.contacts.len()), (200, 0));
}

/// §10.3 step 6: `Contact: *` with `Expires: 0` removes every binding; `*` with anything else
/// is 400 and removes nothing.
#[test]
fn star_removes_all_and_is_refused_otherwise() {
    let mut b = Bench::new(no_auth());
    b.answer(
        PHONE,
        &reg(
            "1001",
            "a",
            1,
            "Contact: <sip:1001@203.0.113.5:5070>, <sip:x@203.0.113.5>\r\n",
        ),
    );
    for rows in [
        "Contact: *\r\nExpires: 60\r\n",
        "Contact: *\r\n",
        "Contact: *, <sip:y@203.0.113.5>\r\nExpires: 0\r\n",
        "Contact: *\r\nContact: <sip:y@203.0.113.5>\r\nExpires: 0\r\n",
    ] {
        let r = b.answer(PHONE, &reg("1001", "s", 1, rows));
        assert_eq!(r.status, 400, "{rows:?}");
        assert!(r.reason.contains("Contact: *"), "{}", r.reason);
    }
    assert_eq!(b.device_contacts("1001").len(), 2);
    let r = b.answer(PHONE, &reg("1001", "s", 2, "Contact: *\r\nExpires: 0\r\n"));
    assert_eq!((r.status, r.contacts.len()), (200, 0));
    assert!(b.journal.is_empty(), "both deletes journalled");
    assert_eq!(b.ops.iter().filter(|(put, _)| !put).count(), 2);
    assert!(b.device_contacts("1001").is_empty());
    assert_eq!(
        b.core.poll_timeout(),
        None,
        "the expiry timer went with the bindings"
    );
}

/// §10.3 step 7: `expires=0` removes one binding; an unknown one is ignored.
#[test]
fn expires_zero_removes_one_binding() {
    let mut b = Bench::new(no_auth());
    b.answer(
        PHONE,
        &reg(
            "1001",
            "a",
            1,
            "Contact: <sip:1001@203.0.113.5:5070>, <sip:x@203.0.113.5>\r\n",
        ),
    );
    let r = b.answer(
        PHONE,
        &reg(
            "1001",
            "a",
            2,
            "Contact: <sip:x@203.0.113.5>;expires=0, <sip:never@h>;expires=0\r\n",
        ),
    );
    assert_eq!(r.uris(), vec!["sip:1001@203.0.113.5:5070"]);
    assert_eq!(b.journal.len(), 1);
}

/// §10.3 step 7: Contact `expires` beats the Expires header, which beats `default_expires`;
/// longer than `max_expires` is shortened.
#[test]
fn expiry_precedence_and_clamp_to_max() {
    let mut b = Bench::new(no_auth());
    let r = b.answer(
        PHONE,
        &reg(
            "1001",
            "a",
            1,
            "Contact: <sip:p@203.0.113.5>;expires=120, <sip:h@203.0.113.5>, <sip:big@203.0.113.5>;expires=4294967295\r\nExpires: 300\r\n",
        ),
    );
    assert_eq!(r.expires_of("sip:p@203.0.113.5"), Some(120));
    assert_eq!(r.expires_of("sip:h@203.0.113.5"), Some(300));
    assert_eq!(r.expires_of("sip:big@203.0.113.5"), Some(7200));
    let r = b.answer(
        PHONE,
        &reg("1001", "b", 1, "Contact: <sip:d@203.0.113.5>\r\n"),
    );
    assert_eq!(r.expires_of("sip:d@203.0.113.5"), Some(3600));
}

/// §10.3 step 7: a non-zero expiry below `min_expires` gets 423 with Min-Expires, and the whole
/// request fails (no other Contact of it is applied).
#[test]
fn too_brief_expiry_gets_423_with_min_expires() {
    let mut b = Bench::new(no_auth());
    let r = b.answer(
        PHONE,
        &reg(
            "1001",
            "a",
            1,
            "Contact: <sip:ok@203.0.113.5>, <sip:brief@203.0.113.5>;expires=59\r\n",
        ),
    );
    assert_eq!((r.status, r.reason.as_str()), (423, "Interval Too Brief"));
    assert_eq!(r.header(HeaderName::MinExpires).as_deref(), Some("60"));
    assert!(b.journal.is_empty());
    let r = b.answer(
        PHONE,
        &reg(
            "1001",
            "a",
            2,
            "Contact: <sip:ok@203.0.113.5>\r\nExpires: 30\r\n",
        ),
    );
    assert_eq!(r.status, 423);
    let r = b.answer(
        PHONE,
        &reg(
            "1001",
            "a",
            3,
            "Contact: <sip:ok@203.0.113.5>;expires=60\r\n",
        ),
    );
    assert_eq!(r.expires_of("sip:ok@203.0.113.5"), Some(60));
}

/// §10.3 step 7 (Call-ID/CSeq): same Call-ID and CSeq is a retransmission (200, nothing
/// changes); a lower CSeq fails with 500; a higher one updates; another Call-ID (the phone
/// rebooted) updates whatever its CSeq.
#[test]
fn call_id_and_cseq_order_per_binding() {
    let mut b = Bench::new(no_auth());
    let first = reg(
        "1001",
        "call-1",
        10,
        "Contact: <sip:1001@203.0.113.5:5070>\r\n",
    );
    b.answer(PHONE, &first);
    let ops = b.ops.len();
    b.advance(secs(10));
    let r = b.answer(PHONE, &first);
    assert_eq!(r.status, 200, "retransmission");
    assert_eq!(
        r.expires_of("sip:1001@203.0.113.5:5070"),
        Some(3590),
        "unchanged"
    );
    assert_eq!(b.ops.len(), ops, "a retransmission journals nothing");
    let r = b.answer(
        PHONE,
        &reg(
            "1001",
            "call-1",
            9,
            "Contact: <sip:1001@203.0.113.5:5070>;expires=60\r\n",
        ),
    );
    assert_eq!(
        (r.status, r.reason.as_str()),
        (500, "Server Internal Error - CSeq out of order")
    );
    let r = b.answer(
        PHONE,
        &reg(
            "1001",
            "call-1",
            11,
            "Contact: <sip:1001@203.0.113.5:5070>;expires=60\r\n",
        ),
    );
    assert_eq!(r.expires_of("sip:1001@203.0.113.5:5070"), Some(60));
    let r = b.answer(
        PHONE,
        &reg(
            "1001",
            "call-2",
            1,
            "Contact: <sip:1001@203.0.113.5:5070>;expires=90\r\n",
        ),
    );
    assert_eq!(
        r.contacts,
        vec![("sip:1001@203.0.113.5:5070".into(), Some(90))]
    );
    // `*` obeys the same rule.
    let r = b.answer(
        PHONE,
        &reg("1001", "call-2", 0, "Contact: *\r\nExpires: 0\r\n"),
    );
    assert_eq!(r.status, 500);
    assert_eq!(b.device_contacts("1001").len(), 1);
}

/// §19.1.4: a Contact equivalent to a stored one (case of the host, parameter order) refreshes
/// that binding instead of adding one, and the stored URI takes the new spelling.
#[test]
fn equivalent_contact_refreshes_the_same_binding() {
    let mut b = Bench::new(no_auth());
    b.answer(
        PHONE,
        &reg(
            "1001",
            "a",
            1,
            "Contact: <sip:1001@Phone.Example.com;a=1;b=2>\r\n",
        ),
    );
    let r = b.answer(
        PHONE,
        &reg(
            "1001",
            "a",
            2,
            "Contact: <sip:1001@phone.example.com;b=2;a=1>\r\n",
        ),
    );
    assert_eq!(r.uris(), vec!["sip:1001@phone.example.com;b=2;a=1"]);
    assert_eq!(b.journal.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Device limit and instance replacement
// ---------------------------------------------------------------------------------------------

fn register_devices(b: &mut Bench, number: &str, n: u32) {
    for i in 0..n {
        let r = b.answer(
            PHONE,
            &reg(
                number,
                &format!("dev{i}"),
                1,
                &format!("Contact: <sip:{number}@203.0.113.5:{}>\r\n", 6000 + i),
            ),
        );
        assert_eq!(r.status, 200);
        b.advance(secs(1));
    }
}

/// DECISIONS.md: past `max_contacts` with `on_limit = "reject"`, `403 Too many registered
/// devices`; refreshing a registered device still works.
#[test]
fn limit_with_reject_policy() {
    let mut b = Bench::new(no_auth());
    register_devices(&mut b, "0100", 2);
    let r = b.answer(
        PHONE,
        &reg(
            "0100",
            "dev9",
            1,
            "Contact: <sip:0100@203.0.113.5:7000>\r\n",
        ),
    );
    assert_eq!(
        (r.status, r.reason.as_str()),
        (403, "Too many registered devices")
    );
    let r = b.answer(
        PHONE,
        &reg(
            "0100",
            "dev0",
            2,
            "Contact: <sip:0100@203.0.113.5:6000>\r\n",
        ),
    );
    assert_eq!((r.status, r.contacts.len()), (200, 2));
    // Replacing one device by another in one REGISTER stays within the limit.
    b.advance(secs(1));
    let r = b.answer(
        PHONE,
        &reg(
            "0100",
            "dev1",
            2,
            "Contact: <sip:0100@203.0.113.5:6001>;expires=0, <sip:0100@203.0.113.5:7000>\r\n",
        ),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        b.device_contacts("0100"),
        vec!["sip:0100@203.0.113.5:7000", "sip:0100@203.0.113.5:6000"]
    );
    let r = b.answer(
        PHONE,
        &reg(
            "0100",
            "many",
            1,
            "Contact: <sip:a@h>, <sip:b@h>, <sip:c@h>\r\n",
        ),
    );
    assert_eq!(
        (r.status, r.reason.as_str()),
        (403, "Too many contacts in one REGISTER")
    );
}

/// DECISIONS.md: with `on_limit = "evict-oldest"` the binding with the oldest registration
/// time goes (a delete is journalled), so the newest N stay.
#[test]
fn limit_with_evict_oldest_keeps_the_newest() {
    let mut b = Bench::new(config("on_limit = \"evict-oldest\"", "mode = \"none\""));
    register_devices(&mut b, "0100", 2);
    // Refreshing dev0 makes dev1 the oldest registration.
    b.answer(
        PHONE,
        &reg(
            "0100",
            "dev0",
            2,
            "Contact: <sip:0100@203.0.113.5:6000>\r\n",
        ),
    );
    b.advance(secs(1));
    let r = b.answer(
        PHONE,
        &reg(
            "0100",
            "dev9",
            1,
            "Contact: <sip:0100@203.0.113.5:7000>\r\n",
        ),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.uris(),
        vec!["sip:0100@203.0.113.5:7000", "sip:0100@203.0.113.5:6000"]
    );
    assert_eq!(b.ops.last().map(|(put, _)| *put), Some(true));
    assert!(b.ops.iter().any(|(put, k)| !put && k.starts_with(b"0100:")));
    assert_eq!(b.journal.len(), 2);
}

/// RFC 5626 §6: a device re-registering with the same `+sip.instance` (and reg-id) from a new
/// address replaces its own binding and takes no second slot; another reg-id is another flow.
#[test]
fn instance_replaces_its_own_binding() {
    let mut b = Bench::new(no_auth());
    let inst = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"";
    b.answer(
        PHONE,
        &reg(
            "0100",
            "x",
            1,
            &format!("Contact: <sip:0100@203.0.113.5:5070>;{inst}\r\n"),
        ),
    );
    b.answer(
        PHONE,
        &reg("0100", "y", 1, "Contact: <sip:0100@203.0.113.9:5070>\r\n"),
    );
    // Same device, new address, new Call-ID (it rebooted behind another NAT): limit is 2.
    let r = b.answer(
        "198.51.100.7:4000",
        &reg(
            "0100",
            "z",
            1,
            &format!("Contact: <sip:0100@198.51.100.7:4000>;{inst}\r\n"),
        ),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.uris(),
        vec!["sip:0100@198.51.100.7:4000", "sip:0100@203.0.113.9:5070"]
    );
    assert!(r.text.contains(
        "Contact: <sip:0100@198.51.100.7:4000>;expires=3600;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"\r\n"
    ));
    let devices = b.core.devices(b.now, b"0100").unwrap();
    assert_eq!(devices[0].source, addr("198.51.100.7:4000"));

    // reg-id is ignored while Outbound (RFC 5626 multiple flows) is not supported: one binding
    // per instance, whatever flow it names, and no reg-id is echoed as if it were honoured.
    let mut b = Bench::new(no_auth());
    let flow = |port: u16, reg_id: u32| {
        format!("Contact: <sip:1001@203.0.113.5:{port}>;{inst};reg-id={reg_id}\r\n")
    };
    b.answer(PHONE, &reg("1001", "f1", 1, &flow(5070, 1)));
    b.answer(PHONE, &reg("1001", "f2", 1, &flow(5071, 2)));
    let r = b.answer(PHONE, &reg("1001", "f1b", 1, &flow(5072, 1)));
    assert_eq!(r.uris(), vec!["sip:1001@203.0.113.5:5072"]);
    assert!(!r.text.contains("reg-id"));
}

/// Two phones behind different NATs with the same private Contact are two bindings; the same
/// phone re-registering from a new port of its NAT replaces its own.
#[test]
fn same_private_contact_behind_two_nats_is_two_bindings() {
    let mut b = Bench::new(no_auth());
    let contact = "Contact: <sip:1002@192.168.1.10:5060>\r\n";
    b.answer("198.51.100.7:4000", &reg("1002", "a", 1, contact));
    let r = b.answer("203.0.113.9:4000", &reg("1002", "b", 1, contact));
    assert_eq!(r.status, 200);
    let devices = b.core.devices(b.now, b"1002").unwrap();
    let mut sources: Vec<_> = devices.iter().map(|d| d.source).collect();
    sources.sort();
    assert_eq!(
        sources,
        vec![addr("198.51.100.7:4000"), addr("203.0.113.9:4000")]
    );
    // The first phone's NAT re-maps its flow: still one binding for it, at the new port.
    b.answer("198.51.100.7:4100", &reg("1002", "a", 2, contact));
    let devices = b.core.devices(b.now, b"1002").unwrap();
    assert_eq!(devices.len(), 2);
    assert!(devices
        .iter()
        .any(|d| d.source == addr("198.51.100.7:4100")));
}

// ---------------------------------------------------------------------------------------------
// Unknown extensions, domains, Require
// ---------------------------------------------------------------------------------------------

/// §10.3 step 5: an address-of-record that is not a provisioned extension cannot register
/// (404), and neither can a foreign domain; §10.3 step 2: Require we do not support gets 420.
#[test]
fn unknown_extensions_domains_and_require() {
    let mut b = Bench::new(no_auth());
    let contact = "Contact: <sip:x@203.0.113.5>\r\n";
    for user in ["2000", "alice", "100"] {
        let r = b.answer(PHONE, &reg(user, "u", 1, contact));
        assert_eq!((r.status, r.reason.as_str()), (404, "Not Found"), "{user}");
    }
    let foreign = String::from_utf8(reg("1001", "u", 1, contact))
        .unwrap()
        .replace(
            "REGISTER sip:example.com",
            "REGISTER sip:elsewhere.example.net",
        );
    let r = b.answer(PHONE, foreign.as_bytes());
    assert_eq!(r.status, 404);
    let tel = String::from_utf8(reg("1001", "u", 1, contact))
        .unwrap()
        .replace("REGISTER sip:example.com", "REGISTER tel:+15551234");
    assert_eq!(b.answer(PHONE, tel.as_bytes()).status, 416);
    let r = b.answer(
        PHONE,
        &reg(
            "1001",
            "u",
            1,
            "Require: path, gruu\r\nContact: <sip:x@h>\r\n",
        ),
    );
    assert_eq!((r.status, r.reason.as_str()), (420, "Bad Extension"));
    assert_eq!(
        r.header(HeaderName::Unsupported).as_deref(),
        Some("path, gruu")
    );
    assert!(b.journal.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Expiry on virtual time
// ---------------------------------------------------------------------------------------------

/// §10.3: a binding disappears when its expiry passes, driven by the timer wheel: the
/// journal gets its delete at that moment, and a query lists only the rest.
#[test]
fn bindings_expire_on_time() {
    let mut b = Bench::new(no_auth());
    b.answer(
        PHONE,
        &reg(
            "1001",
            "a",
            1,
            "Contact: <sip:short@203.0.113.5>;expires=60, <sip:long@203.0.113.5>;expires=120\r\n",
        ),
    );
    assert!(b
        .core
        .poll_timeout()
        .is_some_and(|t| t <= Instant::ZERO + secs(60)));
    b.advance(Duration::from_micros(59_999_999));
    assert_eq!(b.journal.len(), 2, "not yet");
    b.advance(Duration::from_micros(1));
    assert_eq!(b.ops.last(), Some(&(false, b"1001:0".to_vec())));
    assert_eq!(b.journal.len(), 1);
    let r = b.answer(PHONE, &reg("1001", "q", 1, ""));
    assert_eq!(r.contacts, vec![("sip:long@203.0.113.5".into(), Some(60))]);
    b.advance(secs(60));
    assert!(b.journal.is_empty());
    assert!(b.device_contacts("1001").is_empty());
    assert_eq!(b.core.poll_timeout(), None);
    let m = metrics(&b.core);
    assert_eq!(m["sipfork_bindings"], 0);
    assert_eq!(m["sipfork_bindings_expired_total"], 2);
}

/// A refresh moves the expiry later; the earlier timer fires, finds nothing due, and re-arms.
#[test]
fn refresh_postpones_expiry() {
    let mut b = Bench::new(no_auth());
    b.answer(
        PHONE,
        &reg(
            "1001",
            "a",
            1,
            "Contact: <sip:p@203.0.113.5>;expires=60\r\n",
        ),
    );
    b.advance(secs(50));
    b.answer(
        PHONE,
        &reg(
            "1001",
            "a",
            2,
            "Contact: <sip:p@203.0.113.5>;expires=60\r\n",
        ),
    );
    b.advance(secs(20));
    assert_eq!(
        b.device_contacts("1001").len(),
        1,
        "refreshed at 50 s: lives until 110 s"
    );
    b.advance(secs(40));
    assert!(b.device_contacts("1001").is_empty());
}

fn metrics(core: &Core) -> BTreeMap<String, u64> {
    let mut sink = sipfork::core::metrics::MetricSink::default();
    core.export_metrics(&mut sink);
    sink.samples
        .into_iter()
        .map(|s| {
            let labels: Vec<String> = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "shard")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let name = if labels.is_empty() {
                s.name.to_string()
            } else {
                format!("{}{{{}}}", s.name, labels.join(","))
            };
            (name, s.value)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Persistence
// ---------------------------------------------------------------------------------------------

/// DECISIONS.md: after `kill -9` and a restart every binding is back with its remaining
/// expiry (expiry stored as wall-clock time; the new process has a new monotonic epoch).
#[test]
fn bindings_survive_a_restart_with_their_remaining_expiry() {
    let mut b = Bench::new(no_auth());
    let inst = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1";
    b.answer(
        PHONE,
        &reg(
            "1001",
            "a",
            7,
            &format!("Contact: <sip:1001@203.0.113.5:5070>;q=0.5;{inst}\r\n"),
        ),
    );
    b.answer(
        "[2001:db8::9]:5060",
        &reg(
            "1001",
            "b",
            1,
            "Contact: <sip:1001@[2001:db8::9]>;expires=600\r\n",
        ),
    );
    b.answer(
        PHONE,
        &reg(
            "1002",
            "c",
            1,
            "Contact: <sip:1002@203.0.113.5:5071>;expires=60\r\n",
        ),
    );
    b.advance(secs(30));
    let before = b.core.devices(b.now, b"1001").unwrap();
    let journal = b.journal.clone();
    assert_eq!(journal.len(), 3);

    // The process dies at 30 s; a new one starts 100 s of wall time later.
    let restart_wall_us = WALL_EPOCH_US + 130_000_000;
    let mut c = Bench::started_at(no_auth(), restart_wall_us);
    let mut outcomes = Vec::new();
    for (key, value) in &journal {
        outcomes.push(c.core.restore(c.now, key, value));
    }
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        outcomes,
        vec![Restore::Expired, Restore::Restored, Restore::Restored]
    );
    c.drain_persist();
    assert_eq!(
        c.ops,
        vec![(false, b"1002:0".to_vec())],
        "the expired record is deleted"
    );

    let after = c.core.devices(c.now, b"1001").unwrap();
    assert_eq!(after.len(), 2);
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(new.contact, old.contact);
        assert_eq!(new.source, old.source);
        assert_eq!(new.instance, old.instance);
        assert_eq!(new.class, old.class);
        assert_eq!(new.q, old.q);
        assert_eq!(new.user_agent, old.user_agent);
        assert_eq!(new.expires_at_unix, old.expires_at_unix);
        assert_eq!(
            new.expires_in,
            old.expires_in - 100,
            "100 s passed while down"
        );
    }
    let v4 = after
        .iter()
        .find(|d| d.contact == "sip:1001@203.0.113.5:5070")
        .unwrap();
    assert_eq!(v4.expires_in, 3600 - 130);
    assert_eq!(
        after[0].contact, "sip:1001@[2001:db8::9]",
        "q 1 before q 0.5, as before"
    );
    assert!(c.core.devices(c.now, b"1002").unwrap().is_empty());
    // The timer is re-armed: the IPv6 binding goes at 600 s after its registration.
    c.advance(secs(600 - 130 - 1));
    assert_eq!(c.device_contacts("1001").len(), 2);
    c.advance(secs(1));
    assert_eq!(c.device_contacts("1001"), vec!["sip:1001@203.0.113.5:5070"]);
    // Garbage is not a binding.
    assert_eq!(
        c.core.restore(c.now, b"1001:9", b"\x09junk"),
        Restore::Malformed
    );
    assert_eq!(c.core.restore(c.now, b"nonsense", b""), Restore::Malformed);
}

/// The live set handed to journal compaction is exactly what the journal holds.
#[test]
fn compaction_live_set_equals_the_journal() {
    let mut b = Bench::new(no_auth());
    register_devices(&mut b, "1001", 3);
    b.answer(
        PHONE,
        &reg("1002", "x", 1, "Contact: <sip:1002@203.0.113.5>\r\n"),
    );
    let mut live = BTreeMap::new();
    b.core.for_each_binding_record(|k, v| {
        live.insert(k.to_vec(), v.to_vec());
    });
    assert_eq!(live, b.journal);
}

// ---------------------------------------------------------------------------------------------
// Overview and targets
// ---------------------------------------------------------------------------------------------

/// The extension overview: contact, source, transport, User-Agent, q, expiry (remaining and
/// wall clock) and instance of every device; `None` for a number that is not provisioned.
#[test]
fn devices_overview() {
    let mut b = Bench::new(no_auth());
    b.advance(secs(5));
    b.answer(
        PHONE,
        &reg(
            "1001",
            "a",
            1,
            "Contact: <sip:1001@10.0.0.5:5060>;q=0.7;expires=300;+sip.instance=\"<urn:uuid:abc>\"\r\n",
        ),
    );
    b.advance(secs(10));
    let d = &b.core.devices(b.now, b"1001").unwrap()[0];
    assert_eq!(d.contact, "sip:1001@10.0.0.5:5060");
    assert_eq!(d.source, addr(PHONE));
    assert_eq!(
        d.destination,
        addr(PHONE),
        "behind NAT: calls go to the source"
    );
    assert_eq!(d.transport, "UDP");
    assert_eq!(d.user_agent.as_deref(), Some("TestPhone/1.0"));
    assert_eq!(d.q, 700);
    assert_eq!(d.expires_in, 290);
    assert_eq!(d.expires_at_unix, WALL_EPOCH_US / 1_000_000 + 305);
    assert_eq!(d.registered_at_unix, WALL_EPOCH_US / 1_000_000 + 5);
    assert_eq!(d.instance.as_deref(), Some("<urn:uuid:abc>"));
    assert_eq!(d.class, "ip_phone");
    assert_eq!((d.call_id.as_str(), d.cseq), ("a", 1));
    assert_eq!(b.core.devices(b.now, b"1002"), Some(vec![]));
    assert_eq!(b.core.devices(b.now, b"5555"), None);
    assert_eq!(b.wall_secs(), WALL_EPOCH_US / 1_000_000 + 15);
}

/// DECISIONS.md "NAT": where the proxy sends a call for each binding, and in which order.
#[test]
fn nat_modes_pick_the_destination() {
    let cases = [
        (
            "auto",
            ["203.0.113.5:5070", "203.0.113.5:5090", "203.0.113.5:5070"],
        ),
        (
            "flow",
            ["203.0.113.5:5070", "203.0.113.5:5070", "203.0.113.5:5070"],
        ),
        (
            "contact",
            ["10.0.0.5:5060", "203.0.113.5:5090", "203.0.113.5:5070"],
        ),
    ];
    for (mode, expected) in cases {
        let mut b = Bench::new(config(&format!("nat = \"{mode}\""), "mode = \"none\""));
        // Behind NAT (private Contact), on the public address itself, and a host name.
        b.answer(
            PHONE,
            &reg("1001", "a", 1, "Contact: <sip:1001@10.0.0.5>;q=1\r\n"),
        );
        b.answer(
            PHONE,
            &reg(
                "1001",
                "b",
                1,
                "Contact: <sip:1001@203.0.113.5:5090>;q=0.9\r\n",
            ),
        );
        b.answer(
            PHONE,
            &reg(
                "1001",
                "c",
                1,
                "Contact: <sip:1001@phone.example.com>;q=0.8\r\n",
            ),
        );
        b.answer(
            PHONE,
            &reg("1001", "d", 1, "Contact: <mailto:1001@example.com>\r\n"),
        );
        let got: Vec<(String, SocketAddr, u16)> = b
            .core
            .targets(b"1001")
            .map(|t| (String::from_utf8_lossy(t.contact).into(), t.dest, t.q))
            .collect();
        let dests: Vec<SocketAddr> = got.iter().map(|t| t.1).collect();
        assert_eq!(dests, expected.map(addr).to_vec(), "nat = {mode}");
        assert_eq!(
            got.iter().map(|t| t.2).collect::<Vec<_>>(),
            vec![1000, 900, 800]
        );
        assert_eq!(
            got[0].0, "sip:1001@10.0.0.5",
            "the Contact is the Request-URI"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Digest authentication
// ---------------------------------------------------------------------------------------------

fn digest() -> Arc<Config> {
    config(
        "",
        "mode = \"digest\"\nalgorithms = [\"SHA-256\", \"MD5\"]\nnonce_ttl = 300",
    )
}

/// The nonce and the offered algorithms of a 401.
fn challenge(r: &Response) -> (String, Vec<String>, bool) {
    assert_eq!((r.status, r.reason.as_str()), (401, "Unauthorized"));
    let m = parse(r.text.as_bytes()).unwrap();
    let first = m.www_authenticate().unwrap().unwrap();
    let nonce = String::from_utf8_lossy(first.nonce).into_owned();
    let algorithms = m
        .rows(HeaderName::WwwAuthenticate)
        .map(|h| {
            let v = String::from_utf8_lossy(h.value).into_owned();
            assert!(
                v.contains(&format!("nonce=\"{nonce}\"")),
                "one nonce for all rows"
            );
            v.split("algorithm=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    (nonce, algorithms, first.stale)
}

/// An Authorization row for `user` with `password`.
fn authorization(user: &str, password: &str, algorithm: Algorithm, nonce: &str, nc: u32) -> String {
    let ha1 = Ha1::from_password(
        algorithm,
        user.as_bytes(),
        b"example.com",
        password.as_bytes(),
    );
    let nc = format!("{nc:08x}");
    let response = compute_response(
        algorithm,
        &ha1,
        &ResponseInput {
            method: b"REGISTER",
            uri: b"sip:example.com",
            nonce: nonce.as_bytes(),
            nc: nc.as_bytes(),
            cnonce: b"0a4f113b",
            qop: b"auth",
        },
    );
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"example.com\", nonce=\"{nonce}\", \
         uri=\"sip:example.com\", response=\"{}\", algorithm={}, cnonce=\"0a4f113b\", qop=auth, nc={nc}\r\n",
        response.as_str(),
        algorithm.name()
    )
}

/// RFC 3261 §22.4, RFC 8760: 401 with one challenge per algorithm (SHA-256 first), then
/// success with SHA-256 and with MD5; the phone reuses the nonce with increasing nc.
#[test]
fn digest_challenge_then_success_with_sha256_and_md5() {
    let mut b = Bench::new(digest());
    let contact = "Contact: <sip:1001@203.0.113.5:5070>\r\n";
    let r = b.answer(PHONE, &reg("1001", "a", 1, contact));
    let (nonce, algorithms, stale) = challenge(&r);
    assert_eq!(algorithms, vec!["SHA-256", "MD5"]);
    assert!(!stale);
    assert!(b.journal.is_empty());
    for (cseq, nc, algorithm) in [(2, 1, Algorithm::Sha256), (3, 2, Algorithm::Md5)] {
        let auth = authorization("1001", "pw-1001", algorithm, &nonce, nc);
        let r = b.answer(PHONE, &reg("1001", "a", cseq, &format!("{auth}{contact}")));
        assert_eq!(r.status, 200, "{algorithm:?}: {}", r.reason);
        assert_eq!(r.uris(), vec!["sip:1001@203.0.113.5:5070"]);
    }
    let m = metrics(&b.core);
    assert_eq!(m["sipfork_auth_successes_total"], 2);
    assert_eq!(
        m["sipfork_auth_challenges_total{header=www-authenticate}"],
        1
    );
    assert_eq!(m["sipfork_registrations_total{outcome=challenged}"], 1);
    assert_eq!(m["sipfork_registrations_total{outcome=updated}"], 2);
}

/// DECISIONS.md: wrong credentials get 403; so does a user that is not provisioned, and an
/// authenticated user registering another extension.
#[test]
fn digest_wrong_password_unknown_user_and_other_extension_get_403() {
    let mut b = Bench::new(digest());
    let contact = "Contact: <sip:x@203.0.113.5>\r\n";
    let (nonce, _, _) = challenge(&b.answer(PHONE, &reg("1001", "a", 1, contact)));
    let wrong = authorization("1001", "guess", Algorithm::Sha256, &nonce, 1);
    let r = b.answer(PHONE, &reg("1001", "a", 2, &format!("{wrong}{contact}")));
    assert_eq!(
        (r.status, r.reason.as_str()),
        (403, "Forbidden - wrong credentials")
    );
    let unknown = authorization("1999", "pw-1999", Algorithm::Sha256, &nonce, 1);
    let r = b.answer(PHONE, &reg("1999", "a", 3, &format!("{unknown}{contact}")));
    assert_eq!(r.status, 403);
    let other = authorization("1002", "pw-1002", Algorithm::Sha256, &nonce, 2);
    let r = b.answer(PHONE, &reg("1001", "a", 4, &format!("{other}{contact}")));
    assert_eq!(
        (r.status, r.reason.as_str()),
        (
            403,
            "Forbidden - credentials do not match the address-of-record"
        )
    );
    assert!(b.journal.is_empty());
}

/// RFC 7616 §3.3, §3.4.5: a reused nonce-count is a replay and gets a `stale=true` challenge,
/// except that a retransmission of the REGISTER it authenticated gets the same 200 again.
#[test]
fn digest_replayed_nonce_count_is_refused() {
    let mut b = Bench::new(digest());
    let contact = "Contact: <sip:1001@203.0.113.5:5070>\r\n";
    let (nonce, _, _) = challenge(&b.answer(PHONE, &reg("1001", "a", 1, contact)));
    let auth = authorization("1001", "pw-1001", Algorithm::Md5, &nonce, 1);
    let accepted = reg("1001", "a", 2, &format!("{auth}{contact}"));
    assert_eq!(b.answer(PHONE, &accepted).status, 200);
    let ops = b.ops.len();
    assert_eq!(b.answer(PHONE, &accepted).status, 200, "retransmission");
    // Same credentials on a new request: a replay.
    let replay = reg(
        "1001",
        "a",
        3,
        &format!("{auth}Contact: <sip:evil@198.51.100.1>\r\n"),
    );
    let (_, _, stale) = challenge(&b.answer(PHONE, &replay));
    assert!(stale);
    assert_eq!(b.ops.len(), ops, "nothing changed");
    assert_eq!(b.device_contacts("1001"), vec!["sip:1001@203.0.113.5:5070"]);
}

/// RFC 7616 §3.3: after `nonce_ttl` the nonce is stale: `stale=true`, then the fresh nonce works.
#[test]
fn digest_nonce_goes_stale_after_its_ttl() {
    let mut b = Bench::new(digest());
    let contact = "Contact: <sip:1001@203.0.113.5:5070>\r\n";
    let (nonce, _, _) = challenge(&b.answer(PHONE, &reg("1001", "a", 1, contact)));
    b.advance(secs(301));
    let auth = authorization("1001", "pw-1001", Algorithm::Sha256, &nonce, 1);
    let (fresh, _, stale) =
        challenge(&b.answer(PHONE, &reg("1001", "a", 2, &format!("{auth}{contact}"))));
    assert!(stale);
    assert_ne!(fresh, nonce);
    let auth = authorization("1001", "pw-1001", Algorithm::Sha256, &fresh, 1);
    assert_eq!(
        b.answer(PHONE, &reg("1001", "a", 3, &format!("{auth}{contact}")))
            .status,
        200
    );
}

/// RFC 7616 §3.4.6: a digest-uri that does not name the Request-URI is 400.
#[test]
fn digest_uri_must_match_the_request_uri() {
    let mut b = Bench::new(digest());
    let contact = "Contact: <sip:1001@203.0.113.5:5070>\r\n";
    let (nonce, _, _) = challenge(&b.answer(PHONE, &reg("1001", "a", 1, contact)));
    let auth = authorization("1001", "pw-1001", Algorithm::Sha256, &nonce, 1)
        .replace("uri=\"sip:example.com\"", "uri=\"sip:other.example.com\"");
    let r = b.answer(PHONE, &reg("1001", "a", 2, &format!("{auth}{contact}")));
    assert_eq!(r.status, 400);
    assert!(r.reason.contains("digest uri"), "{}", r.reason);
}

// ---------------------------------------------------------------------------------------------
// RFC 4475 registrar vectors and RFC 3261/3665/5118 REGISTER flows
// ---------------------------------------------------------------------------------------------

/// Replaces the user part of the To and From URIs (`:{from}@` → `:{to}@`), so a vector written
/// for a named user registers a provisioned number; every other octet stays as in the RFC.
fn as_extension(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec()).expect("these vectors are UTF-8");
    text.split_inclusive("\r\n")
        .map(|line| {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("to:") || lower.starts_with("from:") {
                line.replace(&format!(":{from}@"), &format!(":{to}@"))
            } else {
                line.to_owned()
            }
        })
        .collect::<String>()
        .into_bytes()
}

/// RFC 4475 §3.1.1.4 escnull: `%00` and `%00%00` are two distinct bindings, and the AOR is
/// never cut at the NUL (`null-%00-null` is not a provisioned number: 404).
#[test]
fn rfc4475_escnull() {
    let vector = vectors::read("rfc4475", "escnull.dat");
    let mut b = Bench::new(no_auth());
    assert_eq!(b.answer(PHONE, &vector).status, 404);
    let r = b.answer(PHONE, &as_extension(&vector, "null-%00-null", "1001"));
    assert_eq!(r.status, 200);
    let mut uris = r.uris();
    uris.sort();
    assert_eq!(
        uris,
        vec!["sip:%00%00@host5.example.com", "sip:%00@host5.example.com"]
    );
    assert_eq!(b.journal.len(), 2);
}

/// RFC 4475 §3.3.12 cparam01 / §3.3.13 cparam02: `;unknownparam` after an addr-spec is a
/// Contact parameter; inside `<>` it is part of the URI, also in later fetches.
#[test]
fn rfc4475_cparam01_and_cparam02() {
    let mut b = Bench::new(no_auth());
    let r = b.answer(
        PHONE,
        &as_extension(&vectors::read("rfc4475", "cparam01.dat"), "watson", "1001"),
    );
    assert_eq!(
        r.contacts,
        vec![("sip:+19725552222@gw1.example.net".into(), Some(3600))]
    );
    let mut b = Bench::new(no_auth());
    let r = b.answer(
        PHONE,
        &as_extension(&vectors::read("rfc4475", "cparam02.dat"), "watson", "1001"),
    );
    assert_eq!(
        r.uris(),
        vec!["sip:+19725552222@gw1.example.net;unknownparam"]
    );
    let fetched = b.answer(PHONE, &reg("1001", "fetch", 1, ""));
    assert_eq!(
        fetched.uris(),
        vec!["sip:+19725552222@gw1.example.net;unknownparam"]
    );
}

/// RFC 4475 §3.3.14 regescrt: the escaped `?Route=` header stays in the binding's URI.
#[test]
fn rfc4475_regescrt() {
    let mut b = Bench::new(no_auth());
    let r = b.answer(
        PHONE,
        &as_extension(&vectors::read("rfc4475", "regescrt.dat"), "user", "1001"),
    );
    assert_eq!(
        r.uris(),
        vec!["sip:user@example.com?Route=%3Csip:sip.example.com%3E"]
    );
    assert!(!r.text.contains("\r\nRoute:"));
}

/// RFC 4475 §3.3.4 unksm2 (To is `isbn:`) is 400 for a registrar; §3.1.2.13 regbadct (an
/// addr-spec Contact with `?`) is 400.
#[test]
fn rfc4475_unksm2_and_regbadct() {
    let mut b = Bench::new(no_auth());
    let r = b.answer(PHONE, &vectors::read("rfc4475", "unksm2.dat"));
    assert_eq!(
        (r.status, r.reason.as_str()),
        (400, "Bad Request - To must be a SIP or SIPS URI")
    );
    let r = b.answer(
        PHONE,
        &as_extension(&vectors::read("rfc4475", "regbadct.dat"), "user", "1001"),
    );
    assert_eq!(r.status, 400);
    assert!(b.journal.is_empty());
}

/// RFC 4475 §3.3.7 regaut01: an unknown Authorization scheme is ignored when not
/// authenticating (200 to the query), and answered with a Digest challenge when authenticating.
#[test]
fn rfc4475_regaut01() {
    let vector = as_extension(&vectors::read("rfc4475", "regaut01.dat"), "j.user", "1001");
    let mut b = Bench::new(no_auth());
    let r = b.answer(PHONE, &vector);
    assert_eq!((r.status, r.contacts.len()), (200, 0));
    let mut b = Bench::new(digest());
    let (_, algorithms, _) = challenge(&b.answer(PHONE, &vector));
    assert_eq!(algorithms, vec!["SHA-256", "MD5"]);
}

/// The REGISTER flows of RFC 3261 §24.1, RFC 3665 §2 and RFC 5118, registered as provisioned
/// numbers: register, add a non-SIP Contact, fetch, remove with `*`.
#[test]
fn register_flows() {
    let flow = |file: &str, user: &str| as_extension(&vectors::read("flows", file), user, "1001");
    let mut b = Bench::new(no_auth());
    let r = b.answer(PHONE, &flow("rfc3261-24.1-F1-register.sip", "bob"));
    assert_eq!(r.contacts, vec![("sip:bob@192.0.2.4".into(), Some(7200))]);
    assert_eq!(
        r.to,
        addr(PHONE),
        "symmetric response routing: back to the source, rport or not"
    );

    let mut b = Bench::new(no_auth());
    let r = b.answer(PHONE, &flow("rfc3665-2.1-F1-register.sip", "bob"));
    assert_eq!(
        r.contacts,
        vec![("sips:bob@client.biloxi.example.com".into(), Some(3600))]
    );
    // F1 of 2.2 adds a mailto: binding (its Digest row is for a realm we do not check).
    let r = b.answer(
        PHONE,
        &flow("rfc3665-2.2-F1-register-mailto-contact.sip", "bob"),
    );
    assert_eq!(r.status, 200);
    let mut uris = r.uris();
    uris.sort();
    assert_eq!(
        uris,
        vec![
            "mailto:bob@biloxi.example.com",
            "sips:bob@client.biloxi.example.com"
        ]
    );
    assert_eq!(
        b.core.targets(b"1001").count(),
        0,
        "neither sips: over UDP nor mailto: is a target"
    );
    let r = b.answer(
        PHONE,
        &flow("rfc3665-2.3-F1-register-fetch-bindings.sip", "bob"),
    );
    assert_eq!(r.contacts.len(), 2);
    // 2.4 reuses Call-ID and CSeq 1 of the requests that created both bindings: a
    // retransmission by our rule, so it changes nothing; with the next CSeq it removes all.
    let star = flow("rfc3665-2.4-F1-register-contact-star-expires-0.sip", "bob");
    assert_eq!(b.answer(PHONE, &star).contacts.len(), 2);
    let star = String::from_utf8(star)
        .unwrap()
        .replace("CSeq: 1 REGISTER", "CSeq: 2 REGISTER");
    let r = b.answer(PHONE, star.as_bytes());
    assert_eq!((r.status, r.contacts.len()), (200, 0));
    assert!(b.journal.is_empty());

    let mut b = Bench::new(no_auth());
    let r = b.answer(
        PHONE,
        &flow("composed-register-multi-contact-q-expires.sip", "watson"),
    );
    assert_eq!(
        r.contacts,
        vec![
            ("sip:watson@worcester.bell-telephone.com".into(), Some(3600)),
            ("sip:watson@192.0.2.44:5062;transport=tcp".into(), Some(60)),
            ("mailto:watson@bell-telephone.com".into(), Some(7200)),
        ]
    );
    assert!(
        r.text.contains(";expires=3600;q=0.7\r\n") && r.text.contains(";expires=7200;q=0.1\r\n")
    );

    for file in [
        "rfc5118-4.1-ipv6-good-register.sip",
        "rfc5118-4.4-register-ipv6-with-port.sip",
    ] {
        let mut b = Bench::new(no_auth());
        let r = b.answer("[2001:db8::9:1]:5060", &flow(file, "user"));
        assert_eq!(
            r.contacts,
            vec![("sip:caller@[2001:db8::1]".into(), Some(3600))],
            "{file}"
        );
        let t: Vec<_> = b.core.targets(b"1001").map(|t| t.dest).collect();
        assert_eq!(
            t,
            vec![addr("[2001:db8::9:1]:5060")],
            "{file}: Contact IP differs from source"
        );
    }
}

/// Metrics: outcomes, rejects by reason, gauges.
#[test]
fn metrics_count_outcomes_and_rejects() {
    let mut b = Bench::new(no_auth());
    b.answer(
        PHONE,
        &reg("1001", "a", 1, "Contact: <sip:a@h>, <sip:b@h>\r\n"),
    );
    b.answer(PHONE, &reg("1002", "a", 1, "Contact: <sip:a@h>\r\n"));
    b.answer(
        PHONE,
        &reg("1001", "a", 1, "Contact: <sip:a@h>, <sip:b@h>\r\n"),
    );
    b.answer(PHONE, &reg("2000", "a", 1, "Contact: <sip:a@h>\r\n"));
    b.answer(
        PHONE,
        &reg("1001", "b", 1, "Contact: <sip:c@h>;expires=1\r\n"),
    );
    b.answer(PHONE, &reg("1001", "q", 1, ""));
    let m = metrics(&b.core);
    assert_eq!(m["sipfork_registrations_total{outcome=updated}"], 2);
    assert_eq!(m["sipfork_registrations_total{outcome=retransmission}"], 1);
    assert_eq!(m["sipfork_registrations_total{outcome=query}"], 1);
    assert_eq!(m["sipfork_registrations_total{outcome=rejected}"], 2);
    assert_eq!(
        m["sipfork_registrar_rejects_total{reason=unknown_extension}"],
        1
    );
    assert_eq!(
        m["sipfork_registrar_rejects_total{reason=interval_too_brief}"],
        1
    );
    assert_eq!(m["sipfork_bindings"], 3);
    assert_eq!(m["sipfork_registered_extensions"], 2);
}

/// Credentials given as precomputed HA1 (`ha1_md5`, `ha1_sha256`) verify like a password.
#[test]
fn digest_with_precomputed_ha1() {
    let hex = |algorithm| {
        Ha1::from_password(algorithm, b"0200", b"example.com", b"secret-0200")
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:5060\"\ndomain = \"example.com\"\n\
         [auth]\nmode = \"digest\"\nrealm = \"example.com\"\nalgorithms = [\"SHA-256\", \"MD5\"]\n\
         [[extensions]]\nnumbers = \"0200\"\nha1_md5 = \"{}\"\nha1_sha256 = \"{}\"\n",
        hex(Algorithm::Md5),
        hex(Algorithm::Sha256)
    );
    let mut b = Bench::new(Arc::new(Config::from_toml(&text).unwrap()));
    let contact = "Contact: <sip:0200@203.0.113.5:5070>\r\n";
    let (nonce, _, _) = challenge(&b.answer(PHONE, &reg("0200", "a", 1, contact)));
    for (cseq, nc, algorithm) in [(2, 1, Algorithm::Md5), (3, 2, Algorithm::Sha256)] {
        let auth = authorization("0200", "secret-0200", algorithm, &nonce, nc);
        let r = b.answer(PHONE, &reg("0200", "a", cseq, &format!("{auth}{contact}")));
        assert_eq!(r.status, 200, "{algorithm:?}");
    }
    let auth = authorization("0200", "pw-0200", Algorithm::Md5, &nonce, 3);
    assert_eq!(
        b.answer(PHONE, &reg("0200", "a", 4, &format!("{auth}{contact}")))
            .status,
        403
    );
}

/// A record whose number is no longer provisioned after a configuration change is dropped
/// from the journal at start-up.
#[test]
fn restore_drops_numbers_no_longer_provisioned() {
    let mut b = Bench::new(no_auth());
    b.answer(
        PHONE,
        &reg("1050", "a", 1, "Contact: <sip:1050@203.0.113.5>\r\n"),
    );
    let (key, value) = b
        .journal
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    let smaller = Arc::new(
        Config::from_toml(
            "[server]\nlisten = \"127.0.0.1:5060\"\ndomain = \"example.com\"\n[auth]\nmode = \"none\"\n\
             [[extensions]]\nnumbers = \"1000-1009\"\n",
        )
        .unwrap(),
    );
    let mut c = Bench::started_at(smaller, WALL_EPOCH_US + 1_000_000);
    assert_eq!(c.core.restore(c.now, &key, &value), Restore::NotProvisioned);
    c.drain_persist();
    assert_eq!(c.ops, vec![(false, key)]);
    assert_eq!(c.core.poll_timeout(), None);
}

// ---------------------------------------------------------------------------------------------
// Model check: random REGISTER sequences keep table, timers and journal in agreement
// ---------------------------------------------------------------------------------------------

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Register {
            ext: usize,
            devices: Vec<(u8, Option<u32>, bool)>,
            call: u8,
            cseq: u32,
            header_expires: Option<u32>,
        },
        Star {
            ext: usize,
            call: u8,
            cseq: u32,
        },
        Advance(u64),
        Restart,
    }

    const EXTS: [&str; 2] = ["0100", "1001"];

    fn op() -> impl Strategy<Value = Op> {
        let expires = prop_oneof![
            Just(None),
            Just(Some(0)),
            Just(Some(30)),
            Just(Some(60)),
            Just(Some(90)),
            Just(Some(100_000))
        ];
        prop_oneof![
            4 => (
                0..2usize,
                prop::collection::vec((0..4u8, expires.clone(), any::<bool>()), 0..4),
                0..3u8,
                1..6u32,
                expires,
            )
                .prop_map(|(ext, devices, call, cseq, header_expires)| Op::Register {
                    ext,
                    devices,
                    call,
                    cseq,
                    header_expires,
                }),
            1 => (0..2usize, 0..3u8, 1..6u32).prop_map(|(ext, call, cseq)| Op::Star { ext, call, cseq }),
            2 => (0..120u64).prop_map(Op::Advance),
            1 => Just(Op::Restart),
        ]
    }

    fn request(op: &Op) -> Option<(&'static str, Vec<u8>)> {
        match op {
            Op::Register {
                ext,
                devices,
                call,
                cseq,
                header_expires,
            } => {
                let mut rows = String::new();
                for (device, expires, instance) in devices {
                    rows.push_str(&format!("Contact: <sip:d{device}@203.0.113.{device}:5070>"));
                    if let Some(e) = expires {
                        rows.push_str(&format!(";expires={e}"));
                    }
                    if *instance {
                        rows.push_str(&format!(";+sip.instance=\"<urn:uuid:{device}>\""));
                    }
                    rows.push_str("\r\n");
                }
                if let Some(e) = header_expires {
                    rows.push_str(&format!("Expires: {e}\r\n"));
                }
                Some((
                    EXTS[*ext],
                    reg(EXTS[*ext], &format!("call{call}"), *cseq, &rows),
                ))
            }
            Op::Star { ext, call, cseq } => Some((
                EXTS[*ext],
                reg(
                    EXTS[*ext],
                    &format!("call{call}"),
                    *cseq,
                    "Contact: *\r\nExpires: 0\r\n",
                ),
            )),
            _ => None,
        }
    }

    type Snapshot = Vec<(String, SocketAddr, u64, Option<String>, u32)>;

    fn snapshot(b: &Bench, ext: &str) -> Snapshot {
        b.core
            .devices(b.now, ext.as_bytes())
            .unwrap()
            .into_iter()
            .map(|d| (d.contact, d.source, d.expires_at_unix, d.instance, d.cseq))
            .collect()
    }

    fn check(b: &Bench, policy_limit: usize) {
        let mut live = BTreeMap::new();
        b.core.for_each_binding_record(|k, v| {
            live.insert(k.to_vec(), v.to_vec());
        });
        assert_eq!(live, b.journal, "journal and table agree");
        let mut earliest: Option<u64> = None;
        for ext in EXTS {
            let devices = b.core.devices(b.now, ext.as_bytes()).unwrap();
            let limit = if ext == "0100" { policy_limit } else { 20 };
            assert!(devices.len() <= limit, "{ext}: {} devices", devices.len());
            for d in &devices {
                assert!(d.expires_in > 0);
                let at = d.expires_at_unix;
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        }
        match (earliest, b.core.poll_timeout()) {
            (None, _) => {}
            (Some(_), None) => panic!("bindings without an expiry timer"),
            (Some(at), Some(due)) => {
                let due_wall = (WALL_EPOCH_US + due.as_micros()) / 1_000_000;
                assert!(
                    due_wall <= at,
                    "timer due at {due_wall}, earliest expiry {at}"
                );
            }
        }
    }

    fn run(ops: &[Op], evict: bool) {
        let cfg = if evict {
            config("on_limit = \"evict-oldest\"", "mode = \"none\"")
        } else {
            no_auth()
        };
        let mut b = Bench::new(cfg.clone());
        for op in ops {
            match op {
                Op::Advance(s) => b.advance(secs(*s)),
                Op::Restart => {
                    let before: Vec<Snapshot> = EXTS.iter().map(|e| snapshot(&b, e)).collect();
                    let mut c = Bench::new(cfg.clone());
                    c.now = b.now;
                    c.core = {
                        let params = CoreParams {
                            shard: ShardId(0),
                            shards: 1,
                            local: addr("127.0.0.1:5060"),
                            secret: SECRET,
                            wall_epoch_us: WALL_EPOCH_US,
                            timers: TimerValues::default(),
                        };
                        Core::new(cfg.clone(), params, b.now)
                    };
                    c.journal = b.journal.clone();
                    for (k, v) in &b.journal {
                        assert_eq!(c.core.restore(c.now, k, v), Restore::Restored);
                    }
                    c.drain_persist();
                    assert!(c.ops.is_empty(), "restoring live bindings journals nothing");
                    let after: Vec<Snapshot> = EXTS.iter().map(|e| snapshot(&c, e)).collect();
                    assert_eq!(before, after);
                    b = c;
                }
                _ => {
                    let (ext, bytes) = request(op).expect("a request op");
                    let r = b.answer(PHONE, &bytes);
                    assert!(
                        [200, 400, 403, 423, 500].contains(&r.status),
                        "{} {}",
                        r.status,
                        r.reason
                    );
                    if r.status == 200 {
                        let mut listed = r.uris().iter().map(|u| u.to_string()).collect::<Vec<_>>();
                        let mut known = b.device_contacts(ext);
                        listed.sort();
                        known.sort();
                        assert_eq!(listed, known, "the 200 lists every current binding");
                    }
                }
            }
            check(&b, 2);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn random_register_sequences_keep_table_timers_and_journal_in_agreement(
            ops in prop::collection::vec(op(), 1..40),
            evict in any::<bool>(),
        ) {
            run(&ops, evict);
        }
    }
}

/// `[[device_classes]]`: a REGISTER is classified (first matching class, else ip_phone) and each
/// class has its own per-extension limit besides max_contacts, with the same on_limit rule;
/// the class survives the journal.
#[test]
fn device_classes_have_their_own_limits() {
    let classes = "[[device_classes]]\nname = \"mobile\"\nuser_agent = \"(?i)linkus.*(android|ios)|zoiper\"\n\
                   [[device_classes]]\nname = \"web\"\ncontact_param = \"+sip.ice\"\n";
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:5060\"\n{DOMAINS}\n[registrar]\nmin_expires = 60\n{{on_limit}}\n\
         [auth]\nmode = \"none\"\n{classes}\
         [[extensions]]\nnumbers = \"1000-1099\"\nmax_contacts = 4\nclasses = {{ mobile = 1, ip_phone = 2 }}\n"
    );
    let with_limit = |on_limit: &str| {
        Arc::new(
            Config::from_toml(&text.replace("{on_limit}", on_limit))
                .unwrap_or_else(|e| panic!("{e}")),
        )
    };
    let register = |b: &mut Bench, port: u16, ua: &str, params: &str| {
        let msg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:{port};branch=z9hG4bKc{port}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1000@example.com>;tag={port}\r\nTo: <sip:1000@example.com>\r\n\
             Call-ID: cls-{port}\r\nCSeq: 1 REGISTER\r\nContact: <sip:1000@203.0.113.5:{port}>{params}\r\n\
             User-Agent: {ua}\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
        );
        b.answer(&format!("203.0.113.5:{port}"), msg.as_bytes())
    };
    let mut b = Bench::new(with_limit("on_limit = \"reject\""));
    assert_eq!(register(&mut b, 5001, "Linkus Android 1.2", "").status, 200);
    let r = register(&mut b, 5002, "Zoiper rv2.10", "");
    assert_eq!(
        (r.status, r.reason.as_str()),
        (403, "Too many registered devices of this class")
    );
    assert_eq!(register(&mut b, 5003, "Yealink SIP-T46S", "").status, 200);
    assert_eq!(register(&mut b, 5004, "Yealink SIP-T46S", "").status, 200);
    assert_eq!(
        register(&mut b, 5005, "Yealink SIP-T46S", "").status,
        403,
        "ip_phone = 2"
    );
    assert_eq!(
        register(&mut b, 5006, "JsSIP", ";+sip.ice").status,
        200,
        "web: no class limit"
    );
    assert_eq!(
        register(&mut b, 5007, "JsSIP", ";+sip.ice").status,
        403,
        "max_contacts = 4"
    );
    let classes: Vec<String> = b
        .core
        .devices(b.now, b"1000")
        .unwrap()
        .into_iter()
        .map(|d| d.class)
        .collect();
    let mut sorted = classes.clone();
    sorted.sort();
    assert_eq!(sorted, ["ip_phone", "ip_phone", "mobile", "web"]);

    // evict-oldest evicts within the class.
    let mut b = Bench::new(with_limit("on_limit = \"evict-oldest\""));
    register(&mut b, 5001, "Yealink", "");
    b.advance(secs(1));
    register(&mut b, 5002, "Linkus iOS", "");
    b.advance(secs(1));
    let r = register(&mut b, 5003, "Zoiper", "");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.uris(),
        vec!["sip:1000@203.0.113.5:5003", "sip:1000@203.0.113.5:5001"]
    );
}

// ---------------------------------------------------------------------------------------------
// Durability: no 200 OK for a binding the journal could not take (issue 12)
// ---------------------------------------------------------------------------------------------

impl Bench {
    /// Hands one datagram to the core and reports the turn's journal write as failed.
    fn send_write_failed(&mut self, from: &str, bytes: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
        self.deliver(from, bytes);
        let mut pending = 0;
        self.core.pending_persist(|_| pending += 1);
        assert!(pending > 0, "the REGISTER changed bindings");
        self.core.persist_failed(self.now);
        self.take_outbox()
    }
}

fn assert_refused_unjournaled(r: &Response) {
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.header(HeaderName::RetryAfter).as_deref(), Some("10"));
    assert!(
        r.contacts.is_empty(),
        "a refusal lists no binding: {}",
        r.text
    );
    assert!(r.header(HeaderName::CSeq).unwrap().contains("REGISTER"));
    assert!(r
        .header(HeaderName::Via)
        .unwrap()
        .contains("received=203.0.113.5"));
}

/// A turn whose journal write failed: the new binding, the refresh and the removal are all
/// undone, and each REGISTER's 200 became a 503 with Retry-After.
#[test]
fn failed_journal_write_rolls_the_turn_back_and_refuses_its_registers() {
    let mut b = Bench::new(no_auth());
    let one = "Contact: <sip:1001@203.0.113.5:5070>;expires=600\r\n";
    assert_eq!(b.answer(PHONE, &reg("1001", "c1", 1, one)).status, 200);
    let before = b.core.devices(b.now, b"1001").unwrap();

    // A refresh with a new expiry and a second device, both in a failed turn.
    let two = "Contact: <sip:1001@203.0.113.5:5070>;expires=1200, <sip:1001@203.0.113.5:5080>\r\n";
    let sent = b.send_write_failed(PHONE, &reg("1001", "c1", 2, two));
    assert_eq!(sent.len(), 1);
    assert_refused_unjournaled(&Response::read(sent[0].0, sent[0].1.clone()));
    assert_eq!(b.core.devices(b.now, b"1001").unwrap(), before);

    // A removal in a failed turn: the binding stays.
    let sent = b.send_write_failed(PHONE, &reg("1001", "c1", 3, "Contact: *\r\nExpires: 0\r\n"));
    assert_refused_unjournaled(&Response::read(sent[0].0, sent[0].1.clone()));
    assert_eq!(b.core.devices(b.now, b"1001").unwrap(), before);

    // A first registration in a failed turn leaves nothing behind, timers included.
    let sent = b.send_write_failed(PHONE, &reg("1002", "c2", 1, one));
    assert_refused_unjournaled(&Response::read(sent[0].0, sent[0].1.clone()));
    assert!(b.core.devices(b.now, b"1002").unwrap().is_empty());
    b.advance(Duration::from_secs(700));
    assert!(
        b.core.devices(b.now, b"1001").unwrap().is_empty(),
        "expires as first stored"
    );
    assert_eq!(b.core.poll_timeout(), None, "no timer left behind");

    // The phone tries again once the journal takes records: accepted as usual.
    let r = b.answer(PHONE, &reg("1001", "c1", 4, two));
    assert_eq!(r.status, 200);
    assert_eq!(b.device_contacts("1001").len(), 2);
    assert_eq!(b.core.unjournaled_refusals(), 3);
}

/// While the journal is unavailable a REGISTER that would change a binding is refused at once;
/// queries are answered; once available again, REGISTERs are accepted.
#[test]
fn unavailable_journal_refuses_changes_but_answers_queries() {
    let mut b = Bench::new(no_auth());
    let one = "Contact: <sip:1001@203.0.113.5:5070>;expires=600\r\n";
    assert_eq!(b.answer(PHONE, &reg("1001", "c1", 1, one)).status, 200);
    let journal = b.journal.clone();
    b.core.set_journal_available(false);
    let r = b.answer(
        PHONE,
        &reg("1001", "c1", 2, "Contact: <sip:1001@203.0.113.5:5090>\r\n"),
    );
    assert_refused_unjournaled(&r);
    let r = b.answer(PHONE, &reg("1003", "c3", 1, one));
    assert_refused_unjournaled(&r);
    assert!(b.core.devices(b.now, b"1003").unwrap().is_empty());
    let q = b.answer(PHONE, &reg("1001", "c9", 1, ""));
    assert_eq!(
        (q.status, q.uris()),
        (200, vec!["sip:1001@203.0.113.5:5070"])
    );
    assert_eq!(b.journal, journal, "nothing reached the journal");
    b.core.set_journal_available(true);
    let r = b.answer(PHONE, &reg("1003", "c3", 2, one));
    assert_eq!(r.status, 200);
    assert_eq!(b.device_contacts("1003").len(), 1);
}

/// A binding registered over a connection is restored with the connection's address as its
/// destination (what it had), never one recomputed from its Contact: under `nat = "auto"` a
/// Contact naming another port of the same IP would otherwise take over after a restart.
#[test]
fn restore_keeps_a_flow_binding_at_its_connection_address() {
    let mut b = Bench::new(no_auth());
    let bytes = reg(
        "1050",
        "a",
        1,
        "Contact: <sip:1050@203.0.113.5:6000;transport=tcp>\r\n",
    );
    let bytes = String::from_utf8(bytes)
        .unwrap()
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let d = Datagram {
        from: addr(PHONE),
        local: addr("127.0.0.1:5060"),
        bytes: bytes.as_bytes(),
        transport: sipfork::core::transport::Transport::Tcp,
        peer_cert: None,
    };
    assert_eq!(b.core.handle_datagram(b.now, d), Inbound::Handled);
    b.drain_persist();
    let listed = |core: &Core, now| {
        let d = core.devices(now, b"1050").unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        (d[0].destination, d[0].transport)
    };
    assert_eq!(listed(&b.core, b.now), (addr(PHONE), "TCP"));
    let (key, value) = b.journal.iter().next().unwrap();
    let mut c = Bench::started_at(no_auth(), WALL_EPOCH_US + 1_000_000);
    assert_eq!(c.core.restore(c.now, key, value), Restore::Restored);
    assert_eq!(listed(&c.core, c.now), (addr(PHONE), "TCP"));
}
