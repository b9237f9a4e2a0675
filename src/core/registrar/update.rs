//! Deciding what a REGISTER's Contacts do to one extension (RFC 3261 §10.3 steps 6–7,
//! RFC 5626 §6).
//!
//! The update is all or nothing (§10.3 step 7: "committed … if and only if all binding updates
//! and additions succeed"), so [`plan`] decides everything before anything changes: the `*`
//! rules, each Contact's expiry (Contact `expires` over the Expires header over
//! `default_expires`; non-zero below `min_expires` → 423; above `max_expires` → clamped), its
//! binding, Call-ID/CSeq order against that binding, retransmission, the device limit and how
//! many to evict. The registrar then carries the plan out from the [`Planned`] entries alone:
//! each Contact is parsed once, and what applying needs (URI, instance, destination) is kept as
//! offsets into the datagram.
//!
//! Which binding a Contact refers to: with `+sip.instance`, the binding with the same instance
//! (RFC 5626: the device replaces its own binding, wherever it registers from; `reg-id` is
//! ignored, since sipfork does not implement Outbound's multiple flows); a Contact without one
//! (or whose instance is new) matches a binding whose Contact URI is equivalent under RFC 3261
//! §19.1.4 (so `%00` and `%00%00` are two bindings, RFC 4475 escnull) *and* that registered from
//! the same source address: two phones behind different NATs that both say
//! `Contact: <sip:1000@192.168.1.10>` stay two bindings. (The source port may change: a NAT that
//! re-maps a phone's flow must not leave the old binding ringing beside the new one.)
//! When the same binding is named twice in one REGISTER, the later Contact wins.
//!
//! The plan lives in a vector the registrar keeps, so a REGISTER allocates nothing here.

use std::net::SocketAddr;
use std::ops::Range;

use crate::config::{NatMode, OnLimit};
use crate::sip::{Contact, ContactValue, Message, Uri};

use super::binding::Binding;
use super::location::destination;

/// What one address Contact of the request does, and what applying it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// Id of the existing binding it refers to.
    pub matched: Option<u16>,
    /// Granted expiry in seconds; 0 removes.
    pub expires: u32,
    /// A later Contact of the same request names the same binding.
    pub superseded: bool,
    /// The Contact URI, as a range of the datagram.
    pub contact: Range<usize>,
    /// `+sip.instance` without quotes, as a range of the datagram.
    pub instance: Option<Range<usize>>,
    /// The REGISTER's device class (`[[device_classes]]`).
    pub class: u8,
    /// q in thousandths, when given.
    pub q: Option<u16>,
    /// Where requests for the binding will go.
    pub dest: SocketAddr,
}

impl Planned {
    /// The Contact URI.
    pub fn contact<'b>(&self, msg: &Message<'b>) -> &'b [u8] {
        msg.bytes().get(self.contact.clone()).unwrap_or(&[])
    }

    /// The instance.
    pub fn instance<'b>(&self, msg: &Message<'b>) -> Option<&'b [u8]> {
        let range = self.instance.clone()?;
        msg.bytes().get(range)
    }
}

/// Why a REGISTER's Contacts cannot be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// A Contact does not parse (`check_request` already refuses these).
    BadContact,
    /// `*` with another Contact or with an expiry other than `Expires: 0`.
    BadStar,
    /// A non-zero expiry below `min_expires`: 423 with Min-Expires.
    IntervalTooBrief,
    /// Same Call-ID as a binding but a lower CSeq (§10.3 step 7).
    OutOfOrder,
    /// More bindings than allowed, and the policy rejects.
    TooManyDevices,
    /// More bindings of the REGISTER's device class than its limit, and the policy rejects.
    TooManyDevicesOfClass,
    /// More Contacts in this request alone than bindings allowed.
    TooManyContacts,
}

/// What the plan decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No Contact: report the bindings.
    Query,
    /// `Contact: *` with `Expires: 0`: remove every binding.
    RemoveAll,
    /// Apply it, first evicting the oldest untouched bindings: `evict_class` of the REGISTER's
    /// device class, then of any class until `evict` are gone.
    Apply {
        /// Bindings to evict in all.
        evict: usize,
        /// Of those, bindings of the REGISTER's class.
        evict_class: usize,
    },
    /// Same Call-ID and CSeq as a binding: a retransmission; change nothing.
    Retransmission,
}

/// What decides a REGISTER besides its Contacts and the extension's bindings.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// `Expires` header of the request.
    pub header_expires: Option<u32>,
    /// `registrar.default_expires`, seconds.
    pub default_expires: u32,
    /// `registrar.min_expires`, seconds.
    pub min_expires: u32,
    /// `registrar.max_expires`, seconds.
    pub max_expires: u32,
    /// The extension's `max_contacts`.
    pub max_contacts: usize,
    /// The REGISTER's device class, and the extension's limit for it.
    pub class: u8,
    /// Devices of `class` the extension may have (`None`: only `max_contacts`).
    pub class_limit: Option<usize>,
    /// `registrar.on_limit`.
    pub on_limit: OnLimit,
    /// `registrar.nat`.
    pub nat: NatMode,
    /// Source address of the REGISTER.
    pub source: SocketAddr,
}

/// Does the stored Contact URI equal `uri` under RFC 3261 §19.1.4? Byte equality first: a
/// phone refreshing its binding writes the same bytes again.
fn same_uri(stored: &[u8], uri: &Uri<'_>) -> bool {
    stored == uri.raw() || Uri::parse(stored).is_ok_and(|s| s.equivalent(uri))
}

/// The existing binding `c`, registered from `source`, refers to.
fn find_match<'a>(
    bindings: &'a [Binding],
    c: &Contact<'_>,
    source: SocketAddr,
) -> Option<&'a Binding> {
    let same_contact =
        |b: &&Binding| b.source().ip() == source.ip() && same_uri(b.contact(), &c.addr.uri);
    if let Some(instance) = c.instance {
        let by_instance = bindings.iter().find(|b| {
            b.instance()
                .is_some_and(|i| i.eq_ignore_ascii_case(instance))
        });
        if by_instance.is_some() {
            return by_instance;
        }
        return bindings
            .iter()
            .filter(|b| b.instance().is_none())
            .find(same_contact);
    }
    bindings.iter().find(same_contact)
}

/// The expiry granted to one Contact, or 423.
fn granted_expiry(c: &Contact<'_>, rules: &Rules) -> Result<u32, PlanError> {
    let asked = c
        .expires
        .or(rules.header_expires)
        .unwrap_or(rules.default_expires);
    //= rfc3261#section-10.3
    //# If and only if the requested expiration interval is greater than zero AND smaller than
    //# one hour AND less than a registrar-configured minimum, the registrar MAY reject the
    //# registration with a response of 423 (Interval Too Brief).
    if asked == 0 {
        Ok(0)
    } else if asked < rules.min_expires {
        Err(PlanError::IntervalTooBrief)
    } else {
        Ok(asked.min(rules.max_expires))
    }
}

/// Decides what the REGISTER does; fills `plan` with one entry per address Contact, in order.
/// Each Contact is parsed once here, and no more than `max_contacts` are looked at, so a
/// datagram packed with Contacts costs bounded work.
pub fn plan(
    msg: &Message<'_>,
    call_id: &[u8],
    cseq: u32,
    bindings: &[Binding],
    rules: &Rules,
    plan: &mut Vec<Planned>,
) -> Result<Verdict, PlanError> {
    plan.clear();
    let (mut star, mut too_brief, mut out_of_order, mut retransmission) =
        (false, false, false, false);
    for c in msg.contacts() {
        let c = match c {
            Ok(ContactValue::Addr(c)) => c,
            Ok(ContactValue::Star) => {
                star = true;
                continue;
            }
            Err(_) => return Err(PlanError::BadContact),
        };
        if plan.len() >= rules.max_contacts {
            return Err(PlanError::TooManyContacts);
        }
        let expires = granted_expiry(&c, rules).unwrap_or_else(|_| {
            too_brief = true;
            0
        });
        let matched = find_match(bindings, &c, rules.source);
        if let Some(b) = matched.filter(|b| b.call_id() == call_id) {
            //= rfc3261#section-10.3
            //# If it does agree, it MUST remove the binding only if the CSeq in the request is
            //# higher than the value stored for that binding. Otherwise, the update MUST be
            //# aborted and the request fails.
            out_of_order |= cseq < b.cseq();
            retransmission |= cseq == b.cseq();
        }
        let contact = msg
            .offset_of(c.addr.uri.raw())
            .ok_or(PlanError::BadContact)?;
        let instance = match c.instance {
            Some(i) => Some(msg.offset_of(i).ok_or(PlanError::BadContact)?),
            None => None,
        };
        plan.push(Planned {
            matched: matched.map(Binding::id),
            expires,
            superseded: false,
            contact,
            instance,
            class: rules.class,
            q: c.q,
            dest: destination(rules.nat, &c.addr.uri, rules.source),
        });
    }
    if star {
        //= rfc3261#section-10.3
        //# If the request has additional Contact fields or an expiration time other than
        //# zero, the request is invalid, and the server MUST return a 400 (Invalid Request)
        return if plan.is_empty() && rules.header_expires == Some(0) {
            Ok(Verdict::RemoveAll)
        } else {
            Err(PlanError::BadStar)
        };
    }
    if plan.is_empty() {
        return Ok(Verdict::Query);
    }
    if too_brief {
        return Err(PlanError::IntervalTooBrief);
    }
    if out_of_order {
        return Err(PlanError::OutOfOrder);
    }
    if retransmission {
        return Ok(Verdict::Retransmission);
    }
    if plan.len() > 1 {
        supersede(msg, plan);
    }
    let live = || plan.iter().filter(|p| !p.superseded);
    let removed = live()
        .filter(|p| p.expires == 0 && p.matched.is_some())
        .count();
    let added = live()
        .filter(|p| p.expires > 0 && p.matched.is_none())
        .count();
    let after = bindings.len() - removed + added;
    let untouched = |b: &&Binding| !plan.iter().any(|p| p.matched == Some(b.id()));
    // Every binding the request keeps takes the REGISTER's class.
    let kept = live().filter(|p| p.expires > 0).count();
    let after_class = bindings
        .iter()
        .filter(untouched)
        .filter(|b| b.class() == rules.class)
        .count()
        + kept;
    let evict_class = rules
        .class_limit
        .map_or(0, |limit| after_class.saturating_sub(limit));
    let evict = after.saturating_sub(rules.max_contacts).max(evict_class);
    if evict == 0 {
        return Ok(Verdict::Apply {
            evict: 0,
            evict_class: 0,
        });
    }
    match rules.on_limit {
        OnLimit::Reject if evict_class > 0 => Err(PlanError::TooManyDevicesOfClass),
        OnLimit::Reject => Err(PlanError::TooManyDevices),
        OnLimit::EvictOldest => {
            let untouched_all = bindings.iter().filter(untouched).count();
            let untouched_class = bindings
                .iter()
                .filter(untouched)
                .filter(|b| b.class() == rules.class)
                .count();
            if untouched_all < evict || untouched_class < evict_class {
                return Err(PlanError::TooManyContacts);
            }
            Ok(Verdict::Apply { evict, evict_class })
        }
    }
}

/// Do two Contacts of one request name the same binding (same matched binding, or for new
/// ones the same instance and reg-id, or equivalent URIs without instance)?
fn same_binding(msg: &Message<'_>, a: &Planned, b: &Planned) -> bool {
    if a.matched.is_some() && a.matched == b.matched {
        return true;
    }
    match (a.instance(msg), b.instance(msg)) {
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
        (None, None) => match (Uri::parse(a.contact(msg)), Uri::parse(b.contact(msg))) {
            (Ok(x), Ok(y)) => x.equivalent(&y),
            _ => false,
        },
        _ => false,
    }
}

/// Marks every Contact that a later Contact of the same request replaces.
fn supersede(msg: &Message<'_>, plan: &mut [Planned]) {
    for i in 0..plan.len() {
        let replaced = plan
            .get(i + 1..)
            .unwrap_or(&[])
            .iter()
            .any(|later| plan.get(i).is_some_and(|p| same_binding(msg, p, later)));
        if let (true, Some(p)) = (replaced, plan.get_mut(i)) {
            p.superseded = true;
        }
    }
}

/// The oldest binding (earliest registration; lowest id on a tie) that no Contact of the
/// request names, of device class `class` when given: the one `evict-oldest` removes.
pub fn oldest_untouched(bindings: &[Binding], plan: &[Planned], class: Option<u8>) -> Option<u16> {
    bindings
        .iter()
        .filter(|b| !plan.iter().any(|p| p.matched == Some(b.id())))
        .filter(|b| class.is_none_or(|c| b.class() == c))
        .min_by_key(|b| (b.registered_us(), b.id()))
        .map(Binding::id)
}
