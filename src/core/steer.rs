//! The owner of a datagram as the kernel's steering program computes it: the core's rules
//! ([`route::request_owner`], [`route::response_owner`]) read from raw bytes in bounded scans,
//! so a `SO_ATTACH_REUSEPORT_EBPF` program
//! (`engine::steer`) can deliver each datagram to the shard that will handle it.
//!
//! This function is the program's specification: `engine::steer` runs the loaded program on the
//! same datagrams (`BPF_PROG_TEST_RUN`) and must answer exactly as [`wire_owner`]; the tests here
//! check that whenever [`wire_owner`] names a shard of a valid message, the core names the same
//! one (an invalid one is refused wherever it arrives). Where they could differ the program says "no choice" and the kernel's hash plus the mailbox handle
//! the datagram as without steering: correctness never depends on the program.
//!
//! Rules, over the first [`WINDOW`] bytes (`n`):
//! - Response (`SIP/2.0 ` first): the first header row named `Via`/`v` (any case, blanks before
//!   the colon); its first `;branch=` must be followed by `z9hG4bKsf`, four lower-case hex digits
//!   and `.`: that shard ([`Ids::branch_shard`]).
//! - Request: the first header row named `Route`; if its row holds `;sf=` followed by four hex
//!   digits and `.`, that shard ([`Ids::route_token_shard`]). A first Route without our token
//!   counts as no Route, as in [`route::request_owner`].
//! - Otherwise the number: for `REGISTER ` the To row's URI, else the Request-URI (after the
//!   first space of the first line). The user is what follows the first `sip:`/`sips:` of that
//!   row, up to `@`, at most [`MAX_USER`] bytes; any of `%` (escapes), `*`, `#` (feature codes),
//!   `;`, `:`, `>`, `,`, `"`, `<`, blanks or line ends before the `@` → no choice. A user whose
//!   length a DID range of the configuration has ([`WireParams::did_widths`]) → no choice (the
//!   core maps DIDs to their extension). Then [`owner_of`] (FNV-1a, the core's own hash).
//! - Header rows are the lines after the first, up to the first empty line; at most
//!   [`MAX_ROWS`] rows are looked at.
//!
//! [`route::request_owner`]: crate::core::route::request_owner
//! [`route::response_owner`]: crate::core::route::response_owner
//! [`Ids::branch_shard`]: crate::core::ids::Ids::branch_shard
//! [`Ids::route_token_shard`]: crate::core::ids::Ids::route_token_shard

use crate::config::Config;
use crate::core::ids::{Ids, BRANCH_PREFIX};
use crate::core::shard::{owner_of, ShardId};

/// Bytes of a datagram the program looks at.
pub const WINDOW: usize = 1024;
/// Longest user part the program hashes.
pub const MAX_USER: usize = 64;
/// Header rows the program looks at.
pub const MAX_ROWS: usize = 40;
/// Bytes of a Via or Route row searched for the parameter.
pub const MAX_ROW_SCAN: usize = 256;

/// What the program needs from the configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireParams {
    /// Bit `L` set: a number of `L` bytes (a leading `+` included) may be a DID, so its owner
    /// needs the configuration and the program gives no choice. Lengths ≥ 64 never steer.
    pub did_widths: u64,
}

impl WireParams {
    /// The parameters of `cfg`: the widths of its `[[dids]]` ranges.
    pub fn of(cfg: &Config) -> WireParams {
        let mut did_widths = 0u64;
        for d in cfg.did_ranges() {
            let len = usize::from(d.range.width) + usize::from(d.plus);
            if len < 64 {
                did_widths |= 1 << len;
            }
        }
        WireParams { did_widths }
    }
}

/// The shard the steering program picks for datagram `d` among `shards`, or `None`: no choice
/// (the kernel's hash decides and the mailbox corrects it).
pub fn wire_owner(d: &[u8], shards: u16, params: &WireParams) -> Option<ShardId> {
    let d = &d[..d.len().min(WINDOW)];
    if shards <= 1 || d.len() < 16 {
        return None;
    }
    if d.starts_with(b"SIP/2.0 ") {
        let row = find_row(d, RowName::Via)?;
        let p = find_in_row(d, row, b";branch=")?;
        let rest = d.get(p..)?.strip_prefix(BRANCH_PREFIX)?;
        return hex_shard(rest, shards);
    }
    let register = d.starts_with(b"REGISTER ");
    let mut to_row = None;
    let mut route_seen = false;
    for (row, name) in rows(d) {
        match name {
            RowName::Route if !route_seen => {
                route_seen = true;
                if let Some(p) = find_in_row(d, row, b";sf=") {
                    // A token that does not read is garbled: no choice.
                    return hex_shard(&d[p..], shards);
                }
            }
            RowName::To if register && to_row.is_none() => to_row = Some(row),
            _ => {}
        }
    }
    let start = if register {
        to_row?
    } else {
        // The Request-URI: after the first space of the first line (within 32 bytes).
        let space = d.iter().take(32).position(|&b| b == b' ')?;
        space + 1
    };
    let user = user_at(d, start)?;
    if user.len() < 64 && params.did_widths >> user.len() & 1 == 1 {
        return None;
    }
    Some(owner_of(user, shards))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RowName {
    Via,
    Route,
    To,
    Other,
}

/// The header rows of `d` as (offset of the name, name kind), at most [`MAX_ROWS`], stopping at
/// the empty line.
fn rows(d: &[u8]) -> impl Iterator<Item = (usize, RowName)> + '_ {
    let mut at = 0;
    let mut count = 0;
    std::iter::from_fn(move || {
        if count == MAX_ROWS {
            return None;
        }
        let nl = d.get(at..)?.iter().position(|&b| b == b'\n')?;
        let start = at + nl + 1;
        at = start;
        count += 1;
        match d.get(start) {
            None | Some(b'\r' | b'\n') => None,
            Some(_) => Some((start, row_name(d, start))),
        }
    })
}

fn find_row(d: &[u8], want: RowName) -> Option<usize> {
    rows(d).find(|&(_, name)| name == want).map(|(row, _)| row)
}

/// Classifies the header row starting at `at`: `Via`/`v`, `Route`, `To`/`t` (any case), blanks
/// allowed before the colon.
fn row_name(d: &[u8], at: usize) -> RowName {
    let lower = |i: usize| d.get(at + i).map_or(0, |b| b | 0x20);
    let colon_after = |mut i: usize| {
        while matches!(d.get(at + i), Some(b' ' | b'\t')) && i < 8 {
            i += 1;
        }
        d.get(at + i) == Some(&b':')
    };
    match lower(0) {
        b'v' if colon_after(1) || (lower(1) == b'i' && lower(2) == b'a' && colon_after(3)) => {
            RowName::Via
        }
        b't' if colon_after(1) || (lower(1) == b'o' && colon_after(2)) => RowName::To,
        b'r' if lower(1) == b'o'
            && lower(2) == b'u'
            && lower(3) == b't'
            && lower(4) == b'e'
            && colon_after(5) =>
        {
            RowName::Route
        }
        _ => RowName::Other,
    }
}

/// Offset just past the first `needle` in the row starting at `row` (within [`MAX_ROW_SCAN`]
/// bytes, before its line end).
fn find_in_row(d: &[u8], row: usize, needle: &[u8]) -> Option<usize> {
    let end = d.len().min(row + MAX_ROW_SCAN);
    let line = &d[row..end];
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    line.windows(needle.len())
        .position(|w| w == needle)
        .map(|p| row + p + needle.len())
}

/// Four lower-case hex digits and a dot: the shard, if below `shards` (read like our route
/// tokens and branches).
fn hex_shard(s: &[u8], shards: u16) -> Option<ShardId> {
    Ids::route_token_shard(s, shards)
}

/// The user part of the URI on the line from `at`: after its first `:` preceded by `sip` or
/// `sips`, up to `@`.
fn user_at(d: &[u8], at: usize) -> Option<&[u8]> {
    let end = d.len().min(at + MAX_ROW_SCAN);
    let line = &d[at..end];
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let colon = (0..line.len()).find(|&i| {
        line[i] == b':' && (line[..i].ends_with(b"sip") || line[..i].ends_with(b"sips"))
    })?;
    let rest = &line[colon + 1..];
    let at_sign = rest.iter().take(MAX_USER + 1).position(|&b| b == b'@')?;
    let user = &rest[..at_sign];
    let plain = user.iter().all(|&b| !STOP.contains(&b));
    (plain && !user.is_empty()).then_some(user)
}

/// Bytes that make a user part "no choice": escapes, feature-code marks, separators, blanks.
pub const STOP: &[u8] = b"%*#;:><,\" \t\r";

#[cfg(test)]
pub(crate) mod corpus;
#[cfg(test)]
mod tests;
