//! Applying a REGISTER's Contacts to one extension (RFC 3261 §10.3 steps 6–7, RFC 5626 §6).
//!
//! Two passes over the Contact list, so the update is all or nothing (§10.3 step 7: "committed
//! … if and only if all binding updates and additions succeed"):
//! 1. [`plan`] validates every Contact and decides, without changing anything, which binding
//!    it updates, removes or adds: expiry (Contact `expires` over the Expires header over
//!    `default_expires`; non-zero below `min_expires` → 423; above `max_expires` → clamped),
//!    Call-ID/CSeq ordering against the matched binding, retransmission, the device limit and
//!    whom to evict.
//! 2. The registrar walks the Contacts again and carries the plan out, journalling each change.
//!
//! Which binding a Contact refers to: with `+sip.instance`, the binding with the same instance
//! and reg-id (RFC 5626: the device replaces its own binding, wherever it registers from); a
//! Contact without one (or whose instance is new) matches a binding whose Contact URI is
//! equivalent under RFC 3261 §19.1.4 (so `%00` and `%00%00` are two bindings, RFC 4475 escnull).
//! When the same binding is named twice in one REGISTER, the later Contact wins.
//!
//! The plan lives in a vector the registrar keeps, so a REGISTER allocates nothing here.

use crate::config::OnLimit;
use crate::sip::{Contact, ContactValue, Message, Uri};

use super::binding::Binding;

/// What one Contact of the request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    /// Id of the existing binding it refers to.
    pub matched: Option<u16>,
    /// Granted expiry in seconds; 0 removes.
    pub expires: u32,
    /// A later Contact of the same request names the same binding.
    pub superseded: bool,
}

/// Why a REGISTER's Contacts cannot be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// A non-zero expiry below `min_expires`: 423 with Min-Expires.
    IntervalTooBrief,
    /// Same Call-ID as a binding but a lower CSeq (§10.3 step 7).
    OutOfOrder,
    /// More bindings than allowed, and the policy rejects.
    TooManyDevices,
    /// More new bindings in this request alone than allowed.
    TooManyContacts,
}

/// What the plan decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Apply it, first evicting this many of the oldest untouched bindings.
    Apply {
        /// Bindings to evict.
        evict: usize,
    },
    /// Same Call-ID and CSeq as a binding: a retransmission; change nothing.
    Retransmission,
}

/// The expiry rules of one extension's REGISTER.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
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
    /// `registrar.on_limit`.
    pub on_limit: OnLimit,
}

/// The address Contacts of a REGISTER (the `*` form is handled before planning).
pub fn addr_contacts<'m, 'b>(msg: &'m Message<'b>) -> impl Iterator<Item = Contact<'b>> + 'm {
    msg.contacts().filter_map(|c| match c {
        Ok(ContactValue::Addr(c)) => Some(c),
        _ => None,
    })
}

/// The reg-id that identifies a flow: only meaningful with an instance (RFC 5626 §4.2).
pub fn flow_reg_id(c: &Contact<'_>) -> Option<u32> {
    c.instance.and(c.reg_id)
}

/// Does the stored Contact URI equal `uri` under RFC 3261 §19.1.4? Byte equality first: a
/// phone refreshing its binding writes the same bytes again.
fn same_uri(stored: &[u8], uri: &Uri<'_>) -> bool {
    stored == uri.raw() || Uri::parse(stored).is_ok_and(|s| s.equivalent(uri))
}

/// The existing binding `c` refers to.
pub fn find_match<'a>(bindings: &'a [Binding], c: &Contact<'_>) -> Option<&'a Binding> {
    if let Some(instance) = c.instance {
        let reg_id = flow_reg_id(c);
        let by_instance = bindings.iter().find(|b| {
            b.instance()
                .is_some_and(|i| i.eq_ignore_ascii_case(instance))
                && b.reg_id() == reg_id
        });
        if by_instance.is_some() {
            return by_instance;
        }
        return bindings
            .iter()
            .find(|b| b.instance().is_none() && same_uri(b.contact(), &c.addr.uri));
    }
    bindings.iter().find(|b| same_uri(b.contact(), &c.addr.uri))
}

/// Do two Contacts of one request name the same binding?
fn same_identity(a: &Contact<'_>, b: &Contact<'_>) -> bool {
    match (a.instance, b.instance) {
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(y) && flow_reg_id(a) == flow_reg_id(b),
        (None, None) => a.addr.uri.equivalent(&b.addr.uri),
        _ => false,
    }
}

/// The expiry granted to one Contact, or 423.
pub fn granted_expiry(c: &Contact<'_>, limits: &Limits) -> Result<u32, PlanError> {
    let asked = c
        .expires
        .or(limits.header_expires)
        .unwrap_or(limits.default_expires);
    //= rfc3261#section-10.3
    //# the registrar MAY shorten the interval ... If and only if the requested expiration
    //# interval is greater than zero AND smaller than one hour AND less than a
    //# registrar-configured minimum, the registrar MAY reject the registration with 423
    if asked == 0 {
        Ok(0)
    } else if asked < limits.min_expires {
        Err(PlanError::IntervalTooBrief)
    } else {
        Ok(asked.min(limits.max_expires))
    }
}

/// Pass 1: fills `plan` (one entry per address Contact, in order) and decides.
pub fn plan(
    msg: &Message<'_>,
    call_id: &[u8],
    cseq: u32,
    bindings: &[Binding],
    limits: &Limits,
    plan: &mut Vec<Planned>,
) -> Result<Verdict, PlanError> {
    plan.clear();
    let mut retransmission = false;
    for c in addr_contacts(msg) {
        let expires = granted_expiry(&c, limits)?;
        let matched = find_match(bindings, &c);
        if let Some(b) = matched.filter(|b| b.call_id() == call_id) {
            //= rfc3261#section-10.3
            //# If it does agree, it MUST remove the binding only if the CSeq in the request is
            //# higher than the value stored for that binding. Otherwise, the update MUST be
            //# aborted and the request fails.
            if cseq < b.cseq() {
                return Err(PlanError::OutOfOrder);
            }
            retransmission |= cseq == b.cseq();
        }
        plan.push(Planned {
            matched: matched.map(Binding::id),
            expires,
            superseded: false,
        });
    }
    if retransmission {
        return Ok(Verdict::Retransmission);
    }
    // A later Contact naming the same binding supersedes an earlier one.
    for (i, earlier) in addr_contacts(msg).enumerate() {
        let Some(mine) = plan.get(i).copied() else {
            break;
        };
        let later = addr_contacts(msg).enumerate().skip(i + 1).any(|(j, c)| {
            let theirs = plan.get(j).and_then(|p| p.matched);
            (mine.matched.is_some() && theirs == mine.matched) || same_identity(&earlier, &c)
        });
        if let (true, Some(p)) = (later, plan.get_mut(i)) {
            p.superseded = true;
        }
    }
    let live = || plan.iter().filter(|p| !p.superseded);
    let removed = live()
        .filter(|p| p.expires == 0 && p.matched.is_some())
        .count();
    let added = live()
        .filter(|p| p.expires > 0 && p.matched.is_none())
        .count();
    let after = bindings.len() - removed + added;
    let evict = after.saturating_sub(limits.max_contacts);
    if evict == 0 {
        return Ok(Verdict::Apply { evict: 0 });
    }
    if added > limits.max_contacts {
        return Err(PlanError::TooManyContacts);
    }
    match limits.on_limit {
        OnLimit::Reject => Err(PlanError::TooManyDevices),
        OnLimit::EvictOldest => {
            let untouched = bindings
                .iter()
                .filter(|b| !plan.iter().any(|p| p.matched == Some(b.id())))
                .count();
            if untouched < evict {
                return Err(PlanError::TooManyContacts);
            }
            Ok(Verdict::Apply { evict })
        }
    }
}

/// The oldest binding (earliest registration; lowest id on a tie) that no Contact of the
/// request names: the one `evict-oldest` removes.
pub fn oldest_untouched(bindings: &[Binding], plan: &[Planned]) -> Option<u16> {
    bindings
        .iter()
        .filter(|b| !plan.iter().any(|p| p.matched == Some(b.id())))
        .min_by_key(|b| (b.registered_us(), b.id()))
        .map(Binding::id)
}
