//! Route, then handle: which shard owns a datagram, from what validation parsed of it.
//!
//! - Responses: the shard named in our top Via branch (authenticated by [`Ids::read_branch`]);
//!   anything else is not ours and is dropped by the owner of nothing (the receiving shard).
//! - Requests with our Record-Route token in their first Route (in-dialog requests and the ACK
//!   of a 2xx): the shard holding the dialog, which alone knows where its legs are.
//! - Other requests: the shard owning the Request-URI's number (SIP user part or tel number,
//!   [`number::of_uri`]; a DID counts as its extension's number), so an INVITE, its CANCEL and
//!   its non-2xx ACK meet on one shard; a REGISTER by its To user (the address-of-record); a
//!   feature code (`[features]`) by its From user, whose calls it acts on. Requests without a
//!   number are handled wherever they arrive.

use crate::config::Config;
use crate::core::ids::Ids;
use crate::core::number;
use crate::core::shard::{owner_of, ShardId};
use crate::sip::{Essentials, Message, Method, ResponseEssentials};

/// The Record-Route / Route parameter that carries our dialog token.
pub const ROUTE_TOKEN_PARAM: &str = "sf";

/// Which shard should handle the request `msg`, if not the one it arrived on (`None`: handle
/// here), read from what validation already parsed (`e`), so nothing is parsed twice.
///
/// The shard fields of branches and route tokens are read without their MACs: the owner checks
/// them, and a forged one only moves a datagram to a shard that drops it.
pub fn request_owner(
    msg: &Message<'_>,
    e: &Essentials<'_>,
    cfg: &Config,
    shards: u16,
) -> Option<ShardId> {
    if shards <= 1 {
        return None;
    }
    if let Some(route) = msg.routes().next().and_then(Result::ok) {
        if let Some(token) = route
            .uri
            .as_sip()
            .and_then(|u| u.param(ROUTE_TOKEN_PARAM))
            .flatten()
        {
            // In-dialog requests and the ACK of a 2xx: the shard holding the dialog.
            return Ids::route_token_shard(token, shards);
        }
    }
    let uri = if e.method == Method::Register {
        &e.to.uri
    } else {
        &e.request_uri
    };
    let mut number = number::of_uri(uri);
    if e.method != Method::Register && cfg.features.lookup(&number).is_some() {
        // A feature code acts on the dialling extension's calls, kept on that extension's shard.
        number = number::of_uri(&e.from.uri);
    }
    // A public number (DID) belongs to its extension's shard, where its devices are.
    let number = cfg.did(&number).unwrap_or(&number);
    (!number.is_empty()).then(|| owner_of(number, shards))
}

/// Which shard should handle a validated response, if not the one it arrived on: the one its
/// top Via's branch names (read like [`request_owner`]'s tokens, without the MAC).
pub fn response_owner(e: &ResponseEssentials<'_>, shards: u16) -> Option<ShardId> {
    if shards <= 1 {
        return None;
    }
    Ids::branch_shard(e.top_via.branch?, shards)
}
