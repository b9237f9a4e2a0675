//! Who a request says it is from, once digest has said who sent it (RFC 3325).
//!
//! - A request authenticated as extension N may not claim, in its From, to be another number
//!   this platform serves (403): otherwise any phone could call out as its neighbour.
//! - Toward a trusted next hop (a `[[routes]]` trunk) it leaves with
//!   `P-Asserted-Identity: <sip:N@domain>`; P-Asserted-Identity and P-Preferred-Identity rows
//!   from untrusted senders are never passed on (`build::Forward::strip_identity`).

use crate::core::context::Cx;
use crate::core::number;
use crate::sip::{build, Essentials, Uri};

/// May a request authenticated as `user` carry its From? False when the From names another
/// number served here (in one of our domains, or as a tel URI).
pub fn from_matches(cx: &Cx<'_>, e: &Essentials<'_>, user: &[u8]) -> bool {
    let ours = match &e.from.uri {
        Uri::Sip(u) => cx.cfg.is_local_domain(u.host_raw, u.port),
        Uri::Tel(_) => true,
        Uri::Other(_) => false,
    };
    let claimed = number::of_uri(&e.from.uri);
    !ours || claimed.is_empty() || &claimed[..] == user || cx.cfg.extension(&claimed).is_none()
}

/// Appends the `P-Asserted-Identity` row for authenticated extension `user`.
pub fn asserted_row(cx: &Cx<'_>, user: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"P-Asserted-Identity: <sip:");
    out.extend_from_slice(user);
    out.push(b'@');
    match cx.cfg.server.domains.first() {
        Some(domain) => out.extend_from_slice(domain.to_string().as_bytes()),
        None => build::push_hostport(out, cx.env.local),
    }
    out.extend_from_slice(b">\r\n");
}
