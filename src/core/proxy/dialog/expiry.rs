//! A dialog whose BYE never came is ended at `[policy] max_call_seconds` the way Kamailio's
//! dialog module ends one on its timeout: sipfork sends a BYE to each leg, as that leg's peer
//! (to the callee as the caller, to the caller as the callee), with
//! `Reason: SIP;cause=408;text="max_call_seconds"`, each in its own non-INVITE client
//! transaction of the call.
//!
//! What the call does not keep anyway (the parties' From/To rows, remote targets and route sets,
//! the Call-ID) is captured from the INVITE and the first forwarded 2xx into one [`Ends`] record
//! per call: one byte buffer with the pieces and a short table of their ends. The CSeq numbers
//! follow the in-dialog requests that pass, so each BYE is higher than anything its sender's
//! side used. Only the call's first dialog is ended this way (a caller that accepted several
//! 2xx of one fork is rare; the others are still forgotten at the same time).

use std::net::SocketAddr;

use super::{leg_destination, Leg};
use crate::core::context::Cx;
use crate::core::proxy::call::Call;
use crate::core::proxy::response::StoredRequest;
use crate::core::proxy::{uri_destination, Proxy};
use crate::core::slab::Key;
use crate::sip::build::InDialog;
use crate::sip::{Essentials, HeaderName, Message, NameAddr, Uri};

/// The Reason of the BYEs sent at `max_call_seconds`.
const REASON: &[u8] = b"Reason: SIP;cause=408;text=\"max_call_seconds\"\r\n";
/// The Reason of the BYEs sent when an RFC 4028 session expired (`session_timer.rs`).
const SESSION_REASON: &[u8] = b"Reason: SIP;cause=408;text=\"session expired\"\r\n";

/// Pieces of [`Ends::text`], in order; the caller's routes, then the callee's, follow.
const CALL_ID: usize = 0;
const CALLER_FROM: usize = 1;
const CALLER_CONTACT: usize = 2;
const CALLEE_TO: usize = 3;
const CALLEE_CONTACT: usize = 4;
const FIXED: usize = 5;

/// What a BYE to each leg of a call's first dialog needs.
#[derive(Debug)]
pub struct Ends {
    /// The pieces, back to back.
    text: Box<[u8]>,
    /// Where each piece ends in `text`.
    cuts: Box<[u16]>,
    /// How many of the route pieces lead to the caller (the rest lead to the callee).
    caller_routes: u8,
    /// Where the caller's and the callee's legs are reached.
    dest: [SocketAddr; 2],
    /// Highest CSeq number seen from the caller and from the callee (0: none yet).
    cseq: [u32; 2],
}

/// Where the pieces [`Ends`] takes from the caller's INVITE lie in the call's stored copy of it
/// (`Call::request`, the received bytes): its From value, the URI of its first Contact, and its
/// CSeq number. Noted by `start_call` from the parse on arrival, so the first 2xx need not
/// parse the INVITE again; only for an INVITE without Record-Route (a route set is read from
/// the parse) whose first Contact is an address, within 64 KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallerNotes {
    from: (u16, u16),
    contact: (u16, u16),
    cseq: u32,
}

/// Where `part` (a slice of `bytes`) lies in `bytes`, in 16 bits.
fn span_of(bytes: &[u8], part: &[u8]) -> Option<(u16, u16)> {
    let start = (part.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= bytes.len()).then_some(())?;
    Some((u16::try_from(start).ok()?, u16::try_from(end).ok()?))
}

impl CallerNotes {
    /// The notes of `req` (its first Contact as parsed: `contact`), or `None` where the 2xx
    /// has to parse the stored copy (see the type).
    pub(in crate::core::proxy) fn of(
        req: &Message<'_>,
        e: &Essentials<'_>,
        contact: Option<&crate::sip::ContactValue<'_>>,
    ) -> Option<CallerNotes> {
        if req.has(HeaderName::RecordRoute) {
            return None;
        }
        let crate::sip::ContactValue::Addr(c) = contact? else {
            return None;
        };
        let bytes = req.bytes();
        Some(CallerNotes {
            from: span_of(bytes, req.first_value(HeaderName::From)?)?,
            contact: span_of(bytes, c.addr.uri.raw())?,
            cseq: e.cseq.number,
        })
    }
}

/// What [`Ends`] takes from the caller's INVITE: from its parse, or from [`CallerNotes`].
struct CallerSide<'a> {
    from: &'a [u8],
    contact: &'a [u8],
    cseq: u32,
    /// Its Record-Routes, added above us: nearest first, the caller's leg.
    up: Vec<NameAddr<'a>>,
}

impl<'a> CallerSide<'a> {
    fn parsed(req: &Message<'a>) -> Option<Self> {
        let contact = match req.contacts().next()?.ok()? {
            crate::sip::ContactValue::Addr(c) => c.addr.uri.raw(),
            crate::sip::ContactValue::Star => return None,
        };
        Some(CallerSide {
            up: req.record_routes().filter_map(Result::ok).collect(),
            cseq: req.cseq().ok()?.number,
            from: req.first_value(HeaderName::From)?,
            contact,
        })
    }

    fn noted(bytes: &'a [u8], notes: &CallerNotes) -> Option<Self> {
        let piece = |(start, end): (u16, u16)| bytes.get(usize::from(start)..usize::from(end));
        Some(CallerSide {
            from: piece(notes.from)?,
            contact: piece(notes.contact)?,
            cseq: notes.cseq,
            up: Vec::new(),
        })
    }
}

impl Ends {
    /// From the call's INVITE (`caller`) and the 2xx of the branch aimed at `branch_target`.
    fn capture(
        cx: &Cx<'_>,
        call: &Call,
        caller: CallerSide<'_>,
        branch_target: SocketAddr,
        resp: &Message<'_>,
    ) -> Option<Box<Ends>> {
        let CallerSide {
            from: caller_from,
            contact: caller_contact,
            cseq: caller_cseq,
            up,
        } = caller;
        let caller_dest = match up.first() {
            None => leg_destination(cx.cfg.registrar.nat, call.upstream, call.caller_target),
            Some(r) => match r.uri {
                Uri::Sip(u) => uri_destination(&u)?,
                _ => return None,
            },
        };
        let leg = Leg::of(cx, resp, branch_target)?;
        let fixed: [&[u8]; FIXED] = [
            leg.call_id,
            caller_from,
            caller_contact,
            leg.to,
            leg.contact,
        ];
        let pieces = fixed
            .into_iter()
            .chain(up.iter().map(|r| r.raw))
            .chain(leg.routes.iter().map(|r| &r[..]));
        // Sized up front: one allocation each, not a doubling series per answered call.
        let (n, len) = pieces
            .clone()
            .fold((0, 0), |(n, len), p| (n + 1, len + p.len()));
        let (mut text, mut cuts) = (Vec::with_capacity(len), Vec::with_capacity(n));
        for p in pieces {
            text.extend_from_slice(p);
            cuts.push(u16::try_from(text.len()).ok()?);
        }
        Some(Box::new(Ends {
            text: text.into(),
            cuts: cuts.into(),
            caller_routes: u8::try_from(up.len()).ok()?,
            dest: [caller_dest, leg.dest],
            cseq: [caller_cseq, 0],
        }))
    }

    fn piece(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.cuts[i - 1] };
        &self.text[usize::from(start)..usize::from(self.cuts[i])]
    }

    /// An in-dialog request with CSeq `number` passed, from the caller or from the callee.
    pub(in crate::core::proxy) fn saw(&mut self, from_caller: bool, number: u32) {
        let side = &mut self.cseq[usize::from(!from_caller)];
        *side = (*side).max(number);
    }
}

impl Proxy {
    /// `max_call_seconds` (or an expired session timer, `session`): a BYE to each leg of the
    /// call's first dialog (module docs).
    pub(in crate::core::proxy) fn bye_both_legs(
        &mut self,
        cx: &mut Cx<'_>,
        key: Key,
        session: bool,
    ) {
        let Some(ends) = self.calls.get_mut(key).and_then(|c| c.ends.take()) else {
            return;
        };
        let n = ends.cuts.len();
        let split = FIXED + usize::from(ends.caller_routes);
        for to_caller in [false, true] {
            let routes: Vec<&[u8]> = if to_caller {
                (FIXED..split).map(|i| ends.piece(i)).collect()
            } else {
                (split..n).map(|i| ends.piece(i)).collect()
            };
            let (target, from, to, cseq, dest) = if to_caller {
                let (from, to) = (ends.piece(CALLEE_TO), ends.piece(CALLER_FROM));
                (
                    ends.piece(CALLER_CONTACT),
                    from,
                    to,
                    ends.cseq[1],
                    ends.dest[0],
                )
            } else {
                let (from, to) = (ends.piece(CALLER_FROM), ends.piece(CALLEE_TO));
                (
                    ends.piece(CALLEE_CONTACT),
                    from,
                    to,
                    ends.cseq[0],
                    ends.dest[1],
                )
            };
            self.send_bye(
                cx,
                key,
                dest,
                InDialog {
                    method: b"BYE",
                    target,
                    routes: &routes,
                    via: b"",
                    from,
                    to,
                    call_id: ends.piece(CALL_ID),
                    cseq: cseq.saturating_add(1),
                    extra: if session { SESSION_REASON } else { REASON },
                },
            );
        }
    }
}

impl Proxy {
    /// Captures [`Ends`] from the first 2xx forwarded for an INVITE (`req`) that records its
    /// route, before the 2xx goes upstream: through the call's [`CallerNotes`] where it has
    /// them, else through a parse of `req`.
    pub(in crate::core::proxy) fn keep_ends(
        &mut self,
        cx: &Cx<'_>,
        key: Key,
        branch: usize,
        resp: &Message<'_>,
        req: &StoredRequest<'_>,
    ) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if call.ends.is_some() || !call.is_invite || !call.record_route {
            return;
        }
        let Some(target) = call.branches.get(branch).map(|b| b.target) else {
            return;
        };
        let caller = match (call.caller_notes, req.bytes()) {
            (Some(notes), Some(bytes)) => CallerSide::noted(bytes, &notes),
            _ => req.message().and_then(CallerSide::parsed),
        };
        call.ends = caller.and_then(|caller| Ends::capture(cx, call, caller, target, resp));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `Ends::capture` reads of the caller: the same through the notes as through a parse
    /// of the stored copy, wherever notes are taken.
    #[test]
    fn caller_notes_read_what_the_parse_reads() {
        let head = "INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bK1\r\n";
        let cases = [
            ("From: <sip:a@h>;tag=1\r\nTo: <sip:1000@h>\r\nContact: <sip:a@10.0.0.9:5070>\r\n", true),
            ("f: \"A\" <sip:a@h>;tag=1\r\nt: sip:1000@h\r\nm: sip:a@10.0.0.9;transport=udp;expires=5, <sip:b@x>\r\n", true),
            ("From: <sip:a@h>\r\n ;tag=folded\r\nTo: <sip:1000@h>\r\nContact: A <sips:a@[2001:db8::1]:5061;ob>;+sip.instance=\"<urn:x>\"\r\nContact: <sip:c@y>\r\n", true),
            ("From: <sip:a@h>;tag=1\r\nTo: <sip:1000@h>\r\nContact: *\r\n", false),
            ("From: <sip:a@h>;tag=1\r\nTo: <sip:1000@h>\r\n", false),
            ("From: <sip:a@h>;tag=1\r\nTo: <sip:1000@h>\r\nRecord-Route: <sip:p1;lr>\r\nContact: <sip:a@10.0.0.9>\r\n", false),
        ];
        for (rows, noted) in cases {
            let text =
                format!("{head}{rows}Call-ID: c1\r\nCSeq: 41 INVITE\r\nContent-Length: 0\r\n\r\n");
            let req = crate::sip::parse(text.as_bytes()).unwrap();
            let e = crate::sip::check_request(&req).unwrap();
            let contact = req.contacts().next().and_then(Result::ok);
            let notes = CallerNotes::of(&req, &e, contact.as_ref());
            assert_eq!(notes.is_some(), noted, "{text}");
            // The call stores a copy of the bytes: the notes are read there.
            let stored = text.clone().into_bytes();
            let parsed = crate::sip::parse(&stored).unwrap();
            let by_parse = CallerSide::parsed(&parsed);
            let Some(notes) = notes else {
                continue;
            };
            let (by_notes, by_parse) = (
                CallerSide::noted(&stored, &notes).unwrap(),
                by_parse.unwrap(),
            );
            assert_eq!(by_notes.from, by_parse.from);
            assert_eq!(by_notes.contact, by_parse.contact);
            assert_eq!(by_notes.cseq, by_parse.cseq);
            assert!(by_parse.up.is_empty() && by_notes.up.is_empty());
        }
    }
}
