//! Answers sipfork writes itself, statelessly, and where answers go.
//!
//! Below the handlers (dispatch, registrar, authentication, proxy), which all answer requests
//! the same way: back to the source address, with a fresh To tag.

use std::net::SocketAddr;

use crate::core::context::Cx;
use crate::sip::build::{self, Reply, ViaFix};
use crate::sip::{Message, Via};

/// Where a response to a request goes: back to the address it came from (symmetric response
/// routing, RFC 4961; RFC 3581 `rport` asks for exactly this). At a carrier edge most devices sit
/// behind NAT, where the Via's sent-by port is unreachable; with `rport` the sent-by port is
/// ignored anyway, and a device that sends from one port and listens on another is the rare case.
pub fn response_destination(_via: &Via<'_>, from: SocketAddr) -> SocketAddr {
    from
}

/// Answers `req` statelessly with a locally generated response (a To tag is added).
pub fn reply_to(
    cx: &mut Cx<'_>,
    req: &Message<'_>,
    from: SocketAddr,
    status: u16,
    reason: &str,
    extra: &[u8],
) {
    // Symmetric routing needs no Via to find the way back; a broken top Via (RFC 4475
    // `badinv01`) is copied as it came and gets no received/rport.
    let dest = from;
    let fix = req
        .top_via()
        .map(|via| ViaFix::for_source(&via, from))
        .unwrap_or_default();
    let tag = cx.ids.tag();
    let answer = Answer {
        status,
        reason,
        extra,
    };
    cx.out
        .push_with(dest, |buf| write_answer(req, None, fix, &tag, answer, buf));
}

/// A response sipfork writes itself, without a body.
#[derive(Clone, Copy)]
pub(crate) struct Answer<'a> {
    pub status: u16,
    pub reason: &'a str,
    /// Extra header rows (each ending in CRLF).
    pub extra: &'a [u8],
}

/// Appends `answer` to `req`: the top Via fixed by `fix` (`top_via`: that Via as already
/// parsed), the To tag `tag` added above 100.
pub(crate) fn write_answer(
    req: &Message<'_>,
    top_via: Option<&Via<'_>>,
    fix: ViaFix,
    tag: &[u8],
    answer: Answer<'_>,
    out: &mut Vec<u8>,
) {
    let Answer {
        status,
        reason,
        extra,
    } = answer;
    build::response_with(
        req,
        &Reply {
            status,
            reason,
            fix,
            to_tag: (status > 100).then_some(tag),
            extra,
            body: None,
        },
        top_via,
        out,
    )
}

/// `481 Call/Transaction Does Not Exist` for a request that names no transaction or dialog of
/// ours (or one its sender may not touch).
pub fn no_such_transaction(cx: &mut Cx<'_>, req: &Message<'_>, from: SocketAddr) {
    reply_to(cx, req, from, 481, "Call/Transaction Does Not Exist", b"");
}
