//! Dialog-aware feature codes (`[features]`, `docs/features.md`): the answered calls of each
//! extension, and *move* (RFC 3891 `Replaces`) and *join* (RFC 3911 `Join`) on them.
//!
//! **The lines of an extension.** When a 2xx that establishes a dialog passes through a call of
//! this shard, the dialog is recorded as a [`Line`] of the extension whose device is in it: the
//! callee extension for a call to one of its devices (received), the caller's extension for a
//! call an extension's device placed (its From is that extension; untrusted senders only, so an
//! authenticated device when digest is on). A line keeps both legs' tags, Call-ID, remote
//! targets, flows and the option tags each side advertised (`Supported`/`Require`), and is
//! released when the dialog record of its call ends (BYE through us, the maximum call duration,
//! or a move). Lines live on the shard that owns the extension; a placed call handled by another
//! shard (its callee's) is recorded there by a core-to-core note (`remote.rs`, counted as
//! `placed_elsewhere`), released by another when its dialog ends.
//!
//! **Move.** An INVITE of device D of extension N to the move code (alone, or followed by N)
//! while N has a line (several: the most recently answered; never one D itself is in) is
//! forwarded as a new call to that line's far end only, with `Replaces` naming the far end's
//! dialog (its to-tag is the far end's own tag) and `Require: replaces` when the far end
//! advertised `replaces`. Its 2xx makes D the device of the call (a new line, record-routed like
//! any call). When the far end has not ended the old dialog [`BYE_AFTER`] after accepting, the
//! proxy sends the old device a BYE with `Reason: SIP;cause=200;text="Call moved"`. A refusal
//! goes back to D unchanged. No line: 404.
//!
//! **Join.** The same with `Join` and `Require: join`, sent to the far end when it advertised
//! `join`, else to the device in the call when that device advertised it, else refused with
//! `420 Bad Extension` and `Unsupported: join`.
//!
//! Egress: a feature INVITE goes only to the recorded remote target of a leg of one of N's
//! lines (its flow under the NAT rule), never where the INVITE's own URI or Routes point.

mod remote;

use std::collections::HashMap;
use std::net::SocketAddr;

use super::call::{Call, Dialog};
use super::dialog::{leg_destination, Leg};
use super::{ForkPlan, ForkTarget, Proxy};
use crate::config::features::Feature;
use crate::core::context::Cx;
use crate::core::metrics::{MetricSink, ReasonCounters};
use crate::core::reply::reply_to;
use crate::core::shard::ShardId;
use crate::core::slab::Key;
use crate::core::timer::TimerId;
use crate::core::TimerKey;
use crate::sip::build::InDialog;
use crate::sip::{ContactValue, Essentials, HeaderName, Message};
use crate::time::{Duration, Instant};

/// How long the far end has, after accepting a move, to end the old dialog itself before the
/// proxy sends the old device a BYE.
pub const BYE_AFTER: Duration = Duration::from_secs(4);

/// One side of a recorded call.
#[derive(Clone, Debug)]
struct Side {
    /// Its remote target (the Contact URI it sent).
    uri: Box<[u8]>,
    /// Where it is reached: its flow, or its target under the NAT rule.
    dest: SocketAddr,
    /// Its dialog tag.
    tag: Box<[u8]>,
    /// The From/To value that names it (with its tag).
    party: Box<[u8]>,
    /// It advertised `replaces` / `join` (Supported or Require).
    replaces: bool,
    join: bool,
}

/// A confirmed dialog an extension's device is in.
#[derive(Clone, Debug)]
pub struct Line {
    /// The shard that holds the call, when it is not this one (a placed call handled on its
    /// callee's shard, recorded here by a note: `remote.rs`).
    origin: Option<ShardId>,
    call: Key,
    to_tag: u64,
    since: Instant,
    call_id: Box<[u8]>,
    device: Side,
    far: Side,
    /// CSeq the proxy uses for a BYE it sends the device in the far end's name.
    bye_cseq: u32,
    /// Route set from the proxy toward the device (nearest first).
    device_routes: Vec<Box<[u8]>>,
}

/// What a feature call (a forwarded move or join) remembers.
#[derive(Debug)]
pub struct Pending {
    feature: Feature,
    /// The line acted on.
    old: Line,
    /// The proxy's BYE to the old device, when the far end does not send one.
    bye_timer: Option<TimerId>,
}

/// Outcomes counted in `sipfork_feature_requests_total`.
#[derive(Clone, Copy)]
enum Outcome {
    Move,
    Join,
    NoCall,
    Forbidden,
    JoinUnsupported,
    Malformed,
    ProxyBye,
    PlacedElsewhere,
}

const OUTCOMES: [&str; 8] = [
    "move_forwarded",
    "join_forwarded",
    "no_call",
    "forbidden",
    "join_unsupported",
    "malformed",
    "proxy_bye",
    "placed_elsewhere",
];

/// The lines of every extension this shard owns.
#[derive(Default)]
pub struct Lines {
    by_ext: HashMap<Box<[u8]>, Vec<Line>>,
    /// The extensions that have a line in a call.
    by_call: HashMap<Key, Vec<Box<[u8]>>>,
    /// Lines of this shard's calls recorded on another shard: per call, each one's dialog
    /// (to-tag hash), owner shard and extension (released there by a note when it ends).
    sent: HashMap<Key, Vec<remote::Sent>>,
    /// Notes for other shards' cores, drained by the engine (`remote.rs`).
    notes: Vec<(ShardId, Vec<u8>)>,
    counts: ReasonCounters<8>,
}

impl Lines {
    fn add(&mut self, ext: &[u8], line: Line) {
        let key = line.call;
        self.by_ext.entry(ext.into()).or_default().push(line);
        let exts = self.by_call.entry(key).or_default();
        if !exts.iter().any(|e| &e[..] == ext) {
            exts.push(ext.into());
        }
    }

    fn find(&self, call: Key, to_tag: u64) -> Option<&Line> {
        let ext = self.by_call.get(&call)?;
        ext.iter()
            .filter_map(|e| self.by_ext.get(e))
            .flatten()
            .find(|l| l.origin.is_none() && l.call == call && l.to_tag == to_tag)
    }

    /// Drops the lines of `call` whose dialog is no longer in `dialogs`.
    fn release(&mut self, call: Key, dialogs: &[Dialog]) {
        self.release_sent(call, dialogs);
        let Some(exts) = self.by_call.remove(&call) else {
            return;
        };
        let mut left = Vec::new();
        for ext in exts {
            let Some(lines) = self.by_ext.get_mut(&ext) else {
                continue;
            };
            lines.retain(|l| {
                l.origin.is_some() || l.call != call || dialogs.iter().any(|d| d.to_tag == l.to_tag)
            });
            let keeps = lines.iter().any(|l| l.origin.is_none() && l.call == call);
            if lines.is_empty() {
                self.by_ext.remove(&ext);
            }
            if keeps {
                left.push(ext);
            }
        }
        if !left.is_empty() {
            self.by_call.insert(call, left);
        }
    }

    /// The flows of extension `number`'s devices that are in a call, with the Call-ID.
    pub fn in_call(&self, number: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
        self.by_ext
            .get(number)
            .into_iter()
            .flatten()
            .map(|l| (l.device.dest, l.call_id.to_vec()))
            .collect()
    }

    fn count(&mut self, o: Outcome) {
        self.counts.bump(o as usize);
    }

    /// Writes the feature counters.
    pub fn export_metrics(&self, sink: &mut MetricSink, labels: &[(&'static str, &str)]) {
        self.counts.export(
            sink,
            "sipfork_feature_requests_total",
            "Feature codes ([features] move/join) by outcome, proxy BYEs after a move, placed calls recorded on another shard",
            &OUTCOMES,
            labels,
        );
    }
}

/// Whether a message advertises option tag `tag` (Supported or Require).
fn advertises(msg: &Message<'_>, tag: &[u8]) -> bool {
    [HeaderName::Supported, HeaderName::Require]
        .into_iter()
        .flat_map(|h| msg.values(h))
        .any(|v| v.eq_ignore_ascii_case(tag))
}

fn contact_uri<'b>(msg: &Message<'b>) -> Option<&'b [u8]> {
    match msg.contacts().next()?.ok()? {
        ContactValue::Addr(a) => Some(a.addr.uri.raw()),
        ContactValue::Star => None,
    }
}

fn side(msg: &Message<'_>, party: &[u8], tag: &[u8], dest: SocketAddr) -> Option<Side> {
    Some(Side {
        uri: contact_uri(msg)?.into(),
        dest,
        tag: tag.into(),
        party: party.into(),
        replaces: advertises(msg, b"replaces"),
        join: advertises(msg, b"join"),
    })
}

/// Whether `msg` already carries a `Replaces` or `Join` row.
fn names_a_dialog(msg: &Message<'_>) -> bool {
    msg.first(HeaderName::Replaces).is_some()
        || msg
            .rows(HeaderName::Other)
            .any(|h| h.raw_name.eq_ignore_ascii_case(b"join"))
}

/// `Replaces:`/`Join:` row naming the dialog as `to` (the recipient) sees it, and its Require.
fn dialog_rows(feature: Feature, line: &Line, to: &Side, from: &Side, require: bool) -> Vec<u8> {
    let (name, tag) = match feature {
        Feature::Move => ("Replaces", "replaces"),
        Feature::Join => ("Join", "join"),
    };
    let mut rows = Vec::with_capacity(160);
    rows.extend_from_slice(name.as_bytes());
    rows.extend_from_slice(b": ");
    rows.extend_from_slice(&line.call_id);
    rows.extend_from_slice(b";to-tag=");
    rows.extend_from_slice(&to.tag);
    rows.extend_from_slice(b";from-tag=");
    rows.extend_from_slice(&from.tag);
    rows.extend_from_slice(b"\r\n");
    if require {
        rows.extend_from_slice(b"Require: ");
        rows.extend_from_slice(tag.as_bytes());
        rows.extend_from_slice(b"\r\n");
    }
    rows
}

impl Proxy {
    /// The lines this shard keeps (device overview).
    pub fn lines(&self) -> &Lines {
        &self.lines
    }

    /// A 2xx of branch `i` of `key` to the caller's INVITE `invite` is about to go upstream:
    /// records the dialog it establishes as a line of the extension whose device is in it
    /// (module docs). `invite` is parsed only when a feature code is configured.
    pub(super) fn note_answer(
        &mut self,
        cx: &mut Cx<'_>,
        key: Key,
        i: usize,
        resp: &Message<'_>,
        invite: &super::response::StoredRequest<'_>,
    ) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        // A line costs two dozen allocations per answered call: kept only while a feature code
        // can use it (the device overview's `in_call` with it).
        if !call.is_invite || !call.record_route || !cx.cfg.features.any() {
            return;
        }
        let (Some(invite), Some(branch)) = (invite.message(), call.branches.get(i)) else {
            return;
        };
        let Ok(to) = resp.to() else {
            return;
        };
        let (Ok(from), Some(callee_tag)) = (invite.from(), to.tag) else {
            return;
        };
        let Some(caller_tag) = from.tag else { return };
        let to_tag = super::dialog::tag_hash(cx, callee_tag);
        if call.dialogs.iter().any(|d| d.to_tag == to_tag) {
            return;
        }
        let nat = cx.cfg.registrar.nat;
        let caller_dest = leg_destination(nat, call.upstream, call.caller_target);
        let callee_dest = leg_destination(nat, branch.target, branch.remote_target);
        let (Some(from_row), Some(to_row), Ok(call_id), Ok(cseq)) = (
            invite.first_value(HeaderName::From),
            resp.first_value(HeaderName::To),
            invite.call_id(),
            invite.cseq(),
        ) else {
            return;
        };
        let (Some(caller), Some(callee)) = (
            side(invite, from_row, caller_tag, caller_dest),
            side(resp, to_row, callee_tag, callee_dest),
        ) else {
            return;
        };
        let line = |device: &Side, far: &Side, bye_cseq: u32, device_routes| Line {
            origin: None,
            call: key,
            to_tag,
            since: cx.now,
            call_id: call_id.into(),
            device: device.clone(),
            far: far.clone(),
            bye_cseq,
            device_routes,
        };
        let mut add = Vec::new();
        // Received: the call went to one of an extension's devices (not a spiral to ourselves).
        if call.to_extension && branch.target != cx.env.local {
            if let Some(Ok(ruri)) = invite.request_uri() {
                let number = crate::core::number::of_uri(&ruri);
                let number = cx.cfg.did(&number).unwrap_or(&number).to_vec();
                let routes = Leg::of(cx, resp, branch.target)
                    .map(|l| l.routes.into_iter().map(Into::into).collect())
                    .unwrap_or_default();
                add.push((number, line(&callee, &caller, cseq.number + 1000, routes)));
            }
        }
        // Placed: an extension's own device (not a trusted peer, not a spiral) called out.
        let number = crate::core::number::of_uri(&from.uri).into_owned();
        let untrusted = call.upstream != cx.env.local && !cx.cfg.is_trusted(call.upstream.ip());
        if untrusted && cx.cfg.extension(&number).is_some() {
            let owner = crate::core::shard::owner_of(&number, cx.env.shards);
            let placed = line(&caller, &callee, 1000, Vec::new());
            if owner == cx.env.shard {
                add.push((number, placed));
            } else {
                self.lines.count(Outcome::PlacedElsewhere);
                self.lines.send_record(owner, &number, &placed);
            }
        }
        for (number, l) in add {
            self.lines.add(&number, l);
        }
        self.move_accepted(cx, key);
    }

    /// A moved call was answered by the far end: the old device gets the proxy's BYE unless the
    /// far end ends the old dialog itself within [`BYE_AFTER`].
    /// The moved call keeps what the old call held on the policy counters (it is the same call
    /// to the far end), so it stays counted after the old dialog ends.
    fn move_accepted(&mut self, cx: &mut Cx<'_>, key: Key) {
        let Some(pending) = self.calls.get_mut(key).and_then(|c| c.feature.as_mut()) else {
            return;
        };
        if pending.feature != Feature::Move || pending.bye_timer.is_some() {
            return;
        }
        // A line of a call on another shard: its policy counts stay with that call there.
        let local = pending.old.origin.is_none();
        pending.bye_timer = Some(
            cx.timers
                .insert(cx.now + BYE_AFTER, TimerKey::FeatureBye { call: key }),
        );
        let old = pending.old.call;
        let holds = self
            .calls
            .get_mut(old)
            .filter(|c| local && c.dialogs.len() == 1)
            .map(|c| std::mem::take(&mut c.holds));
        if let (Some(holds), Some(call)) = (holds, self.calls.get_mut(key)) {
            call.holds = holds;
        }
    }

    /// The dialog records of `key` changed: its lines whose dialog ended are released.
    pub(super) fn release_lines(&mut self, key: Key) {
        let dialogs = self.calls.get(key).map_or(&[][..], |c| &c.dialogs[..]);
        self.lines.release(key, dialogs);
    }

    /// [`BYE_AFTER`] passed since the far end accepted a move: if the old dialog is still
    /// recorded, the proxy ends it toward the old device (BYE with a Reason) and forgets it.
    pub(super) fn feature_bye(&mut self, cx: &mut Cx<'_>, key: Key) {
        let Some(pending) = self.calls.get_mut(key).and_then(|c| c.feature.take()) else {
            return;
        };
        let old = &pending.old;
        if let Some(origin) = old.origin {
            // The old dialog lives on another shard: that shard ends it, if it still holds it.
            return self.lines.send_proxy_bye(origin, old);
        }
        if self.lines.find(old.call, old.to_tag).is_none() {
            return;
        }
        self.bye_old_device(cx, old);
    }

    /// Ends the old dialog of a moved call toward its device (a BYE in the far end's name, with
    /// a Reason) and forgets it. The dialog is one of this shard's calls.
    fn bye_old_device(&mut self, cx: &mut Cx<'_>, old: &Line) {
        let routes: Vec<&[u8]> = old.device_routes.iter().map(|r| &r[..]).collect();
        self.lines.count(Outcome::ProxyBye);
        self.send_bye(
            cx,
            old.call,
            old.device.dest,
            InDialog {
                method: b"BYE",
                target: &old.device.uri,
                routes: &routes,
                via: b"",
                from: &old.far.party,
                to: &old.device.party,
                call_id: &old.call_id,
                cseq: old.bye_cseq,
                extra: b"Reason: SIP;cause=200;text=\"Call moved\"\r\n",
            },
        );
        self.drop_dialog(cx, old.call, old.to_tag);
    }

    /// An INVITE to a feature code from `from`, whose sender is extension `owner` (digest
    /// authenticated, or its From when authentication is off); `named` is the extension dialled
    /// after the code, if any; `server_key`: the INVITE's ([`Proxy::match_request`]).
    #[allow(clippy::too_many_arguments)]
    pub fn feature_invite(
        &mut self,
        cx: &mut Cx<'_>,
        req: &Message<'_>,
        e: &Essentials<'_>,
        from: SocketAddr,
        server_key: super::ServerKey,
        feature: Feature,
        owner: Option<&[u8]>,
        named: &[u8],
    ) {
        let Some(owner) = owner.filter(|o| named.is_empty() || named == *o) else {
            self.lines.count(Outcome::Forbidden);
            return reply_to(
                cx,
                req,
                from,
                403,
                "Forbidden - only a device of the extension may use its calls",
                b"",
            );
        };
        if names_a_dialog(req) {
            self.lines.count(Outcome::Malformed);
            return reply_to(
                cx,
                req,
                from,
                400,
                "Bad Request - a feature code INVITE names no dialog itself",
                b"",
            );
        }
        let line = self
            .lines
            .by_ext
            .get(owner)
            .into_iter()
            .flatten()
            .filter(|l| l.device.dest != from)
            .max_by_key(|l| l.since)
            .cloned();
        let Some(line) = line else {
            self.lines.count(Outcome::NoCall);
            let reason = match feature {
                Feature::Move => "Not Found - no answered call to move",
                Feature::Join => "Not Found - no answered call to join",
            };
            return reply_to(cx, req, from, 404, reason, b"");
        };
        let (to, rows) = match feature {
            Feature::Move => (
                &line.far,
                dialog_rows(feature, &line, &line.far, &line.device, line.far.replaces),
            ),
            Feature::Join if line.far.join => (
                &line.far,
                dialog_rows(feature, &line, &line.far, &line.device, true),
            ),
            Feature::Join if line.device.join => (
                &line.device,
                dialog_rows(feature, &line, &line.device, &line.far, true),
            ),
            Feature::Join => {
                self.lines.count(Outcome::JoinUnsupported);
                return reply_to(
                    cx,
                    req,
                    from,
                    420,
                    "Bad Extension - no party of the call supports join",
                    b"Unsupported: join\r\n",
                );
            }
        };
        self.lines.count(match feature {
            Feature::Move => Outcome::Move,
            Feature::Join => Outcome::Join,
        });
        let target = ForkTarget {
            uri: std::borrow::Cow::Owned(to.uri.to_vec()),
            dest: to.dest,
            q: 1000,
            registered_at: Instant::ZERO,
            external: false,
            transport: crate::core::transport::Transport::Udp,
        };
        let plan = ForkPlan {
            record_route: true,
            single_answer: true,
            extra: &rows,
            ..ForkPlan::relay(true)
        };
        self.start_call(cx, req, e, from, server_key, vec![target], plan);
        if let Some(call) = self
            .index
            .get(&server_key.0)
            .copied()
            .and_then(|k| self.calls.get_mut(k))
        {
            call.feature = Some(Box::new(Pending {
                feature,
                old: line,
                bye_timer: None,
            }));
        }
    }
}

impl Call {
    /// The timer a feature call holds, for freeing.
    pub(super) fn feature_timer(&self) -> Option<TimerId> {
        self.feature.as_ref().and_then(|p| p.bye_timer)
    }
}
