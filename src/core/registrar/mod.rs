//! Registrar (RFC 3261 §10.3, RFC 5626 §6 instance replacement): bindings of extensions to
//! devices, their expiry on the shard's timer wheel, their journal records, and the lookup the
//! proxy makes.
//!
//! # A REGISTER, step by step (§10.3)
//! 1. The Request-URI must be a SIP URI naming one of our domains (else 416 / 404).
//! 2. Any option tag in Require gets 420 with Unsupported: we support none (`path` would need a
//!    stored route set, `outbound`/`gruu` flow and GRUU handling; none of them exists).
//! 3. The To URI must be SIP or SIPS (RFC 4475 `unksm2`: else 400), then authentication
//!    ([`Auth`], 401 with WWW-Authenticate, 403 for wrong credentials).
//! 4. Authorization: the digest username must be the extension the To names (else 403).
//! 5. The address-of-record is the To URI's user part, unescaped: it must be a provisioned
//!    extension on a domain of ours (else 404; with digest, unknown users never get this far).
//! 6. `Contact: *` with `Expires: 0` removes every binding; `*` with anything else is 400. A
//!    REGISTER without Contact only asks for the bindings.
//! 7. Contacts are applied all or nothing (`update.rs`): expiry, 423, Call-ID/CSeq order,
//!    retransmissions, the device limit (`on_limit`: 403 or evict the oldest).
//! 8. The 200 OK lists every current binding with its remaining expiry.
//!
//! # Retransmissions without server transactions
//! No transaction is kept per REGISTER. A REGISTER whose Call-ID and CSeq equal those stored
//! with a binding it names is a retransmission: it is answered with the current bindings and
//! changes nothing. A lower CSeq in the same Call-ID is refused with
//! `500 Server Internal Error - CSeq out of order` (§10.3 step 7: "the update MUST be aborted and
//! the request fails"). A retransmitted authenticated REGISTER reuses its nonce-count; the
//! digest layer reports that as [`AuthOutcome::Replayed`], which is answered like the
//! retransmission it is when it is one, and with a `stale=true` challenge otherwise.
//!
//! # Expiry and persistence
//! Each extension has one timer, armed at or before its earliest expiry; when it fires, the
//! expired bindings of that extension go and the timer is re-armed. No scan of the whole table
//! ever runs on a request or a timer. Every binding change is a journal put or delete
//! ([`crate::core::persist::PersistLog`]) with key `NUMBER:ID` and the binding block as value
//! (wall-clock times, see `binding.rs`); [`Registrar::restore`] rebuilds a binding from one
//! record after a restart.
//!
//! Invariant: the table, the timers and the journal agree: every binding in the table has had
//! its latest state put into the journal, every removal has been journalled as a delete, and
//! every extension with bindings has a timer no later than its earliest expiry.

pub mod binding;
pub mod digest;
pub mod location;
pub mod reach;
mod update;

use std::net::SocketAddr;

use crate::config::{Config, NatMode};
use crate::core::auth::{Auth, AuthOutcome, ChallengeHeader};
use crate::core::context::Cx;
use crate::core::metrics::{MetricSink, ReasonCounters};
use crate::core::persist::PersistLog;
use crate::core::reply::reply_to;
use crate::core::TimerKey;
use crate::sip::build::push_u32;
use crate::sip::{Essentials, Message, Uri};

use self::binding::{parse_key, Binding, BindingSpec, RecordKey, Transport};
use self::location::{destination, LocationTable, NumberKey, Target};
pub use self::reach::Reach;
use self::update::{PlanError, Planned, Rules, Verdict};

/// Why a REGISTER was refused (metric label order = `REJECTS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reject {
    UnsupportedUriScheme,
    DomainNotServed,
    BadExtension,
    BadRequire,
    ToNotSip,
    UnknownExtension,
    NotYourExtension,
    BadExpires,
    BadContact,
    BadStar,
    IntervalTooBrief,
    OutOfOrder,
    TooManyDevices,
    TooManyContacts,
    AuthForbidden,
    AuthBadRequest,
    TrunkRegistration,
    TooManyDevicesOfClass,
}

const REJECTS: [&str; 18] = [
    "unsupported_uri_scheme",
    "domain_not_served",
    "bad_extension",
    "bad_require",
    "to_not_sip",
    "unknown_extension",
    "not_your_extension",
    "bad_expires",
    "bad_contact",
    "bad_star",
    "interval_too_brief",
    "out_of_order",
    "too_many_devices",
    "too_many_contacts",
    "auth_forbidden",
    "auth_bad_request",
    "trunk_registration",
    "too_many_devices_of_class",
];

impl Reject {
    /// Status and reason phrase (not used for the `Auth*` reasons: [`Auth::reply`] answers).
    fn answer(self) -> (u16, &'static str) {
        match self {
            Reject::UnsupportedUriScheme => (416, "Unsupported URI Scheme"),
            Reject::DomainNotServed => (404, "Not Found - domain not served here"),
            Reject::BadExtension => (420, "Bad Extension"),
            Reject::BadRequire => (400, "Bad Request - malformed Require"),
            Reject::ToNotSip => (400, "Bad Request - To must be a SIP or SIPS URI"),
            Reject::UnknownExtension => (404, "Not Found"),
            Reject::NotYourExtension => (
                403,
                "Forbidden - credentials do not match the address-of-record",
            ),
            Reject::BadExpires => (400, "Bad Request - malformed Expires"),
            Reject::BadContact => (400, "Bad Request - malformed Contact"),
            Reject::BadStar => (
                400,
                "Bad Request - Contact: * needs Expires: 0 and no other Contact",
            ),
            Reject::IntervalTooBrief => (423, "Interval Too Brief"),
            Reject::OutOfOrder => (500, "Server Internal Error - CSeq out of order"),
            Reject::TooManyDevices => (403, "Too many registered devices"),
            Reject::TooManyContacts => (403, "Too many contacts in one REGISTER"),
            Reject::TooManyDevicesOfClass => (403, "Too many registered devices of this class"),
            Reject::TrunkRegistration => (
                403,
                "Forbidden - a trunk is reached at its configured address and does not register",
            ),
            Reject::AuthForbidden => (403, "Forbidden"),
            Reject::AuthBadRequest => (400, "Bad Request"),
        }
    }
}

impl From<PlanError> for Reject {
    fn from(e: PlanError) -> Reject {
        match e {
            PlanError::BadContact => Reject::BadContact,
            PlanError::BadStar => Reject::BadStar,
            PlanError::IntervalTooBrief => Reject::IntervalTooBrief,
            PlanError::OutOfOrder => Reject::OutOfOrder,
            PlanError::TooManyDevices => Reject::TooManyDevices,
            PlanError::TooManyDevicesOfClass => Reject::TooManyDevicesOfClass,
            PlanError::TooManyContacts => Reject::TooManyContacts,
        }
    }
}

/// How a REGISTER ended (metric label order = `OUTCOMES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Updated,
    Query,
    RemovedAll,
    Retransmission,
    Challenged,
    Rejected,
}

const OUTCOMES: [&str; 6] = [
    "updated",
    "query",
    "removed_all",
    "retransmission",
    "challenged",
    "rejected",
];

enum Refusal<'b> {
    Reject(Reject),
    Auth(AuthOutcome<'b>),
}

impl From<Reject> for Refusal<'_> {
    fn from(r: Reject) -> Self {
        Refusal::Reject(r)
    }
}

impl From<PlanError> for Refusal<'_> {
    fn from(e: PlanError) -> Self {
        Refusal::Reject(e.into())
    }
}

/// What [`Registrar::restore`] did with one journal record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restore {
    /// The binding is back, with its remaining expiry.
    Restored,
    /// It expired while the process was down (a delete is journalled).
    Expired,
    /// Its number is no longer provisioned (a delete is journalled).
    NotProvisioned,
    /// Not a binding record of a version this build reads (left in the journal).
    Malformed,
}

/// One device of an extension, for the admin overview (`/extensions/{n}/devices`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Contact URI as registered.
    pub contact: String,
    /// Source address and port of the REGISTER.
    pub source: SocketAddr,
    /// Where calls to this device go (NAT rule applied).
    pub destination: SocketAddr,
    /// Transport the REGISTER came on (`UDP`, `TCP`, `TLS`).
    pub transport: &'static str,
    /// User-Agent, if sent.
    pub user_agent: Option<String>,
    /// q in thousandths (1000 when the device gave none).
    pub q: u16,
    /// Seconds until expiry (rounded up).
    pub expires_in: u64,
    /// Expiry, Unix seconds.
    pub expires_at_unix: u64,
    /// Last registration, Unix seconds.
    pub registered_at_unix: u64,
    /// `+sip.instance`, if sent.
    pub instance: Option<String>,
    /// Device class (`[[device_classes]]`; `ip_phone` when none matched).
    pub class: String,
    /// Call-ID of the last REGISTER.
    pub call_id: String,
    /// CSeq of the last REGISTER.
    pub cseq: u32,
}

impl Device {
    fn of(cfg: &Config, b: &Binding, now_us: u64) -> Device {
        let text = |s: &[u8]| String::from_utf8_lossy(s).into_owned();
        Device {
            contact: text(b.contact()),
            source: b.source(),
            destination: b.dest(),
            transport: b.transport().name(),
            user_agent: (!b.user_agent().is_empty()).then(|| text(b.user_agent())),
            q: b.q(),
            expires_in: remaining_secs(b, now_us),
            expires_at_unix: b.expires_us() / 1_000_000,
            registered_at_unix: b.registered_us() / 1_000_000,
            instance: b.instance().map(text),
            class: cfg.device_classes.name(b.class()).to_owned(),
            call_id: text(b.call_id()),
            cseq: b.cseq(),
        }
    }
}

/// Whole seconds left, rounded up, so a live binding never shows 0.
fn remaining_secs(b: &Binding, now_us: u64) -> u64 {
    b.expires_us().saturating_sub(now_us).div_ceil(1_000_000)
}

fn secs_u32(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

#[derive(Default, Debug)]
struct Metrics {
    outcomes: ReasonCounters<6>,
    rejects: ReasonCounters<18>,
    expired: u64,
    evicted: u64,
}

/// One shard's registrar.
pub struct Registrar {
    table: LocationTable,
    /// Pass-1 plan of the REGISTER being handled (kept to avoid allocating per request).
    plan: Vec<Planned>,
    /// Extra rows of the response being written.
    scratch: Vec<u8>,
    metrics: Metrics,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("extensions", &self.table.extension_count())
            .field("bindings", &self.table.binding_count())
            .finish_non_exhaustive()
    }
}

impl Registrar {
    /// An empty registrar; `wall_epoch_us` as in [`crate::core::context::Env`].
    pub fn new(wall_epoch_us: u64) -> Registrar {
        Registrar {
            table: LocationTable::new(wall_epoch_us),
            plan: Vec::new(),
            scratch: Vec::new(),
            metrics: Metrics::default(),
        }
    }

    /// The location table (read-only).
    pub fn table(&self) -> &LocationTable {
        &self.table
    }

    /// Where a call to extension `number` goes, best first: the bindings `reach` can reach
    /// (see [`LocationTable::targets`] and [`Reach`]).
    pub fn targets<'a, 'f>(
        &'a self,
        number: &[u8],
        reach: Reach<'f>,
    ) -> impl Iterator<Item = Target<'a>> + use<'a, 'f> {
        self.table.targets(number, reach)
    }

    /// Handles a REGISTER that passed [`crate::sip::check_request`] on the shard owning its
    /// To user, and answers it.
    pub fn handle_register(
        &mut self,
        cx: &mut Cx<'_>,
        auth: &mut Auth,
        msg: &Message<'_>,
        e: &Essentials<'_>,
        from: SocketAddr,
    ) {
        match self.register(cx, auth, msg, e, from) {
            Ok((outcome, key)) => {
                self.metrics.outcomes.bump(outcome as usize);
                self.reply_bindings(cx, msg, from, key);
            }
            Err(Refusal::Reject(why)) => {
                self.metrics.outcomes.bump(Outcome::Rejected as usize);
                self.metrics.rejects.bump(why as usize);
                self.reject(cx, msg, from, why);
            }
            Err(Refusal::Auth(outcome)) => {
                let counted = match outcome {
                    AuthOutcome::Forbidden(_) => Some(Reject::AuthForbidden),
                    AuthOutcome::BadRequest(_) => Some(Reject::AuthBadRequest),
                    _ => None,
                };
                match counted {
                    Some(why) => {
                        self.metrics.outcomes.bump(Outcome::Rejected as usize);
                        self.metrics.rejects.bump(why as usize);
                    }
                    // Counted by the throttle.
                    None if outcome == AuthOutcome::Blocked => {}
                    None => self.metrics.outcomes.bump(Outcome::Challenged as usize),
                }
                auth.reply(cx, msg, from, ChallengeHeader::WwwAuthenticate, &outcome);
            }
        }
    }

    fn register<'b>(
        &mut self,
        cx: &mut Cx<'_>,
        auth: &mut Auth,
        msg: &Message<'b>,
        e: &Essentials<'b>,
        from: SocketAddr,
    ) -> Result<(Outcome, NumberKey), Refusal<'b>> {
        //= rfc3261#section-10.3
        //# 1. The registrar inspects the Request-URI to determine whether it has access to
        //# bindings for the domain identified in the Request-URI.
        let ruri = e.request_uri.as_sip().ok_or(Reject::UnsupportedUriScheme)?;
        if !cx.cfg.is_local_domain(ruri.host_raw, ruri.port) {
            return Err(Reject::DomainNotServed.into());
        }
        //# 2. To guarantee that the registrar supports any necessary extensions, the registrar
        //# MUST process the Require header field values as described for UASs in Section 8.2.2.
        if let Some(tag) = msg.require().next() {
            return Err(tag
                .map_or(Reject::BadRequire, |_| Reject::BadExtension)
                .into());
        }
        let to = e.to.uri.as_sip().ok_or(Reject::ToNotSip)?;
        //# 3. A registrar SHOULD authenticate the UAC.
        let (user, replayed) = match auth.check(cx, msg, e, ChallengeHeader::WwwAuthenticate, from)
        {
            AuthOutcome::NotRequired => (None, None),
            AuthOutcome::Authorized { user } => (Some(user), None),
            replay @ AuthOutcome::Replayed { user } => (Some(user), Some(replay)),
            refused => return Err(Refusal::Auth(refused)),
        };
        //# 5. The registrar extracts the address-of-record from the To header field of the
        //# request. If the address-of-record is not valid for the domain in the Request-URI,
        //# the registrar MUST send a 404 (Not Found) response.
        if !cx.cfg.is_local_domain(to.host_raw, to.port) {
            return Err(Reject::DomainNotServed.into());
        }
        let number = to.user_unescaped().ok_or(Reject::UnknownExtension)?;
        let policy = cx.cfg.extension(&number).ok_or(Reject::UnknownExtension)?;
        if !policy.trunk().is_empty() {
            return Err(Reject::TrunkRegistration.into());
        }
        let key = NumberKey::from_digits(&number).ok_or(Reject::UnknownExtension)?;
        //# 4. The registrar SHOULD determine if the authenticated user is authorized to modify
        //# registrations for this address-of-record.
        if user.is_some_and(|u| u != &number[..]) {
            return Err(Reject::NotYourExtension.into());
        }
        let now_us = cx.env.wall_us(cx.now);
        // Bindings whose timer is due in this very loop turn must neither count nor be listed.
        self.remove_expired(cx, key, now_us);

        let header_expires = msg.expires().map_err(|_| Reject::BadExpires)?;
        let r = &cx.cfg.registrar;
        let class = device_class(cx.cfg, cx.arrival, msg);
        let rules = Rules {
            header_expires,
            default_expires: secs_u32(r.default_expires),
            min_expires: secs_u32(r.min_expires),
            max_expires: secs_u32(r.max_expires),
            max_contacts: usize::try_from(policy.max_contacts).unwrap_or(usize::MAX),
            class,
            class_limit: policy
                .class_limit(class)
                .map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
            on_limit: r.on_limit,
            // A device on a TCP or TLS connection is reached over that connection only.
            nat: if cx.arrival.is_stream() {
                NatMode::Flow
            } else {
                r.nat
            },
            source: from,
        };
        let bindings = self.table.extension(key).map_or(&[][..], |x| x.bindings());
        let verdict = update::plan(
            msg,
            e.call_id,
            e.cseq.number,
            bindings,
            &rules,
            &mut self.plan,
        )?;
        match (verdict, replayed) {
            (Verdict::RemoveAll, _) => self.remove_all(cx, key, e, replayed),
            (Verdict::Retransmission, _) => Ok((Outcome::Retransmission, key)),
            (Verdict::Query | Verdict::Apply { .. }, Some(replay)) => Err(Refusal::Auth(replay)),
            (Verdict::Query, None) => Ok((Outcome::Query, key)),
            (Verdict::Apply { evict, evict_class }, None) => {
                self.apply(cx, msg, e, from, key, (evict, evict_class, class), now_us);
                Ok((Outcome::Updated, key))
            }
        }
    }

    /// `Contact: *` with `Expires: 0`: removes every binding, unless a binding from the same
    /// Call-ID has an equal (retransmission) or higher (out of order) CSeq.
    fn remove_all<'b>(
        &mut self,
        cx: &mut Cx<'_>,
        key: NumberKey,
        e: &Essentials<'_>,
        replayed: Option<AuthOutcome<'b>>,
    ) -> Result<(Outcome, NumberKey), Refusal<'b>> {
        let same_call = || {
            self.table
                .extension(key)
                .into_iter()
                .flat_map(|x| x.bindings())
                .filter(|b| b.call_id() == e.call_id)
        };
        if same_call().any(|b| e.cseq.number < b.cseq()) {
            return Err(Reject::OutOfOrder.into());
        }
        if same_call().any(|b| e.cseq.number == b.cseq()) {
            return Ok((Outcome::Retransmission, key));
        }
        if let Some(replay) = replayed {
            return Err(Refusal::Auth(replay));
        }
        let digits = key.digits();
        if let Some(mut ext) = self.table.extension_mut(key) {
            let persist = &mut *cx.persist;
            ext.remove_expired(u64::MAX, |b| persist_delete(persist, digits.as_bytes(), b));
        }
        self.settle(cx, key);
        Ok((Outcome::RemovedAll, key))
    }

    /// Carries out the plan `update::plan` left in `self.plan`.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        cx: &mut Cx<'_>,
        msg: &Message<'_>,
        e: &Essentials<'_>,
        from: SocketAddr,
        key: NumberKey,
        (evict, evict_class, class): (usize, usize, u8),
        now_us: u64,
    ) {
        let digits = key.digits();
        let number = digits.as_bytes();
        let user_agent = msg.user_agent().unwrap_or(b"");
        let transport = Transport::from(cx.arrival);
        let mut ext = self.table.extension_or_insert(key);
        for n in 0..evict {
            let of_class = (n < evict_class).then_some(class);
            let Some(id) = update::oldest_untouched(ext.get().bindings(), &self.plan, of_class)
            else {
                break;
            };
            if let Some(old) = ext.remove(id) {
                persist_delete(cx.persist, number, &old);
            }
            self.metrics.evicted += 1;
        }
        for p in self.plan.iter().filter(|p| !p.superseded) {
            if p.expires == 0 {
                if let Some(id) = p.matched {
                    if let Some(old) = ext.remove(id) {
                        persist_delete(cx.persist, number, &old);
                    }
                }
                continue;
            }
            let id = p.matched.unwrap_or_else(|| ext.get().free_id());
            if let Some(old) = ext.get().get(id) {
                cx.persist.remember_old(|v| old.encode_value(v));
            }
            ext.upsert(&BindingSpec {
                id,
                contact: p.contact(msg),
                call_id: e.call_id,
                cseq: e.cseq.number,
                instance: p.instance(msg),
                class: p.class,
                user_agent,
                q: p.q,
                source: from,
                dest: p.dest,
                transport,
                registered_us: now_us,
                lifetime_secs: p.expires,
            });
            if let Some(b) = ext.get().get(id) {
                persist_put(cx.persist, number, b);
            }
        }
        ext.sort();
        self.settle(cx, key);
    }

    /// Removes the expired bindings of one extension (journalling each removal).
    fn remove_expired(&mut self, cx: &mut Cx<'_>, key: NumberKey, now_us: u64) {
        let Some(mut ext) = self.table.extension_mut(key) else {
            return;
        };
        let before = ext.get().bindings().len();
        let persist = &mut *cx.persist;
        ext.remove_expired(now_us, |b| {
            persist_delete(persist, key.digits().as_bytes(), b)
        });
        let removed = before - ext.get().bindings().len();
        if removed > 0 {
            self.metrics.expired += removed as u64;
            self.settle(cx, key);
        }
    }

    /// Restores the invariant for one extension after a change: drop it when it has no binding
    /// left, else make sure its timer fires no later than its earliest expiry.
    fn settle(&mut self, cx: &mut Cx<'_>, key: NumberKey) {
        if let Some(timer) = self.table.remove_if_empty(key) {
            cx.timers.cancel(timer);
        }
        let Some(earliest) = self
            .table
            .extension(key)
            .and_then(|x| x.earliest_expiry_us())
        else {
            return;
        };
        let at = self.table.instant_at(earliest);
        let Some(mut ext) = self.table.extension_mut(key) else {
            return;
        };
        let armed = ext.get().timer.and_then(|id| cx.timers.deadline(id));
        // A timer due earlier than needed stays: it fires, finds nothing expired and re-arms,
        // which is cheaper than re-arming on every refresh.
        if armed.is_some_and(|due| due <= at) {
            return;
        }
        if let Some(old) = ext.timer().take() {
            cx.timers.cancel(old);
        }
        *ext.timer() = Some(
            cx.timers
                .insert(at, TimerKey::BindingExpiry { extension: key }),
        );
    }

    /// The expiry timer of extension `key` fired.
    pub fn handle_expiry(&mut self, cx: &mut Cx<'_>, key: NumberKey) {
        if let Some(mut ext) = self.table.extension_mut(key) {
            // It fired, so it is no longer armed.
            *ext.timer() = None;
        }
        let now_us = cx.env.wall_us(cx.now);
        self.remove_expired(cx, key, now_us);
        self.settle(cx, key);
    }

    /// Rebuilds one binding from its journal record (engine start-up, on the owning shard):
    /// the remaining expiry follows from the stored wall-clock expiry, the destination is
    /// recomputed under the current NAT mode, and the timer is re-armed.
    pub fn restore(&mut self, cx: &mut Cx<'_>, key: &[u8], value: &[u8]) -> Restore {
        let Some((number, id)) = parse_key(key) else {
            return Restore::Malformed;
        };
        let Some(stored) = Binding::decode_value(value).filter(|b| b.id() == id) else {
            return Restore::Malformed;
        };
        if stored.expires_us() <= cx.env.wall_us(cx.now) {
            cx.persist.delete(key);
            return Restore::Expired;
        }
        let Some(nkey) = cx
            .cfg
            .extension(number)
            .and_then(|_| NumberKey::from_digits(number))
        else {
            cx.persist.delete(key);
            return Restore::NotProvisioned;
        };
        let mut spec = stored.spec();
        // A binding over a connection is reached at the connection's address (the recorded
        // source), as when it registered; only a datagram binding's comes from its Contact.
        spec.dest = match Uri::parse(stored.contact()) {
            Ok(u) if !spec.transport.is_flow() => {
                destination(cx.cfg.registrar.nat, &u, spec.source)
            }
            _ => spec.source,
        };
        let mut ext = self.table.extension_or_insert(nkey);
        ext.upsert(&spec);
        ext.sort();
        self.settle(cx, nkey);
        Restore::Restored
    }

    /// Puts binding record `key` back as it was before a change the journal could not take:
    /// `old` is its earlier record, `None` when it did not exist (rollback of a failed journal
    /// write, `Core::persist_failed`).
    pub fn revert(&mut self, cx: &mut Cx<'_>, key: &[u8], old: Option<&[u8]>) {
        if let Some(old) = old {
            if self.restore(cx, key, old) == Restore::Restored {
                return;
            }
        }
        let Some((number, id)) = parse_key(key) else {
            return;
        };
        let Some(nkey) = NumberKey::from_digits(number) else {
            return;
        };
        if let Some(mut ext) = self.table.extension_mut(nkey) {
            ext.remove(id);
        }
        self.settle(cx, nkey);
    }

    /// Hands every binding to `record` as its journal put (key, value): the live set a journal
    /// compaction writes. Walks the whole table: never on a request's path.
    pub fn for_each_record(&self, mut record: impl FnMut(&[u8], &[u8])) {
        let mut value = Vec::new();
        for (key, ext) in self.table.iter() {
            let digits = key.digits();
            for b in ext.bindings() {
                value.clear();
                b.encode_value(&mut value);
                record(RecordKey::new(digits.as_bytes(), b.id()).as_bytes(), &value);
            }
        }
    }

    /// The devices of extension `number` at wall-clock `now_us`, in target order; `None` when
    /// the number is not provisioned.
    pub fn devices(&self, cfg: &Config, now_us: u64, number: &[u8]) -> Option<Vec<Device>> {
        cfg.extension(number)?;
        let bindings = NumberKey::from_digits(number)
            .and_then(|k| self.table.extension(k))
            .map_or(&[][..], |x| x.bindings());
        Some(
            bindings
                .iter()
                .filter(|b| b.expires_us() > now_us)
                .map(|b| Device::of(cfg, b, now_us))
                .collect(),
        )
    }

    /// 200 OK listing every current binding of `key`.
    fn reply_bindings(
        &mut self,
        cx: &mut Cx<'_>,
        msg: &Message<'_>,
        from: SocketAddr,
        key: NumberKey,
    ) {
        self.scratch.clear();
        let now_us = cx.env.wall_us(cx.now);
        let live = self
            .table
            .extension(key)
            .map_or(&[][..], |x| x.bindings())
            .iter()
            .filter(|b| b.expires_us() > now_us);
        for b in live {
            write_contact_row(&mut self.scratch, b, now_us);
        }
        reply_to(cx, msg, from, 200, "OK", &self.scratch);
    }

    fn reject(&mut self, cx: &mut Cx<'_>, msg: &Message<'_>, from: SocketAddr, why: Reject) {
        self.scratch.clear();
        match why {
            Reject::IntervalTooBrief => {
                //= rfc3261#section-10.3
                //# the registrar MAY reject the registration with a response of 423 (Interval
                //# Too Brief). This response MUST contain a Min-Expires header field
                self.scratch.extend_from_slice(b"Min-Expires: ");
                push_u32(&mut self.scratch, secs_u32(cx.cfg.registrar.min_expires));
                self.scratch.extend_from_slice(b"\r\n");
            }
            Reject::BadExtension => {
                //= rfc3261#section-8.2.2.3
                //# the UAS MUST ... include an Unsupported header field in the response listing
                //# those options it does not understand
                self.scratch.extend_from_slice(b"Unsupported: ");
                for (i, tag) in msg.require().flatten().enumerate() {
                    if i > 0 {
                        self.scratch.extend_from_slice(b", ");
                    }
                    self.scratch.extend_from_slice(tag);
                }
                self.scratch.extend_from_slice(b"\r\n");
            }
            _ => {}
        }
        let (status, reason) = why.answer();
        reply_to(cx, msg, from, status, reason, &self.scratch);
    }

    /// Writes the registrar's counters and gauges.
    pub fn export_metrics(&self, sink: &mut MetricSink, labels: &[(&'static str, &str)]) {
        for (i, outcome) in OUTCOMES.iter().enumerate() {
            let mut l = labels.to_vec();
            l.push(("outcome", outcome));
            sink.counter(
                "sipfork_registrations_total",
                "REGISTER requests handled, by outcome",
                &l,
                self.metrics.outcomes.get(i),
            );
        }
        self.metrics.rejects.export(
            sink,
            "sipfork_registrar_rejects_total",
            "REGISTER requests refused, by reason",
            &REJECTS,
            labels,
        );
        sink.gauge(
            "sipfork_bindings",
            "Current bindings (registered devices)",
            labels,
            self.table.binding_count() as u64,
        );
        sink.gauge(
            "sipfork_registered_extensions",
            "Extensions with at least one binding",
            labels,
            self.table.extension_count() as u64,
        );
        sink.counter(
            "sipfork_bindings_expired_total",
            "Bindings removed because they expired",
            labels,
            self.metrics.expired,
        );
        sink.counter(
            "sipfork_bindings_evicted_total",
            "Bindings evicted for a newer device (on_limit = evict-oldest)",
            labels,
            self.metrics.evicted,
        );
    }
}

/// `Contact: <uri>;expires=N[;q=…][;+sip.instance="…"][;reg-id=N]` (§10.3 step 8).
fn write_contact_row(out: &mut Vec<u8>, b: &Binding, now_us: u64) {
    out.extend_from_slice(b"Contact: <");
    out.extend_from_slice(b.contact());
    out.extend_from_slice(b">;expires=");
    push_u32(
        out,
        u32::try_from(remaining_secs(b, now_us)).unwrap_or(u32::MAX),
    );
    if b.q_given() {
        out.extend_from_slice(b";q=");
        push_qvalue(out, b.q());
    }
    if let Some(instance) = b.instance() {
        out.extend_from_slice(b";+sip.instance=\"");
        out.extend_from_slice(instance);
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
}

/// The device class of a REGISTER (`[[device_classes]]`): its User-Agent, a parameter on any
/// of its Contacts, or the transport it came over.
fn device_class(cfg: &Config, arrival: crate::core::transport::Transport, msg: &Message<'_>) -> u8 {
    let classes = &cfg.device_classes;
    if classes.len() <= 1 {
        return 0;
    }
    let user_agent = msg.user_agent().unwrap_or(b"");
    classes.classify_over(arrival, user_agent, |param| {
        msg.contacts().filter_map(Result::ok).any(|c| match c {
            crate::sip::ContactValue::Addr(c) => c.addr.params.get(param).is_some(),
            crate::sip::ContactValue::Star => false,
        })
    })
}

/// A qvalue from thousandths: `1`, `0`, `0.5`, `0.25`, `0.125`.
fn push_qvalue(out: &mut Vec<u8>, q: u16) {
    if q >= 1000 {
        out.push(b'1');
        return;
    }
    out.push(b'0');
    if q == 0 {
        return;
    }
    let digits = [
        b'0' + (q / 100) as u8,
        b'0' + (q / 10 % 10) as u8,
        b'0' + (q % 10) as u8,
    ];
    let len = 3 - digits.iter().rev().take_while(|&&d| d == b'0').count();
    out.push(b'.');
    out.extend_from_slice(&digits[..len]);
}

fn persist_put(persist: &mut PersistLog, number: &[u8], b: &Binding) {
    persist.put(RecordKey::new(number, b.id()).as_bytes(), |value| {
        b.encode_value(value)
    });
}

/// Journals the removal of `removed` (its record is the undo value).
fn persist_delete(persist: &mut PersistLog, number: &[u8], removed: &Binding) {
    persist.remember_old(|old| removed.encode_value(old));
    persist.delete(RecordKey::new(number, removed.id()).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qvalues_print_back() {
        for (q, text) in [
            (1000, "1"),
            (0, "0"),
            (500, "0.5"),
            (250, "0.25"),
            (125, "0.125"),
            (1, "0.001"),
        ] {
            let mut out = Vec::new();
            push_qvalue(&mut out, q);
            assert_eq!(out, text.as_bytes());
            assert_eq!(crate::sip::headers::contact::parse_qvalue(&out), Some(q));
        }
    }
}
