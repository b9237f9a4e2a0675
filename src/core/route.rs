//! Route, then handle: which shard owns a datagram, from a cheap look at it.
//!
//! - Responses: the shard named in our top Via branch (authenticated by [`Ids::read_branch`]);
//!   anything else is not ours and is dropped by the owner of nothing (the receiving shard).
//! - Requests with our Record-Route token in their first Route (in-dialog requests): the shard
//!   holding the dialog. An ACK for a 2xx needs no state, so any shard forwards it.
//! - Other requests: the shard owning the Request-URI's user part (the extension), so an
//!   INVITE, its CANCEL and its non-2xx ACK meet on one shard; a REGISTER by its To user (the
//!   address-of-record). Requests without a user part are handled wherever they arrive.

use crate::core::ids::Ids;
use crate::core::shard::{owner_of, ShardId};
use crate::sip::{Message, Method};

/// The Record-Route / Route parameter that carries our dialog token.
pub const ROUTE_TOKEN_PARAM: &str = "sf";

/// Which shard should handle `msg`, if not the one it arrived on. `None`: handle here.
pub fn owner(msg: &Message<'_>, ids: &Ids, shards: u16) -> Option<ShardId> {
    if shards <= 1 {
        return None;
    }
    if !msg.is_request() {
        let via = msg.top_via().ok()?;
        return ids.read_branch(via.branch?, shards).map(|b| b.shard);
    }
    let method = msg.method()?;
    if let Some(route) = msg.routes().next().and_then(Result::ok) {
        if let Some(token) = route
            .uri
            .as_sip()
            .and_then(|u| u.param(ROUTE_TOKEN_PARAM))
            .flatten()
        {
            if method == Method::Ack {
                return None;
            }
            return ids.read_route_token(token, shards).map(|d| d.shard);
        }
    }
    let uri = if method == Method::Register {
        msg.to().ok()?.uri
    } else {
        msg.request_uri()?.ok()?
    };
    let user = uri.as_sip()?.user_unescaped()?;
    Some(owner_of(&user, shards))
}
