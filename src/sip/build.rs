//! Writing messages by splicing: unchanged header rows are copied byte for byte from the message
//! they came from, and only what a proxy or registrar must change is written anew (RFC 3261
//! §8.2.6 responses, §16.6 forwarding, §16.7 step 3 response forwarding, §9.1 CANCEL,
//! §17.1.1.3 ACK).
//!
//! Every function appends to a caller-owned buffer (in practice the shard's outbox arena), so a
//! message costs no allocation once the buffer has grown. Inputs are messages that passed
//! [`crate::sip::parse`] (and, for requests, [`crate::sip::check_request`]); the functions never
//! panic, and what they write parses back to the same fields (`tests/core/properties.rs`).

use std::net::IpAddr;

use super::header::{CommaSplit, Header, HeaderName};
use super::headers::via::Via;
use super::message::Message;

/// Appends `n` in decimal.
pub fn push_u32(out: &mut Vec<u8>, n: u32) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends an IP address as a SIP host (IPv6 in brackets).
pub fn push_host(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        // Written by hand: every forwarded request and local response carries one (received,
        // our Via, Record-Route), and the formatting machinery costs more than the rest of a
        // Via fix.
        IpAddr::V4(v4) => {
            // Into a stack buffer first: one copy into `out` instead of seven.
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            out.extend_from_slice(&buf[..n]);
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "[{v6}]");
        }
    }
}

/// Appends `host:port` for a socket address (IPv6 in brackets).
pub fn push_hostport(out: &mut Vec<u8>, addr: std::net::SocketAddr) {
    push_host(out, addr.ip());
    out.push(b':');
    push_u32(out, u32::from(addr.port()));
}

fn push_row(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_content_length(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(b"Content-Length: ");
    push_u32(out, u32::try_from(len).unwrap_or(u32::MAX));
    out.extend_from_slice(b"\r\n");
}

/// Where a value lies within its row, as offsets into the row.
fn sub_range(row: &[u8], sub: &[u8]) -> Option<(usize, usize)> {
    let start = (sub.as_ptr() as usize).checked_sub(row.as_ptr() as usize)?;
    let end = start.checked_add(sub.len())?;
    (end <= row.len()).then_some((start, end))
}

/// Is `via` the parse of the first value of row `h`: its octets start where the value does,
/// after any leading whitespace (what `parse_via` on `h.value` reads)?
fn is_first_value(h: &Header<'_>, via: &Via<'_>) -> bool {
    let lead = h
        .value
        .iter()
        .take_while(|&&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .count();
    let same = sub_range(h.value, via.raw).is_some_and(|(start, _)| start == lead);
    debug_assert!(
        !same
            || super::headers::via::parse_via(&mut super::scan::Cursor::new(h.value))
                .is_ok_and(|v| v == *via),
        "a Via given for the top row is that row's first value as parsed"
    );
    same
}

/// Rows copied verbatim, gathered into runs of adjacent rows of the source message so that each
/// run costs one copy instead of one per row.
struct Verbatim<'b> {
    source: &'b [u8],
    run: Option<(usize, usize)>,
}

impl<'b> Verbatim<'b> {
    fn new(msg: &Message<'b>) -> Self {
        Verbatim {
            source: msg.bytes(),
            run: None,
        }
    }

    /// Queues `row` (a row of the source message) for copying after what is queued.
    fn add(&mut self, out: &mut Vec<u8>, row: &'b [u8]) {
        match (self.run, sub_range(self.source, row)) {
            (Some((start, end)), Some((row_start, row_end))) if end == row_start => {
                self.run = Some((start, row_end));
            }
            (_, Some(range)) => {
                self.flush(out);
                self.run = Some(range);
            }
            (_, None) => {
                self.flush(out);
                out.extend_from_slice(row);
            }
        }
    }

    /// How many bytes are queued: where the next row added lands, counted from the buffer's end.
    fn pending(&self) -> usize {
        self.run.map_or(0, |(start, end)| end - start)
    }

    /// Copies what is queued; call before writing anything else.
    fn flush(&mut self, out: &mut Vec<u8>) {
        if let Some((start, end)) = self.run.take() {
            out.extend_from_slice(self.source.get(start..end).unwrap_or(&[]));
        }
    }
}

/// Copies `row` without its first comma-separated value (§16.7 step 3, §16.4 Route removal).
/// A row with one value disappears entirely. Empty elements after the first value (`a,,b`, a
/// trailing comma) are no values: the copy starts at the next real one, or the row goes, so the
/// next hop never gets an empty row or one that starts with a comma.
fn push_row_without_first_value(out: &mut Vec<u8>, h: &Header<'_>) {
    if memchr::memchr(b',', h.value).is_none() {
        // One value (ours, nearly always): the row goes. A vectorised look for a comma is much
        // cheaper than the quote-aware split below.
        return;
    }
    let mut values = CommaSplit::new(h.value, true);
    let first = values.next();
    let Some(second) = values.find(|v| !v.is_empty()) else {
        return;
    };
    match (
        first.and_then(|f| sub_range(h.row, f)),
        sub_range(h.row, second),
    ) {
        (Some((first_start, _)), Some((second_start, _))) => {
            out.extend_from_slice(h.row.get(..first_start).unwrap_or(&[]));
            out.extend_from_slice(h.row.get(second_start..).unwrap_or(&[]));
        }
        // Values always lie inside their row; if not, keep the row rather than corrupt it.
        _ => out.extend_from_slice(h.row),
    }
}

/// Copies `row` without its first `n` values (at least one), and says how many it removed: the
/// row goes when it holds no more than `n`. One value is removed as
/// [`push_row_without_first_value`] does, byte for byte.
fn push_row_without_first_values(out: &mut Vec<u8>, h: &Header<'_>, n: usize) -> usize {
    if n <= 1 {
        push_row_without_first_value(out, h);
        return 1;
    }
    let values: Vec<&[u8]> = CommaSplit::new(h.value, true)
        .filter(|v| !v.is_empty())
        .collect();
    let (Some(first), Some(kept)) = (values.first(), values.get(n)) else {
        // No more values than `n`: the row goes.
        return values.len().max(1);
    };
    match (sub_range(h.row, first), sub_range(h.row, kept)) {
        (Some((first_start, _)), Some((kept_start, _))) => {
            out.extend_from_slice(h.row.get(..first_start).unwrap_or(&[]));
            out.extend_from_slice(h.row.get(kept_start..).unwrap_or(&[]));
        }
        // Values always lie inside their row; if not, keep the row rather than corrupt it.
        _ => out.extend_from_slice(h.row),
    }
    n
}

/// What the server transport learned about the sender of a request, written into the top Via
/// of everything built from it (RFC 3261 §18.2.1 `received`, RFC 3581 `rport`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViaFix {
    /// Source IP, added as `received` when it differs from the sent-by host (or rport asked).
    pub received: Option<IpAddr>,
    /// Source port, filled into a bare `rport`.
    pub rport: Option<u16>,
}

impl ViaFix {
    /// The fix for a request from `source` whose top Via is `via`.
    pub fn for_source(via: &super::Via<'_>, source: std::net::SocketAddr) -> ViaFix {
        let asked_rport = via.rport == Some(None);
        let differs = via.host.ip() != Some(source.ip());
        // A `received` the client wrote itself is replaced by what we saw (RFC 3581 §4).
        let claimed = via.received.is_some();
        ViaFix {
            received: (differs || asked_rport || claimed).then_some(source.ip()),
            rport: asked_rport.then_some(source.port()),
        }
    }

    fn is_noop(&self) -> bool {
        self.received.is_none() && self.rport.is_none()
    }
}

/// Copies the first Via row, applying `fix` to its first value (replace a bare `rport` by
/// `rport=PORT`; write `received=IP`, in place of any `received` the sender put there).
///
/// `known` is the caller's parse of the same value (`Essentials::top_via`), used instead of
/// parsing the row again when it is the first value of this very row.
fn push_fixed_top_via(out: &mut Vec<u8>, h: &Header<'_>, fix: ViaFix, known: Option<&Via<'_>>) {
    if fix.is_noop() {
        out.extend_from_slice(h.row);
        return;
    }
    // The first via-parm ends where its parser stops (the same end `Message::top_via` reads),
    // so the row is not scanned for commas first.
    let parsed = match known.filter(|v| is_first_value(h, v)) {
        Some(via) => Ok(*via),
        None => super::headers::via::parse_via(&mut super::scan::Cursor::new(h.value)),
    };
    let Some((via, (_, first_end))) = parsed
        .ok()
        .and_then(|via| Some((via, sub_range(h.row, via.raw)?)))
    else {
        out.extend_from_slice(h.row);
        return;
    };
    let mut copied_to = 0;
    let row = h.row;
    let mut has_received = false;
    for (name, value) in via.params {
        if name.eq_ignore_ascii_case(b"received") {
            has_received = true;
            // Drop `;received[=value]` as written; ours goes at the end of the value.
            if let (Some(_), Some((start, end))) = (fix.received, sub_range(row, name)) {
                let end = value
                    .and_then(|v| sub_range(row, v))
                    .map_or(end, |(_, v_end)| v_end);
                // `start` is the name; the `;` before it (and any space) goes too.
                let semi = row[..start]
                    .iter()
                    .rposition(|&b| b == b';')
                    .unwrap_or(start);
                out.extend_from_slice(row.get(copied_to..semi).unwrap_or(&[]));
                copied_to = end;
                has_received = false;
            }
        }
        if name.eq_ignore_ascii_case(b"rport") && value.is_none() {
            if let (Some(port), Some((_, end))) = (fix.rport, sub_range(row, name)) {
                out.extend_from_slice(row.get(copied_to..end).unwrap_or(&[]));
                out.push(b'=');
                push_u32(out, u32::from(port));
                copied_to = end;
            }
        }
    }
    out.extend_from_slice(row.get(copied_to..first_end).unwrap_or(&[]));
    if let (Some(ip), false) = (fix.received, has_received) {
        out.extend_from_slice(b";received=");
        match ip {
            IpAddr::V4(v4) => push_host(out, IpAddr::V4(v4)),
            // RFC 5118 §4.5: received carries the IPv6 reference with brackets.
            IpAddr::V6(_) => push_host(out, ip),
        }
    }
    out.extend_from_slice(row.get(first_end..).unwrap_or(&[]));
}

/// A response sipfork writes itself (not one it forwards).
#[derive(Clone, Copy, Debug)]
pub struct Reply<'a> {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: &'a str,
    /// Applied to the top Via (what the transport learned about the sender).
    pub fix: ViaFix,
    /// To tag to add when the request's To has none (not for 100 Trying, §17.2.1).
    pub to_tag: Option<&'a [u8]>,
    /// Extra header rows (each ending in CRLF).
    pub extra: &'a [u8],
    /// Content type and body, if any.
    pub body: Option<(&'a str, &'a [u8])>,
}

/// Appends a response to `req` (RFC 3261 §8.2.6.2): status line, every Via row (the top one
/// with the fix applied), From, To (with the tag added when the request's To has none), Call-ID
/// and CSeq copied byte for byte, then the extra rows, then the body.
pub fn response(req: &Message<'_>, reply: &Reply<'_>, out: &mut Vec<u8>) {
    response_with(req, reply, None, out)
}

/// [`response`] given `req`'s top Via as the caller already parsed it (as
/// [`forward_request_with`]): the same bytes, without parsing that Via again for `reply.fix`.
pub fn response_with(
    req: &Message<'_>,
    reply: &Reply<'_>,
    known_via: Option<&Via<'_>>,
    out: &mut Vec<u8>,
) {
    let Reply {
        status,
        reason,
        fix,
        to_tag,
        extra,
        body,
    } = *reply;
    out.extend_from_slice(b"SIP/2.0 ");
    push_u32(out, u32::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut top_via = true;
    let mut rows = Verbatim::new(req);
    for h in req.headers() {
        match h.name {
            HeaderName::Via if top_via => {
                rows.flush(out);
                push_fixed_top_via(out, &h, fix, known_via);
                top_via = false;
            }
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                rows.add(out, h.row)
            }
            HeaderName::To if to_tag.is_some() => {
                rows.flush(out);
                push_to_with_tag(out, &h, to_tag);
            }
            HeaderName::To => rows.add(out, h.row),
            _ => rows.flush(out),
        }
    }
    rows.flush(out);
    out.extend_from_slice(extra);
    match body {
        Some((content_type, body)) => {
            push_row(out, b"Content-Type", content_type.as_bytes());
            push_content_length(out, body.len());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body);
        }
        None => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
    }
}

/// Copies a To row, adding `;tag=` at the end of its value when it has no tag yet.
fn push_to_with_tag(out: &mut Vec<u8>, h: &Header<'_>, to_tag: Option<&[u8]>) {
    let Some(tag) = to_tag else {
        out.extend_from_slice(h.row);
        return;
    };
    let has_tag = super::headers::name_addr::parse_single(h.value)
        .map(|na| na.tag.is_some())
        .unwrap_or(true);
    match (has_tag, sub_range(h.row, h.value)) {
        (false, Some((_, end))) => {
            out.extend_from_slice(h.row.get(..end).unwrap_or(&[]));
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(tag);
            out.extend_from_slice(h.row.get(end..).unwrap_or(&[]));
        }
        _ => out.extend_from_slice(h.row),
    }
}

/// Most rows forwarding adds to a request's own (our Via, one or two Record-Routes, Max-Forwards,
/// Content-Length, P-Asserted-Identity, Reason, with room to spare): a request with more than
/// `MAX_ROWS - ROWS_ADDED_BY_FORWARDING` rows is refused, so every copy sipfork sends (and the
/// CANCEL built from it) parses again.
pub const ROWS_ADDED_BY_FORWARDING: usize = 8;

/// How to forward a request (RFC 3261 §16.6).
#[derive(Clone, Copy, Debug)]
pub struct Forward<'a> {
    /// New Request-URI (step 2/6); `None` keeps the received one.
    pub request_uri: Option<&'a [u8]>,
    /// Our Via value, `SIP/2.0/UDP host:port;branch=...` (step 8).
    pub via: &'a [u8],
    /// Our Record-Route URI (step 4), written as `Record-Route: <URI>`.
    pub record_route: Option<&'a [u8]>,
    /// RFC 5658 double record-routing: our URI on the side the request came in on, written as
    /// a second Record-Route row right below `record_route` (which then names the outgoing side).
    pub record_route_in: Option<&'a [u8]>,
    /// Drop the first Route value (it named us, §16.4).
    pub drop_first_route: bool,
    /// With `drop_first_route`: drop the second Route value too (our other entry of a double
    /// Record-Route, RFC 5658 §3.3).
    pub drop_second_route: bool,
    /// Max-Forwards to write (step 3: received minus one, or 70 when absent).
    pub max_forwards: u8,
    /// Applied to the received top Via (now second).
    pub fix: ViaFix,
    /// Extra header rows (each ending in CRLF), e.g. a Reason.
    pub extra: &'a [u8],
    /// Drop every P-Asserted-Identity and P-Preferred-Identity row (RFC 3325 §5: identity
    /// asserted by a party outside the trust domain is not passed on).
    pub strip_identity: bool,
    /// Drop the Proxy-Authorization rows with credentials for this realm (ours, when sipfork
    /// challenges): they were consumed here (RFC 3261 §20.28, §22.3), and passing them on would
    /// hand the caller's digest response to the callee. Rows for other realms pass.
    pub consume_realm: Option<&'a [u8]>,
}

/// Whether an Authorization / Proxy-Authorization row holds Digest credentials for `realm`.
pub fn credentials_for_realm(h: &Header<'_>, realm: &[u8]) -> bool {
    super::headers::digest::parse_credentials(h.value).is_ok_and(|c| c.realm == realm)
}

/// Appends `req` forwarded as `fwd` says; everything else is copied byte for byte.
pub fn forward_request(req: &Message<'_>, fwd: &Forward<'_>, out: &mut Vec<u8>) {
    forward_request_with(req, fwd, None, out)
}

/// [`forward_request`] given `req`'s top Via as the caller already parsed it
/// (`Essentials::top_via`), so applying `fwd.fix` does not parse it again. The bytes are the
/// same as [`forward_request`]'s; a Via that is not the first value of `req`'s first Via row
/// is not used.
pub fn forward_request_with(
    req: &Message<'_>,
    fwd: &Forward<'_>,
    known_via: Option<&Via<'_>>,
    out: &mut Vec<u8>,
) {
    forward_request_noting(req, fwd, known_via, out, None);
}

/// [`forward_request_with`], which also says where the forwarded request's CANCEL and ACK parts
/// lie in what it wrote (offsets from where it started writing), so that [`cancel_from`] and
/// [`ack_from`] build them without parsing the request again. `None` when it cannot say
/// (`fwd.extra` rows, more Route/From/To/Call-ID rows than it keeps): use [`cancel_for`] and
/// [`ack_for`] on the parsed request then. The bytes written are those of
/// [`forward_request_with`].
pub fn forward_request_hop(
    req: &Message<'_>,
    fwd: &Forward<'_>,
    known_via: Option<&Via<'_>>,
    out: &mut Vec<u8>,
) -> Option<HopByHop> {
    let mut hop = HopNotes {
        base: out.len(),
        hop: HopByHop::default(),
        ok: fwd.extra.is_empty(),
    };
    forward_request_noting(req, fwd, known_via, out, Some(&mut hop));
    hop.ok.then_some(hop.hop)
}

fn forward_request_noting(
    req: &Message<'_>,
    fwd: &Forward<'_>,
    known_via: Option<&Via<'_>>,
    out: &mut Vec<u8>,
    mut notes: Option<&mut HopNotes>,
) {
    let (method, uri) = match req.kind() {
        super::Kind::Request { method, uri } => (method, uri),
        super::Kind::Response { .. } => return,
    };
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    let uri_start = out.len();
    out.extend_from_slice(fwd.request_uri.unwrap_or(uri));
    let uri_end = out.len();
    out.extend_from_slice(b" SIP/2.0\r\n");
    if let Some(n) = notes.as_deref_mut() {
        n.hop.uri = n.span(uri_start, uri_end);
        // Our Via value, as the parser would give it back: the first of its row.
        let via_start = out.len() + b"Via: ".len();
        let value = match memchr::memchr(b',', fwd.via) {
            None => fwd.via,
            Some(_) => CommaSplit::new(fwd.via, true).next().unwrap_or(fwd.via),
        };
        match sub_range(fwd.via, value) {
            Some((a, b)) if value.trim_ascii() == value && !value.is_empty() => {
                n.hop.via = n.span(via_start + a, via_start + b);
            }
            _ => n.ok = false,
        }
        n.hop.cseq = req.cseq().map(|c| c.number).unwrap_or(0);
    }
    push_row(out, b"Via", fwd.via);
    if let Some(rr) = fwd.record_route {
        out.extend_from_slice(b"Record-Route: <");
        out.extend_from_slice(rr);
        out.extend_from_slice(b">\r\n");
        if let Some(rr) = fwd.record_route_in {
            out.extend_from_slice(b"Record-Route: <");
            out.extend_from_slice(rr);
            out.extend_from_slice(b">\r\n");
        }
    }
    let mut wrote_max_forwards = false;
    let mut drop_routes =
        usize::from(fwd.drop_first_route) * (1 + usize::from(fwd.drop_second_route));
    let mut top_via = true;
    let has_content_length = req.first(HeaderName::ContentLength).is_some();
    let mut rows = Verbatim::new(req);
    for h in req.headers() {
        match h.name {
            HeaderName::Via if top_via => {
                rows.flush(out);
                push_fixed_top_via(out, &h, fwd.fix, known_via);
                top_via = false;
            }
            HeaderName::MaxForwards => {
                rows.flush(out);
                if !wrote_max_forwards {
                    push_max_forwards(out, fwd.max_forwards);
                    wrote_max_forwards = true;
                }
            }
            HeaderName::Route if drop_routes > 0 => {
                rows.flush(out);
                let start = out.len();
                drop_routes -= push_row_without_first_values(out, &h, drop_routes);
                if let Some(n) = notes.as_deref_mut() {
                    n.row(start, out.len(), false);
                }
            }
            HeaderName::PAssertedIdentity | HeaderName::PPreferredIdentity
                if fwd.strip_identity =>
            {
                rows.flush(out);
            }
            HeaderName::ProxyAuthorization
                if fwd
                    .consume_realm
                    .is_some_and(|realm| credentials_for_realm(&h, realm)) =>
            {
                rows.flush(out);
            }
            name => {
                if let Some(n) = notes.as_deref_mut() {
                    if matches!(
                        name,
                        HeaderName::Route | HeaderName::From | HeaderName::To | HeaderName::CallId
                    ) {
                        let start = out.len() + rows.pending();
                        n.row(start, start + h.row.len(), name == HeaderName::To);
                    }
                }
                rows.add(out, h.row)
            }
        }
    }
    rows.flush(out);
    if !wrote_max_forwards {
        push_max_forwards(out, fwd.max_forwards);
    }
    out.extend_from_slice(fwd.extra);
    if !has_content_length {
        // UDP allows a missing Content-Length (RFC 2543 peers); the next hop gets an exact one.
        push_content_length(out, req.body().len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(req.body());
}

fn push_max_forwards(out: &mut Vec<u8>, n: u8) {
    out.extend_from_slice(b"Max-Forwards: ");
    push_u32(out, u32::from(n));
    out.extend_from_slice(b"\r\n");
}

/// Appends `resp` forwarded upstream: the first Via value (ours) removed, all else unchanged
/// (§16.7 step 3).
pub fn forward_response(resp: &Message<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(resp.start_line());
    out.extend_from_slice(b"\r\n");
    let mut top_via = true;
    let mut rows = Verbatim::new(resp);
    for h in resp.headers() {
        if h.name == HeaderName::Via && top_via {
            rows.flush(out);
            push_row_without_first_value(out, &h);
            top_via = false;
        } else {
            rows.add(out, h.row);
        }
    }
    rows.flush(out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(resp.body());
}

/// Appends the CANCEL for a request we forwarded (`sent`, as we sent it): same Request-URI,
/// top Via, Route, From, To, Call-ID and CSeq number (RFC 3261 §9.1), with `reason` as the
/// value of a Reason header (RFC 3326) when given.
pub fn cancel_for(sent: &Message<'_>, reason: Option<&[u8]>, out: &mut Vec<u8>) {
    hop_by_hop_for(sent, b"CANCEL", None, out);
    if let Some(reason) = reason {
        push_row(out, b"Reason", reason);
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

/// Appends the ACK for a non-2xx final response to an INVITE we forwarded (`sent`): as the
/// CANCEL, but with the To of the response (RFC 3261 §17.1.1.3).
pub fn ack_for(sent: &Message<'_>, response: &Message<'_>, out: &mut Vec<u8>) {
    let to = response.first(HeaderName::To);
    hop_by_hop_for(sent, b"ACK", to.as_ref(), out);
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

fn hop_by_hop_for(sent: &Message<'_>, method: &[u8], to: Option<&Header<'_>>, out: &mut Vec<u8>) {
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(sent.request_uri_raw().unwrap_or(b""));
    out.extend_from_slice(b" SIP/2.0\r\n");
    if let Some(via) = sent.first(HeaderName::Via) {
        // Our own Via is alone in its row: a vectorised look for a comma settles that.
        let value = match memchr::memchr(b',', via.value) {
            None => via.value,
            Some(_) => CommaSplit::new(via.value, true).next().unwrap_or(via.value),
        };
        push_row(out, b"Via", value);
    }
    let mut rows = Verbatim::new(sent);
    for h in sent.headers() {
        match h.name {
            HeaderName::Route | HeaderName::From | HeaderName::CallId => rows.add(out, h.row),
            HeaderName::To => match to {
                Some(to) => {
                    rows.flush(out);
                    out.extend_from_slice(to.row);
                }
                None => rows.add(out, h.row),
            },
            _ => rows.flush(out),
        }
    }
    rows.flush(out);
    out.extend_from_slice(b"Max-Forwards: 70\r\n");
    out.extend_from_slice(b"CSeq: ");
    push_u32(out, sent.cseq().map(|c| c.number).unwrap_or(0));
    out.push(b' ');
    out.extend_from_slice(method);
    out.extend_from_slice(b"\r\n");
}

/// How many Route/From/To/Call-ID row runs a [`HopByHop`] keeps.
const HOP_ROWS: usize = 6;

/// Where the parts of a forwarded INVITE that its CANCEL and the ACK of a non-2xx final copy
/// (RFC 3261 §9.1, §17.1.1.3) lie in its bytes: the Request-URI, our Via value, the Route, From,
/// To and Call-ID rows in their order, and the CSeq number. Noted by [`forward_request_hop`]
/// while writing the request, so [`cancel_from`] and [`ack_from`] write what [`cancel_for`] and
/// [`ack_for`] write on the request's parse, without that parse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HopByHop {
    uri: (u16, u16),
    via: (u16, u16),
    /// Runs of adjacent rows; a To row is a run of its own (the ACK replaces it).
    rows: [(u16, u16); HOP_ROWS],
    n: u8,
    /// Bit `i`: run `i` is a To row.
    to: u8,
    cseq: u32,
}

/// A [`HopByHop`] being noted while a request is written at `base` of the buffer.
struct HopNotes {
    base: usize,
    hop: HopByHop,
    ok: bool,
}

impl HopNotes {
    /// Offsets from the request's start; one past 64 KiB makes the notes unusable.
    fn span(&mut self, start: usize, end: usize) -> (u16, u16) {
        match (
            u16::try_from(start - self.base),
            u16::try_from(end - self.base),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            _ => {
                self.ok = false;
                (0, 0)
            }
        }
    }

    /// A row written at `start..end` of the buffer (a To row when `to`).
    fn row(&mut self, start: usize, end: usize, to: bool) {
        if start == end {
            return;
        }
        let span = self.span(start, end);
        let hop = &mut self.hop;
        let n = usize::from(hop.n);
        if let Some(last) = n.checked_sub(1).and_then(|l| hop.rows.get_mut(l)) {
            if !to && hop.to & (1 << (n - 1)) == 0 && last.1 == span.0 {
                last.1 = span.1;
                return;
            }
        }
        match hop.rows.get_mut(n) {
            Some(slot) => {
                *slot = span;
                hop.to |= u8::from(to) << n;
                hop.n += 1;
            }
            None => self.ok = false,
        }
    }
}

fn hop_span(sent: &[u8], (start, end): (u16, u16)) -> &[u8] {
    sent.get(usize::from(start)..usize::from(end))
        .unwrap_or(&[])
}

/// [`cancel_for`] on `sent` (the bytes [`forward_request_hop`] wrote, from its start) given the
/// [`HopByHop`] it noted: the same bytes, without parsing `sent`.
pub fn cancel_from(sent: &[u8], hop: &HopByHop, reason: Option<&[u8]>, out: &mut Vec<u8>) {
    hop_by_hop_from(sent, hop, b"CANCEL", None, out);
    if let Some(reason) = reason {
        push_row(out, b"Reason", reason);
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

/// [`ack_for`] on `sent` given its [`HopByHop`]: the same bytes, without parsing `sent`.
pub fn ack_from(sent: &[u8], hop: &HopByHop, response: &Message<'_>, out: &mut Vec<u8>) {
    let to = response.first(HeaderName::To);
    hop_by_hop_from(sent, hop, b"ACK", to.as_ref(), out);
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

/// A request this proxy forwarded, as its CANCEL and the ACK of its non-2xx final read it:
/// through the notes [`forward_request_hop`] took, or else through a parse of its bytes.
pub enum SentRequest<'a> {
    /// Its bytes, from their start, and the notes taken while writing them.
    Noted(&'a [u8], HopByHop),
    /// Its parse, when no notes were taken (rare: boxed, so that the common case stays small).
    Parsed(Box<Message<'a>>),
}

impl<'a> SentRequest<'a> {
    /// `sent` with its notes, if any; `None` when it has none and does not parse.
    pub fn of(sent: &'a [u8], hop: Option<HopByHop>) -> Option<Self> {
        match hop {
            Some(hop) => Some(SentRequest::Noted(sent, hop)),
            None => super::parse(sent)
                .ok()
                .map(|m| SentRequest::Parsed(Box::new(m))),
        }
    }

    /// Its CANCEL ([`cancel_from`] / [`cancel_for`]: the same bytes).
    pub fn cancel(&self, reason: Option<&[u8]>, out: &mut Vec<u8>) {
        match self {
            SentRequest::Noted(sent, hop) => cancel_from(sent, hop, reason, out),
            SentRequest::Parsed(sent) => cancel_for(sent, reason, out),
        }
    }

    /// The ACK of `response`, its non-2xx final ([`ack_from`] / [`ack_for`]: the same bytes).
    pub fn ack(&self, response: &Message<'_>, out: &mut Vec<u8>) {
        match self {
            SentRequest::Noted(sent, hop) => ack_from(sent, hop, response, out),
            SentRequest::Parsed(sent) => ack_for(sent, response, out),
        }
    }
}

fn hop_by_hop_from(
    sent: &[u8],
    hop: &HopByHop,
    method: &[u8],
    to: Option<&Header<'_>>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(hop_span(sent, hop.uri));
    out.extend_from_slice(b" SIP/2.0\r\n");
    push_row(out, b"Via", hop_span(sent, hop.via));
    for (i, &span) in hop.rows.iter().take(usize::from(hop.n)).enumerate() {
        match to {
            Some(to) if hop.to & (1 << i) != 0 => out.extend_from_slice(to.row),
            _ => out.extend_from_slice(hop_span(sent, span)),
        }
    }
    out.extend_from_slice(b"Max-Forwards: 70\r\n");
    out.extend_from_slice(b"CSeq: ");
    push_u32(out, hop.cseq);
    out.push(b' ');
    out.extend_from_slice(method);
    out.extend_from_slice(b"\r\n");
}

/// A request inside a dialog that sipfork itself sends as a UAC: the ACK for a 2xx and the BYE
/// that end a device's call nobody wants any more (late answer, `single_answer`).
#[derive(Clone, Copy, Debug)]
pub struct InDialog<'a> {
    /// `ACK` or `BYE`.
    pub method: &'a [u8],
    /// Remote target (the Contact URI of the 2xx).
    pub target: &'a [u8],
    /// Route set values (each `<URI>` as written), nearest first; written as one Route row.
    pub routes: &'a [&'a [u8]],
    /// Our Via value.
    pub via: &'a [u8],
    /// From row value (the INVITE's From, with the caller's tag).
    pub from: &'a [u8],
    /// To row value (the 2xx's To, with the device's tag).
    pub to: &'a [u8],
    /// Call-ID.
    pub call_id: &'a [u8],
    /// CSeq number.
    pub cseq: u32,
    /// Extra header rows (each ending in CRLF), e.g. a Reason.
    pub extra: &'a [u8],
}

/// Appends an in-dialog request (RFC 3261 §12.2.1.1).
pub fn in_dialog(req: &InDialog<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(req.method);
    out.push(b' ');
    out.extend_from_slice(req.target);
    out.extend_from_slice(b" SIP/2.0\r\n");
    push_row(out, b"Via", req.via);
    // The route set as one comma-separated row (§7.3.1): a 2xx with many Record-Route values
    // in few rows must not turn into more rows than a parser indexes.
    for (i, r) in req.routes.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"Route: " } else { b", " });
        out.extend_from_slice(r);
    }
    if !req.routes.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Max-Forwards: 70\r\n");
    push_row(out, b"From", req.from);
    push_row(out, b"To", req.to);
    push_row(out, b"Call-ID", req.call_id);
    out.extend_from_slice(b"CSeq: ");
    push_u32(out, req.cseq);
    out.push(b' ');
    out.extend_from_slice(req.method);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(req.extra);
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{check_request, check_response, parse};

    const INVITE: &[u8] = b"INVITE sip:1000@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bK-abc;rport\r\n\
Max-Forwards: 70\r\n\
Route: <sip:127.0.0.1:5060;lr>, <sip:10.9.9.9;lr>\r\n\
From: <sip:caller@10.0.0.9:5070>;tag=ft1\r\n\
To: <sip:1000@127.0.0.1:5060>\r\n\
Call-ID: call-1@10.0.0.9\r\n\
CSeq: 7 INVITE\r\n\
X-Custom:   keep  me  \r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    fn src() -> std::net::SocketAddr {
        "192.168.1.5:40000".parse().unwrap()
    }

    #[test]
    fn response_copies_rows_and_adds_tag_and_received() {
        let req = parse(INVITE).unwrap();
        let via = req.top_via().unwrap();
        let mut out = Vec::new();
        response(
            &req,
            &Reply {
                status: 486,
                reason: "Busy Here",
                fix: ViaFix::for_source(&via, src()),
                to_tag: Some(b"xyz"),
                extra: b"Retry-After: 5\r\n",
                body: None,
            },
            &mut out,
        );
        let r = parse(&out).unwrap();
        let e = check_response(&r).unwrap();
        assert_eq!(e.status, 486);
        assert_eq!(e.to.tag, Some(&b"xyz"[..]));
        assert_eq!(e.from.tag, Some(&b"ft1"[..]));
        assert_eq!(e.cseq.number, 7);
        assert_eq!(e.top_via.branch, Some(&b"z9hG4bK-abc"[..]));
        assert_eq!(e.top_via.rport, Some(Some(40000)));
        assert_eq!(e.top_via.received, Some(&b"192.168.1.5"[..]));
        assert_eq!(r.first_value(HeaderName::RetryAfter), Some(&b"5"[..]));
        assert!(r.first(HeaderName::Route).is_none());
        assert_eq!(r.body(), b"");
    }

    #[test]
    fn hosts_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "9.10.99.100",
            "127.0.0.1",
            "192.0.2.255",
            "255.255.255.255",
            "10.200.30.4",
        ] {
            let v4: std::net::Ipv4Addr = ip.parse().unwrap();
            let mut out = b"x".to_vec();
            push_host(&mut out, IpAddr::V4(v4));
            assert_eq!(out, format!("x{v4}").into_bytes());
        }
        let mut out = Vec::new();
        push_host(&mut out, "2001:db8::1".parse().unwrap());
        assert_eq!(out, b"[2001:db8::1]");
    }

    #[test]
    fn top_via_given_parsed_or_not_forwards_the_same_bytes() {
        let req = parse(INVITE).unwrap();
        let via = req.top_via().unwrap();
        // A Via that is not the top row's first value (a copy of it elsewhere) is not used.
        let copy = INVITE.to_vec();
        let other = parse(&copy).unwrap();
        let other_via = other.top_via().unwrap();
        let forward = |top_via: Option<&Via<'_>>| {
            let mut out = Vec::new();
            forward_request_with(
                &req,
                &Forward {
                    request_uri: None,
                    via: b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf1",
                    record_route: None,
                    record_route_in: None,
                    drop_first_route: false,
                    drop_second_route: false,
                    max_forwards: 69,
                    fix: ViaFix::for_source(&via, src()),
                    extra: b"",
                    strip_identity: false,
                    consume_realm: None,
                },
                top_via,
                &mut out,
            );
            out
        };
        let parsed_here = forward(None);
        assert!(parsed_here
            .windows(22)
            .any(|w| w == b"received=192.168.1.5\r\n"));
        assert_eq!(forward(Some(&via)), parsed_here);
        assert_eq!(forward(Some(&other_via)), parsed_here);
    }

    #[test]
    fn forwarded_request_has_our_via_rr_and_decremented_max_forwards() {
        let req = parse(INVITE).unwrap();
        let via = req.top_via().unwrap();
        let mut out = Vec::new();
        forward_request(
            &req,
            &Forward {
                request_uri: Some(b"sip:1000@127.0.0.1:5071"),
                via: b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf1",
                record_route: Some(b"sip:127.0.0.1:5060;lr;sf=1"),
                record_route_in: None,
                drop_first_route: true,
                drop_second_route: false,
                max_forwards: 69,
                fix: ViaFix::for_source(&via, src()),
                extra: b"",
                strip_identity: false,
                consume_realm: None,
            },
            &mut out,
        );
        let f = parse(&out).unwrap();
        let e = check_request(&f).unwrap();
        assert_eq!(f.request_uri_raw(), Some(&b"sip:1000@127.0.0.1:5071"[..]));
        assert_eq!(e.top_via.branch, Some(&b"z9hG4bKsf1"[..]));
        let vias: Vec<_> = f.vias().map(|v| v.unwrap().raw).collect();
        assert_eq!(vias.len(), 2);
        assert_eq!(
            vias[1],
            &b"SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bK-abc;rport=40000;received=192.168.1.5"[..]
        );
        assert_eq!(e.max_forwards, Some(69));
        let routes: Vec<_> = f.values(HeaderName::Route).collect();
        assert_eq!(routes, vec![&b"<sip:10.9.9.9;lr>"[..]]);
        assert_eq!(
            f.values(HeaderName::RecordRoute).collect::<Vec<_>>(),
            vec![&b"<sip:127.0.0.1:5060;lr;sf=1>"[..]]
        );
        assert_eq!(f.first_value(HeaderName::Other), Some(&b"keep  me"[..]));
        assert_eq!(f.body(), b"v=0\n");
        assert_eq!(f.count_rows(HeaderName::MaxForwards), 1);
    }

    #[test]
    fn forwarding_adds_max_forwards_and_content_length_when_absent() {
        let req = parse(
            b"OPTIONS sip:1000@h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1\r\nFrom: <sip:a@h>\r\nTo: <sip:1000@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\nhello",
        )
        .unwrap();
        let mut out = Vec::new();
        forward_request(
            &req,
            &Forward {
                request_uri: None,
                via: b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx",
                record_route: None,
                record_route_in: None,
                drop_first_route: false,
                drop_second_route: false,
                max_forwards: 70,
                fix: ViaFix::default(),
                extra: b"",
                strip_identity: false,
                consume_realm: None,
            },
            &mut out,
        );
        let f = parse(&out).unwrap();
        assert_eq!(f.max_forwards().unwrap(), Some(70));
        assert_eq!(f.content_length(), Some(5));
        assert_eq!(f.body(), b"hello");
    }

    #[test]
    fn forwarded_response_loses_only_our_via_value() {
        for resp in [
            &b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf1, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKa\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"[..],
            &b"SIP/2.0 180 Ringing\r\nv: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf1\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKa\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"[..],
        ] {
            let r = parse(resp).unwrap();
            let mut out = Vec::new();
            forward_response(&r, &mut out);
            let f = parse(&out).unwrap();
            let vias: Vec<_> = f.vias().map(|v| v.unwrap().raw).collect();
            assert_eq!(vias, vec![&b"SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKa"[..]]);
            assert_eq!(f.to().unwrap().tag, Some(&b"2"[..]));
        }
    }

    #[test]
    fn removing_a_value_skips_empty_elements_instead_of_writing_an_empty_row() {
        // Found by the build_roundtrip fuzz target: `Via: ours,` passes check_response (only the
        // top Via is read), and removing `ours` used to leave `Via: ` for the next hop.
        for (vias, left) in [
            (
                &b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf1,\r\nVia: SIP/2.0/UDP a\r\n"[..],
                &b"Via: SIP/2.0/UDP a\r\n"[..],
            ),
            (
                b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf1, ,\r\n SIP/2.0/UDP b\r\n",
                b"Via: SIP/2.0/UDP b\r\n",
            ),
        ] {
            let mut resp = b"SIP/2.0 180 Ringing\r\n".to_vec();
            resp.extend_from_slice(vias);
            resp.extend_from_slice(b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n");
            let r = parse(&resp).unwrap();
            check_response(&r).unwrap();
            let mut out = Vec::new();
            forward_response(&r, &mut out);
            let f = parse(&out).unwrap();
            assert_eq!(f.first(HeaderName::Via).unwrap().row, left);
            assert!(f.vias().all(|v| v.is_ok()));
        }
        let req = parse(b"BYE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKa\r\nRoute: <sip:127.0.0.1;lr>,\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\n\r\n").unwrap();
        let mut out = Vec::new();
        forward_request(
            &req,
            &Forward {
                request_uri: None,
                via: b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx",
                record_route: None,
                record_route_in: None,
                drop_first_route: true,
                drop_second_route: false,
                max_forwards: 69,
                fix: ViaFix::default(),
                extra: b"",
                strip_identity: false,
                consume_realm: None,
            },
            &mut out,
        );
        assert!(parse(&out).unwrap().first(HeaderName::Route).is_none());
    }

    #[test]
    fn cancel_and_ack_match_the_forwarded_invite() {
        let req = parse(INVITE).unwrap();
        let fwd = Forward {
            request_uri: Some(b"sip:1000@127.0.0.1:5071"),
            via: b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf9",
            record_route: None,
            record_route_in: None,
            drop_first_route: true,
            drop_second_route: false,
            max_forwards: 69,
            fix: ViaFix::default(),
            extra: b"",
            strip_identity: false,
            consume_realm: None,
        };
        let mut sent = Vec::new();
        forward_request(&req, &fwd, &mut sent);
        let bytes = sent.clone();
        let sent = parse(&sent).unwrap();
        // The same request written after another message in the buffer, noting its parts.
        let earlier = b"SIP/2.0 100 Trying\r\n\r\n";
        let mut buf = earlier.to_vec();
        let hop = forward_request_hop(&req, &fwd, None, &mut buf).unwrap();
        assert_eq!(&buf[earlier.len()..], &bytes[..]);
        let mut out = Vec::new();
        cancel_for(
            &sent,
            Some(b"SIP;cause=200;text=\"Call completed elsewhere\""),
            &mut out,
        );
        let mut from_hop = Vec::new();
        cancel_from(
            &bytes,
            &hop,
            Some(b"SIP;cause=200;text=\"Call completed elsewhere\""),
            &mut from_hop,
        );
        assert_eq!(from_hop, out);
        let c = parse(&out).unwrap();
        let e = check_request(&c).unwrap();
        assert_eq!(e.method.as_bytes(), b"CANCEL");
        assert_eq!(c.request_uri_raw(), Some(&b"sip:1000@127.0.0.1:5071"[..]));
        assert_eq!(c.vias().count(), 1);
        assert_eq!(e.top_via.branch, Some(&b"z9hG4bKsf9"[..]));
        assert_eq!(
            (e.cseq.number, e.cseq.method.as_bytes()),
            (7, &b"CANCEL"[..])
        );
        assert_eq!(c.values(HeaderName::Route).count(), 1);
        assert_eq!(c.reason().unwrap().unwrap().cause, Some(200));

        let resp = parse(b"SIP/2.0 487 Request Terminated\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf9\r\nFrom: <sip:caller@10.0.0.9:5070>;tag=ft1\r\nTo: <sip:1000@127.0.0.1:5060>;tag=dev\r\nCall-ID: call-1@10.0.0.9\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut out = Vec::new();
        ack_for(&sent, &resp, &mut out);
        let mut from_hop = Vec::new();
        ack_from(&bytes, &hop, &resp, &mut from_hop);
        assert_eq!(from_hop, out);
        let a = parse(&out).unwrap();
        let e = check_request(&a).unwrap();
        assert_eq!(e.method.as_bytes(), b"ACK");
        assert_eq!(e.to.tag, Some(&b"dev"[..]));
        assert_eq!(e.top_via.branch, Some(&b"z9hG4bKsf9"[..]));
        assert_eq!((e.cseq.number, e.cseq.method.as_bytes()), (7, &b"ACK"[..]));
    }

    #[test]
    fn in_dialog_requests_parse_back() {
        let mut out = Vec::new();
        in_dialog(
            &InDialog {
                method: b"BYE",
                target: b"sip:1000@127.0.0.1:5072",
                routes: &[b"<sip:10.1.1.1;lr>", b"<sip:10.2.2.2;lr;x=1>"],
                via: b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsfb",
                from: b"<sip:caller@10.0.0.9>;tag=ft1",
                to: b"<sip:1000@h>;tag=late",
                call_id: b"call-1",
                cseq: 8,
                extra: b"Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\n",
            },
            &mut out,
        );
        let b = parse(&out).unwrap();
        let e = check_request(&b).unwrap();
        assert_eq!(e.cseq.number, 8);
        assert_eq!(e.to.tag, Some(&b"late"[..]));
        assert_eq!(
            b.first(HeaderName::Route).unwrap().row,
            b"Route: <sip:10.1.1.1;lr>, <sip:10.2.2.2;lr;x=1>\r\n"
        );
        assert_eq!(b.values(HeaderName::Route).count(), 2);
    }

    #[test]
    fn numbers_are_written_exactly() {
        for n in [0u32, 7, 10, 99, 100, 65535, u32::MAX] {
            let mut out = Vec::new();
            push_u32(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
