//! The harness's SIP messages and identifiers, and the reflector routing hint.
//!
//! Identifiers carry what the harness needs to find its state without a lookup table: the
//! Call-ID names the call (`c<N>`), the device's REGISTER dialog (`r<D>`) or an extension's
//! clearing REGISTER (`x<E>`), plus the run id, so a datagram of an earlier run is recognised and
//! ignored. A device's To tag is `d<K>` (its position in the extension), so the caller maps a
//! response to the device that sent it.
//!
//! Requests are written here; responses and CANCEL / hop-by-hop ACK are written by
//! `sipfork::sip::build`, the proxy's own splicing builder.
//!
//! Reflector hint (null reflector mode, see `reflect.rs`): the first header row of every
//! datagram the harness sends to the reflector is
//! `X-Reflect: <call>.<device>.<status> <ip:port>/<size>/<kind> ...`: for each datagram a forking
//! proxy would send in answer, its destination, size and meaning. Invariant: the hint row comes
//! right after the start line, so it survives truncation to any size the reflector is asked for
//! (sizes below start line + hint are raised to that length).

use std::net::SocketAddr;

use sipfork::sip::build::push_u32;

use crate::plan::Plan;

/// What a Call-ID names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialog {
    /// Call number `c`.
    Call(u32),
    /// The REGISTER dialog of global device `d`.
    Register(u32),
    /// The binding-clearing REGISTER of extension `e`.
    Clear(u32),
}

const HOST: &[u8] = b"@sipfork-load";

/// Appends the Call-ID value for `dialog` in run `run`; a call's number is `call_base + c`
/// (`load.call_base`).
pub fn push_call_id(out: &mut Vec<u8>, dialog: Dialog, run: u32, call_base: u32) {
    let (prefix, n) = match dialog {
        Dialog::Call(c) => (b'c', call_base.wrapping_add(c)),
        Dialog::Register(d) => (b'r', d),
        Dialog::Clear(e) => (b'x', e),
    };
    out.push(prefix);
    push_u32(out, n);
    out.push(b'.');
    push_hex(out, run);
    out.extend_from_slice(HOST);
}

/// Reads a Call-ID written by [`push_call_id`] in run `run` with `call_base`; `None` for
/// anything else.
pub fn parse_call_id(value: &[u8], run: u32, call_base: u32) -> Option<Dialog> {
    let rest = value.strip_suffix(HOST)?;
    let (&prefix, rest) = rest.split_first()?;
    let dot = rest.iter().position(|&b| b == b'.')?;
    let n = parse_u32(rest.get(..dot)?)?;
    if parse_hex(rest.get(dot + 1..)?)? != run {
        return None;
    }
    match prefix {
        b'c' => n.checked_sub(call_base).map(Dialog::Call),
        b'r' => Some(Dialog::Register(n)),
        b'x' => Some(Dialog::Clear(n)),
        _ => None,
    }
}

/// The device position from a To tag `d<K>`.
pub fn parse_device_tag(tag: &[u8]) -> Option<u32> {
    parse_u32(tag.strip_prefix(b"d")?)
}

/// Appends a device To tag.
pub fn push_device_tag(out: &mut Vec<u8>, k: u32) {
    out.push(b'd');
    push_u32(out, k);
}

/// Decimal digits only, no sign, fits a `u32`.
pub fn parse_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 10 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    u32::try_from(n).ok()
}

fn parse_hex(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let s = std::str::from_utf8(digits).ok()?;
    u32::from_str_radix(s, 16).ok()
}

fn push_hex(out: &mut Vec<u8>, n: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut started = false;
    for shift in (0..8).rev() {
        let nibble = ((n >> (shift * 4)) & 0xf) as usize;
        if nibble != 0 || started || shift == 0 {
            out.push(HEX[nibble]);
            started = true;
        }
    }
}

/// `number@domain`, the user part of every address the harness writes.
fn push_aor(out: &mut Vec<u8>, number: u32, domain: &str) {
    push_u32(out, number);
    out.push(b'@');
    out.extend_from_slice(domain.as_bytes());
}

/// Appends `ip:port`.
pub fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    sipfork::sip::build::push_hostport(out, addr);
}

/// Appends the Via's `SIP/2.0/UDP ` (or `TCP`, `TLS`: the run's transport).
pub fn push_via_proto(out: &mut Vec<u8>, plan: &Plan) {
    out.extend_from_slice(b"SIP/2.0/");
    out.extend_from_slice(plan.scenario.topology.transport.via_token().as_bytes());
    out.push(b' ');
}

/// Appends a harness Contact's `;transport=tcp` (or `tls`; nothing over UDP): the device is
/// reached over the connection it registered on, whose local address is the Contact's.
pub fn push_transport_param(out: &mut Vec<u8>, plan: &Plan) {
    out.extend_from_slice(plan.scenario.topology.transport.uri_param().as_bytes());
}

/// Appends a branch `z9hG4bK<run>.<tag><n>` (tag: which request of the call).
pub fn push_branch(out: &mut Vec<u8>, run: u32, tag: &[u8], n: u32, extra: Option<u32>) {
    out.extend_from_slice(b"z9hG4bK");
    push_hex(out, run);
    out.push(b'.');
    out.extend_from_slice(tag);
    push_u32(out, n);
    if let Some(x) = extra {
        out.push(b'.');
        push_u32(out, x);
    }
}

const SDP: &[u8] = b"v=0\r\no=caller 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// The caller's INVITE of call `c` (the same bytes every time: retransmissions and the reflector
/// mode's device side rebuild it).
pub fn invite(plan: &Plan, c: u32, out: &mut Vec<u8>) {
    invite_with(plan, c, 1, None, out);
}

/// The digest-uri of call `c`'s INVITE (its Request-URI).
pub fn invite_uri(plan: &Plan, c: u32) -> Vec<u8> {
    let mut uri = b"sip:".to_vec();
    push_aor(&mut uri, plan.number(plan.extension_of(c)), &plan.domain);
    uri
}

/// Call `c`'s INVITE again after a 407 (RFC 3261 §22.3): CSeq 2, a new branch, and a
/// `Proxy-Authorization` with the called extension's credentials.
pub fn invite_authorized(plan: &Plan, c: u32, auth: &Credentials<'_>, out: &mut Vec<u8>) {
    invite_with(plan, c, 2, Some(auth), out);
}

fn invite_with(plan: &Plan, c: u32, cseq: u32, auth: Option<&Credentials<'_>>, out: &mut Vec<u8>) {
    let caller = plan.callers[plan.caller_of(c) as usize];
    let number = plan.number(plan.extension_of(c));
    out.extend_from_slice(b"INVITE sip:");
    push_aor(out, number, &plan.domain);
    out.extend_from_slice(b" SIP/2.0\r\nVia: ");
    push_via_proto(out, plan);
    push_addr(out, caller);
    out.extend_from_slice(b";branch=");
    push_branch(
        out,
        plan.run_id,
        if cseq == 1 { b"i" } else { b"j" },
        plan.call_number(c),
        None,
    );
    out.extend_from_slice(b";rport\r\nMax-Forwards: 70\r\nFrom: <sip:caller@");
    out.extend_from_slice(plan.domain.as_bytes());
    out.extend_from_slice(b">;tag=f");
    push_u32(out, plan.call_number(c));
    out.extend_from_slice(b"\r\nTo: <sip:");
    push_aor(out, number, &plan.domain);
    out.extend_from_slice(b">\r\nCall-ID: ");
    push_call_id(
        out,
        Dialog::Call(c),
        plan.run_id,
        plan.scenario.load.call_base,
    );
    out.extend_from_slice(b"\r\nCSeq: ");
    push_u32(out, cseq);
    out.extend_from_slice(b" INVITE\r\nContact: <sip:caller@");
    push_addr(out, caller);
    push_transport_param(out, plan);
    out.extend_from_slice(b">\r\n");
    if let Some(a) = auth {
        push_credentials(out, b"Proxy-Authorization", number, &invite_uri(plan, c), a);
    }
    out.extend_from_slice(
        b"User-Agent: sipfork-load\r\nContent-Type: application/sdp\r\nContent-Length: ",
    );
    push_u32(out, SDP.len() as u32);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(SDP);
}

/// Appends a `name: Digest ...` row with `a` for user `number` and digest-uri `uri`.
fn push_credentials(out: &mut Vec<u8>, name: &[u8], number: u32, uri: &[u8], a: &Credentials<'_>) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": Digest username=\"");
    push_u32(out, number);
    out.extend_from_slice(b"\", realm=\"");
    out.extend_from_slice(a.realm);
    out.extend_from_slice(b"\", nonce=\"");
    out.extend_from_slice(a.nonce);
    out.extend_from_slice(b"\", uri=\"");
    out.extend_from_slice(uri);
    out.extend_from_slice(b"\", response=\"");
    out.extend_from_slice(a.response);
    out.extend_from_slice(b"\", algorithm=");
    out.extend_from_slice(a.algorithm.as_bytes());
    out.extend_from_slice(b", cnonce=\"");
    out.extend_from_slice(a.cnonce);
    out.extend_from_slice(b"\", qop=auth, nc=");
    push_nc(out, a.nc);
    if let Some(opaque) = a.opaque {
        out.extend_from_slice(b", opaque=\"");
        out.extend_from_slice(opaque);
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
}

/// Digest credentials to put in a REGISTER or an INVITE.
#[derive(Clone, Copy, Debug)]
pub struct Credentials<'a> {
    /// Realm of the challenge.
    pub realm: &'a [u8],
    /// Nonce of the challenge.
    pub nonce: &'a [u8],
    /// Opaque of the challenge, if any.
    pub opaque: Option<&'a [u8]>,
    /// Algorithm name as challenged.
    pub algorithm: &'a str,
    /// Nonce-count (written as 8 hex digits).
    pub nc: u32,
    /// The computed response (hex).
    pub response: &'a [u8],
    /// Client nonce.
    pub cnonce: &'a [u8],
}

/// Appends the 8-hex-digit nonce-count.
pub fn push_nc(out: &mut Vec<u8>, nc: u32) {
    for shift in (0..8).rev() {
        out.push(b"0123456789abcdef"[((nc >> (shift * 4)) & 0xf) as usize]);
    }
}

/// The digest-uri of every REGISTER (its Request-URI).
pub fn register_uri(plan: &Plan) -> Vec<u8> {
    let mut uri = b"sip:".to_vec();
    uri.extend_from_slice(plan.domain.as_bytes());
    uri
}

/// A REGISTER of global device `d` binding its own socket as Contact (`clear`: instead, the
/// `Contact: *` removal of every binding of the device's extension).
pub fn register(
    plan: &Plan,
    d: u32,
    cseq: u32,
    clear: bool,
    auth: Option<&Credentials<'_>>,
    out: &mut Vec<u8>,
) {
    let e = d / plan.width();
    let k = d % plan.width();
    let addr = plan.devices[d as usize];
    let number = plan.number(e);
    let dialog = if clear {
        Dialog::Clear(e)
    } else {
        Dialog::Register(d)
    };
    out.extend_from_slice(b"REGISTER ");
    out.extend_from_slice(&register_uri(plan));
    out.extend_from_slice(b" SIP/2.0\r\nVia: ");
    push_via_proto(out, plan);
    push_addr(out, addr);
    out.extend_from_slice(b";branch=");
    push_branch(
        out,
        plan.run_id,
        if clear { b"x" } else { b"r" },
        d,
        Some(cseq),
    );
    out.extend_from_slice(b";rport\r\nMax-Forwards: 70\r\nFrom: <sip:");
    push_aor(out, number, &plan.domain);
    out.extend_from_slice(b">;tag=r");
    push_u32(out, d);
    out.extend_from_slice(b"\r\nTo: <sip:");
    push_aor(out, number, &plan.domain);
    out.extend_from_slice(b">\r\nCall-ID: ");
    push_call_id(out, dialog, plan.run_id, plan.scenario.load.call_base);
    out.extend_from_slice(b"\r\nCSeq: ");
    push_u32(out, cseq);
    out.extend_from_slice(b" REGISTER\r\n");
    if clear {
        out.extend_from_slice(b"Contact: *\r\nExpires: 0\r\n");
    } else {
        out.extend_from_slice(b"Contact: <sip:");
        push_u32(out, number);
        out.push(b'@');
        push_addr(out, addr);
        push_transport_param(out, plan);
        out.push(b'>');
        if let Some(q) = plan.scenario.device(k).q {
            out.extend_from_slice(format!(";q={q:.1}").as_bytes());
        }
        out.extend_from_slice(b"\r\nExpires: ");
        push_u32(out, plan.scenario.registration.expires);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(a) = auth {
        push_credentials(out, b"Authorization", number, &register_uri(plan), a);
    }
    out.extend_from_slice(b"User-Agent: sipfork-load device\r\nContent-Length: 0\r\n\r\n");
}

/// What a datagram means to its receiver in reflector mode (one letter on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meaning {
    /// The INVITE, forwarded to a device.
    Invite,
    /// 100 Trying to the caller.
    Trying,
    /// A device's 180, forwarded to the caller.
    Ringing,
    /// A device's 2xx to the INVITE, forwarded to the caller.
    Answer,
    /// A final non-2xx to the INVITE (status in the hint's origin), to the caller.
    Failure,
    /// CANCEL to a device.
    Cancel,
    /// 200 to the caller's CANCEL.
    CancelOk,
    /// ACK to a device (for its 2xx, or hop-by-hop for its non-2xx).
    Ack,
    /// BYE to a device.
    Bye,
    /// 200 to a BYE, to the caller.
    ByeOk,
    /// A response to a device's REGISTER.
    RegisterOk,
}

impl Meaning {
    const TABLE: [(Meaning, u8); 11] = [
        (Meaning::Invite, b'I'),
        (Meaning::Trying, b'T'),
        (Meaning::Ringing, b'R'),
        (Meaning::Answer, b'O'),
        (Meaning::Failure, b'F'),
        (Meaning::Cancel, b'C'),
        (Meaning::CancelOk, b'K'),
        (Meaning::Ack, b'A'),
        (Meaning::Bye, b'B'),
        (Meaning::ByeOk, b'Y'),
        (Meaning::RegisterOk, b'G'),
    ];

    fn letter(self) -> u8 {
        Self::TABLE
            .iter()
            .find(|(m, _)| *m == self)
            .map_or(b'?', |(_, l)| *l)
    }

    fn from_letter(l: u8) -> Option<Meaning> {
        Self::TABLE.iter().find(|(_, x)| *x == l).map(|(m, _)| *m)
    }
}

/// Who sent what a hint describes: the call (or device dialog), the device position, a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Call number, or global device for REGISTERs.
    pub id: u32,
    /// Device position within the extension (0 when from the caller).
    pub device: u32,
    /// Status of a response (0 for requests).
    pub status: u16,
}

/// One datagram the reflector is to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reflect {
    /// Destination.
    pub to: SocketAddr,
    /// Size in bytes.
    pub size: u32,
    /// What it means to the receiver.
    pub meaning: Meaning,
}

/// Name of the hint header, with the separator.
pub const HINT_PREFIX: &[u8] = b"X-Reflect: ";

/// Appends `msg` with the hint row inserted after its start line.
pub fn push_with_hint(out: &mut Vec<u8>, msg: &[u8], origin: Origin, reflects: &[Reflect]) {
    let line_end = msg
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(msg.len(), |i| i + 2);
    out.extend_from_slice(&msg[..line_end]);
    out.extend_from_slice(HINT_PREFIX);
    push_u32(out, origin.id);
    out.push(b'.');
    push_u32(out, origin.device);
    out.push(b'.');
    push_u32(out, u32::from(origin.status));
    for r in reflects {
        out.push(b' ');
        push_addr(out, r.to);
        out.push(b'/');
        push_u32(out, r.size);
        out.push(b'/');
        out.push(r.meaning.letter());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&msg[line_end..]);
}

/// The hint row's value (after `X-Reflect: `, without CRLF), if the datagram has one.
pub fn hint_value(datagram: &[u8]) -> Option<&[u8]> {
    let line_end = memchr_crlf(datagram)? + 2;
    let rest = datagram.get(line_end..)?.strip_prefix(HINT_PREFIX)?;
    let end = memchr_crlf(rest)?;
    rest.get(..end)
}

fn memchr_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// Iterates a hint value's entries as `(destination, size, meaning letter)`, skipping the
/// origin token; malformed entries end the iteration.
pub fn hint_entries(value: &[u8]) -> impl Iterator<Item = (SocketAddr, u32, u8)> + '_ {
    value.split(|&b| b == b' ').skip(1).map_while(|token| {
        let mut parts = token.split(|&b| b == b'/');
        let addr = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        let size = parse_u32(parts.next()?)?;
        let letter = *parts.next()?.first()?;
        Some((addr, size, letter))
    })
}

/// Reads a received hint: the origin and what the datagram means to `me`.
pub fn read_hint(datagram: &[u8], me: SocketAddr) -> Option<(Origin, Meaning)> {
    let value = hint_value(datagram)?;
    let origin_token = value.split(|&b| b == b' ').next()?;
    let mut parts = origin_token.split(|&b| b == b'.');
    let origin = Origin {
        id: parse_u32(parts.next()?)?,
        device: parse_u32(parts.next()?)?,
        status: u16::try_from(parse_u32(parts.next()?)?).ok()?,
    };
    let (_, _, letter) = hint_entries(value).find(|(to, _, _)| *to == me)?;
    Some((origin, Meaning::from_letter(letter)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Scenario, Transport};
    use sipfork::sip;

    fn plan() -> Plan {
        Plan::new(
            Scenario::preset("fork3").unwrap(),
            "127.0.0.1:5060".parse().unwrap(),
            false,
            0xbeef,
        )
        .unwrap()
    }

    #[test]
    fn call_ids_round_trip_and_other_runs_are_refused() {
        for dialog in [
            Dialog::Call(0),
            Dialog::Call(4_000_000),
            Dialog::Register(17),
        ] {
            let mut v = Vec::new();
            push_call_id(&mut v, dialog, 0xbeef, 0);
            assert_eq!(parse_call_id(&v, 0xbeef, 0), Some(dialog));
            assert_eq!(parse_call_id(&v, 0xbeee, 0), None);
        }
        // With a call base, a call carries base + c and reads back as c; a number below the
        // base is no call of this run. REGISTER dialogs are not offset.
        let mut v = Vec::new();
        push_call_id(&mut v, Dialog::Call(5), 0xbeef, 999_990);
        assert_eq!(v, b"c999995.beef@sipfork-load");
        assert_eq!(parse_call_id(&v, 0xbeef, 999_990), Some(Dialog::Call(5)));
        assert_eq!(parse_call_id(&v, 0xbeef, 999_996), None);
        let mut v = Vec::new();
        push_call_id(&mut v, Dialog::Register(5), 0xbeef, 999_990);
        assert_eq!(
            parse_call_id(&v, 0xbeef, 999_990),
            Some(Dialog::Register(5))
        );
        for junk in [
            &b""[..],
            b"c.beef@sipfork-load",
            b"cx1.beef@sipfork-load",
            b"c1.beef@x",
        ] {
            assert_eq!(parse_call_id(junk, 0xbeef, 0), None);
        }
        assert_eq!(parse_device_tag(b"d2"), Some(2));
        assert_eq!(parse_device_tag(b"x2"), None);
    }

    #[test]
    fn the_invite_and_registers_parse_and_pass_the_proxy_checks() {
        let p = plan();
        let mut v = Vec::new();
        invite(&p, 1234, &mut v);
        let m = sip::parse(&v).unwrap();
        sip::check_request(&m).unwrap();
        assert_eq!(
            parse_call_id(m.call_id().unwrap(), p.run_id, 0),
            Some(Dialog::Call(1234))
        );
        assert_eq!(m.request_uri_raw().unwrap(), b"sip:1234@127.0.0.1");
        assert_eq!(m.body().len(), SDP.len());
        for clear in [false, true] {
            let mut v = Vec::new();
            let creds = Credentials {
                realm: b"r",
                nonce: b"n0",
                opaque: Some(b"o"),
                algorithm: "MD5",
                nc: 26,
                response: b"abcd",
                cnonce: b"cn",
            };
            register(&p, 4, 3, clear, Some(&creds), &mut v);
            let m = sip::parse(&v).unwrap();
            sip::check_request(&m).unwrap();
            let c = m.authorization().unwrap().unwrap();
            assert_eq!((c.nonce, c.nc), (&b"n0"[..], Some(&b"0000001a"[..])));
            assert_eq!(m.cseq().unwrap().number, 3);
            assert_eq!(m.contacts().count(), 1);
        }
    }

    #[test]
    fn over_tcp_and_tls_the_via_and_contacts_name_the_transport() {
        let find = |v: &[u8], needle: &str| String::from_utf8_lossy(v).contains(needle);
        for (t, via, param) in [
            (Transport::Udp, "Via: SIP/2.0/UDP 127.0.0.1:", ""),
            (
                Transport::Tcp,
                "Via: SIP/2.0/TCP 127.0.0.1:",
                ";transport=tcp",
            ),
            (
                Transport::Tls,
                "Via: SIP/2.0/TLS 127.0.0.1:",
                ";transport=tls",
            ),
        ] {
            let mut p = plan();
            p.scenario.topology.transport = t;
            let (mut inv, mut reg) = (Vec::new(), Vec::new());
            invite(&p, 7, &mut inv);
            register(&p, 4, 1, false, None, &mut reg);
            for m in [&inv, &reg] {
                sip::check_request(&sip::parse(m).unwrap()).unwrap();
                assert!(find(m, via), "{t:?}: {}", String::from_utf8_lossy(m));
            }
            assert!(find(
                &inv,
                &format!("Contact: <sip:caller@127.0.0.1:19000{param}>")
            ));
            assert!(find(
                &reg,
                &format!("Contact: <sip:1001@127.0.0.1:20004{param}>")
            ));
        }
    }

    #[test]
    fn hints_survive_truncation_and_name_each_receiver() {
        let p = plan();
        let mut msg = Vec::new();
        invite(&p, 9, &mut msg);
        let reflects = [
            Reflect {
                to: p.callers[0],
                size: 300,
                meaning: Meaning::Trying,
            },
            Reflect {
                to: p.devices[0],
                size: 1000,
                meaning: Meaning::Invite,
            },
        ];
        let origin = Origin {
            id: 9,
            device: 0,
            status: 0,
        };
        let mut out = Vec::new();
        push_with_hint(&mut out, &msg, origin, &reflects);
        let entries: Vec<_> = hint_entries(hint_value(&out).unwrap()).collect();
        assert_eq!(
            entries,
            vec![(p.callers[0], 300, b'T'), (p.devices[0], 1000, b'I')]
        );
        let cut = &out[..200];
        assert_eq!(
            read_hint(cut, p.callers[0]),
            Some((origin, Meaning::Trying))
        );
        assert_eq!(
            read_hint(cut, p.devices[0]),
            Some((origin, Meaning::Invite))
        );
        assert_eq!(read_hint(cut, p.devices[1]), None);
        assert_eq!(read_hint(&msg, p.devices[0]), None, "no hint, no meaning");
        // The hinted message is still SIP.
        sip::parse(&out).unwrap();
    }
}
