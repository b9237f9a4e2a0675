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
use crate::core::proxy::{uri_destination, Proxy};
use crate::core::slab::Key;
use crate::sip::build::InDialog;
use crate::sip::{HeaderName, Message, Uri};

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

impl Ends {
    /// From the call's INVITE `req` and the 2xx of the branch aimed at `branch_target`.
    pub(in crate::core::proxy) fn capture(
        cx: &Cx<'_>,
        call: &Call,
        req: &Message<'_>,
        branch_target: SocketAddr,
        resp: &Message<'_>,
    ) -> Option<Box<Ends>> {
        let caller_contact = match req.contacts().next()?.ok()? {
            crate::sip::ContactValue::Addr(c) => c.addr.uri.raw(),
            crate::sip::ContactValue::Star => return None,
        };
        // The INVITE's Record-Routes were added above us: nearest first, the caller's leg.
        let up: Vec<_> = req.record_routes().filter_map(Result::ok).collect();
        let caller_dest = match up.first() {
            None => leg_destination(cx.cfg.registrar.nat, call.upstream, call.caller_target),
            Some(r) => match r.uri {
                Uri::Sip(u) => uri_destination(&u)?,
                _ => return None,
            },
        };
        let leg = Leg::of(cx, resp, branch_target)?;
        let caller_cseq = req.cseq().ok()?.number;
        let fixed: [&[u8]; FIXED] = [
            leg.call_id,
            req.first_value(HeaderName::From)?,
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
    /// route, before the 2xx goes upstream.
    pub(in crate::core::proxy) fn keep_ends(
        &mut self,
        cx: &Cx<'_>,
        key: Key,
        branch: usize,
        resp: &Message<'_>,
        req: Option<&Message<'_>>,
    ) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if call.ends.is_some() || !call.is_invite || !call.record_route {
            return;
        }
        let (Some(target), Some(req)) = (call.branches.get(branch).map(|b| b.target), req) else {
            return;
        };
        call.ends = Ends::capture(cx, call, req, target, resp);
    }
}
