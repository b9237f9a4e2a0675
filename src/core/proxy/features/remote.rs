//! Lines across shards: a call an extension's device *placed* is handled on its callee's shard,
//! while the extension's lines live on the extension's owner shard. The shard holding the call
//! tells the owner with core-to-core notes, which the engine carries between the shards' cores
//! like a hand-off (`Core::drain_shard_notes` → mailbox → `Core::handle_shard_note`); the core
//! stays sans-IO: it only queues `(shard, bytes)`.
//!
//! - **record** (call's shard → owner): the 2xx of a placed call passed; the owner keeps the
//!   line with its origin shard (the call's key there and the dialog's to-tag hash name it).
//! - **release** (call's shard → owner): that dialog ended (BYE through sipfork, the maximum
//!   call duration, a move); the owner drops the line.
//! - **proxy BYE** (owner → call's shard): a move of that line was accepted and the far end
//!   did not end the old dialog within `BYE_AFTER`; the call's shard, if it still holds the
//!   dialog, sends the old device the proxy's BYE and forgets the dialog (which sends a
//!   release back).
//!
//! A move of a remote line is forwarded from the owner's shard straight to the recorded far end
//! (its remote target and flow, carried in the record): the far end is still a recorded dialog
//! peer, so the egress rule holds; the old dialog's in-dialog routing stays on the call's shard
//! (its Record-Route token names that shard), so the far end's BYE to the old device goes
//! through there and releases the line by a note.
//!
//! Notes come only from the other shards of this process (the engine's mesh, never a socket);
//! one that does not decode is ignored.

use std::net::SocketAddr;

use super::{Line, Lines, Side};
use crate::core::context::Cx;
use crate::core::proxy::Proxy;
use crate::core::shard::ShardId;
use crate::core::slab::Key;
use crate::time::Instant;

/// A line of this shard's call that was recorded on another shard.
#[derive(Debug)]
pub(super) struct Sent {
    /// The dialog (to-tag hash).
    to_tag: u64,
    /// The shard that keeps the line.
    owner: ShardId,
    /// Its extension.
    ext: Box<[u8]>,
}

const RECORD: u8 = 1;
const RELEASE: u8 = 2;
const PROXY_BYE: u8 = 3;

/// Appends `bytes` with a 16-bit length.
fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    let n = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&n.to_be_bytes());
    buf.extend_from_slice(&bytes[..usize::from(n)]);
}

/// Reads what [`put`] and the fixed-size writers wrote.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn addr(&mut self) -> Option<SocketAddr> {
        std::str::from_utf8(self.bytes()?).ok()?.parse().ok()
    }
}

/// The head every note starts with: kind, extension, the call's key and the dialog's to-tag.
fn head(kind: u8, ext: &[u8], call: Key, to_tag: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(512);
    buf.push(kind);
    put(&mut buf, ext);
    buf.extend_from_slice(&call.index.to_be_bytes());
    buf.extend_from_slice(&call.generation.to_be_bytes());
    buf.extend_from_slice(&to_tag.to_be_bytes());
    buf
}

fn put_side(buf: &mut Vec<u8>, s: &Side) {
    put(buf, &s.uri);
    put(buf, s.dest.to_string().as_bytes());
    put(buf, &s.tag);
    put(buf, &s.party);
    buf.push(u8::from(s.replaces) | u8::from(s.join) << 1);
}

fn read_side(r: &mut Reader<'_>) -> Option<Side> {
    let uri = r.bytes()?.into();
    let dest = r.addr()?;
    let tag = r.bytes()?.into();
    let party = r.bytes()?.into();
    let flags = r.u8()?;
    Some(Side {
        uri,
        dest,
        tag,
        party,
        replaces: flags & 1 != 0,
        join: flags & 2 != 0,
    })
}

/// What follows the head of a record or proxy-BYE note: the line's own fields.
fn put_line(buf: &mut Vec<u8>, l: &Line) {
    put(buf, &l.call_id);
    put_side(buf, &l.device);
    put_side(buf, &l.far);
    buf.extend_from_slice(&l.bye_cseq.to_be_bytes());
    let routes = u8::try_from(l.device_routes.len()).unwrap_or(u8::MAX);
    buf.push(routes);
    for r in l.device_routes.iter().take(usize::from(routes)) {
        put(buf, r);
    }
}

/// A line read back from a note of shard `origin` (`None`: a note about this shard's own call).
fn read_line(
    r: &mut Reader<'_>,
    origin: Option<ShardId>,
    call: Key,
    to_tag: u64,
    now: Instant,
) -> Option<Line> {
    let call_id = r.bytes()?.into();
    let device = read_side(r)?;
    let far = read_side(r)?;
    let bye_cseq = r.u32()?;
    let n = r.u8()?;
    let device_routes = (0..n)
        .map(|_| r.bytes().map(Into::into))
        .collect::<Option<Vec<_>>>()?;
    Some(Line {
        origin,
        call,
        to_tag,
        // The owner's clock orders its lines (a note arrives within the engine's turn).
        since: now,
        call_id,
        device,
        far,
        bye_cseq,
        device_routes,
    })
}

impl Lines {
    /// A placed call of this shard is a line of extension `ext`, owned by `owner`: tells the
    /// owner, and remembers to release it there.
    pub(super) fn send_record(&mut self, owner: ShardId, ext: &[u8], l: &Line) {
        let mut buf = head(RECORD, ext, l.call, l.to_tag);
        put_line(&mut buf, l);
        self.notes.push((owner, buf));
        self.sent.entry(l.call).or_default().push(Sent {
            to_tag: l.to_tag,
            owner,
            ext: ext.into(),
        });
    }

    /// Releases, on their owners' shards, the lines of this shard's `call` whose dialog is no
    /// longer among `dialogs`.
    pub(super) fn release_sent(&mut self, call: Key, dialogs: &[super::Dialog]) {
        let Some(mut sent) = self.sent.remove(&call) else {
            return;
        };
        sent.retain(|s| {
            let live = dialogs.iter().any(|d| d.to_tag == s.to_tag);
            if !live {
                self.notes
                    .push((s.owner, head(RELEASE, &s.ext, call, s.to_tag)));
            }
            live
        });
        if !sent.is_empty() {
            self.sent.insert(call, sent);
        }
    }

    /// A move of remote line `old` was accepted and the far end kept the old dialog: asks the
    /// call's shard for the proxy's BYE, and drops the line here (the release that follows
    /// finds nothing).
    pub(super) fn send_proxy_bye(&mut self, origin: ShardId, old: &Line) {
        // Rare (a move whose far end kept the old dialog): the extension is looked for.
        let fits =
            |l: &Line| l.origin == Some(origin) && l.call == old.call && l.to_tag == old.to_tag;
        let Some(ext) = self
            .by_ext
            .iter()
            .find(|(_, lines)| lines.iter().any(fits))
            .map(|(e, _)| e.clone())
        else {
            return;
        };
        self.remove_remote(&ext, origin, old.call, old.to_tag);
        let mut buf = head(PROXY_BYE, &ext, old.call, old.to_tag);
        put_line(&mut buf, old);
        self.notes.push((origin, buf));
    }

    /// Drops extension `ext`'s line of shard `origin`'s call `call`, dialog `to_tag`.
    fn remove_remote(&mut self, ext: &[u8], origin: ShardId, call: Key, to_tag: u64) {
        let Some(lines) = self.by_ext.get_mut(ext) else {
            return;
        };
        lines.retain(|l| !(l.origin == Some(origin) && l.call == call && l.to_tag == to_tag));
        if lines.is_empty() {
            self.by_ext.remove(ext);
        }
    }
}

impl Proxy {
    /// Hands every note for another shard's core to `send`, in order (the engine carries them).
    pub fn drain_shard_notes(&mut self, mut send: impl FnMut(ShardId, &[u8])) {
        for (to, bytes) in self.lines.notes.drain(..) {
            send(to, &bytes);
        }
    }

    /// A note from shard `from`'s core (module docs). One that does not decode is ignored: notes
    /// come only from this process's shards.
    pub fn shard_note(&mut self, cx: &mut Cx<'_>, from: ShardId, bytes: &[u8]) {
        let mut r = Reader(bytes);
        let Some((kind, ext, call, to_tag)) = (|| {
            let kind = r.u8()?;
            let ext = r.bytes()?;
            let call = Key {
                index: r.u32()?,
                generation: r.u32()?,
            };
            Some((kind, ext, call, r.u64()?))
        })() else {
            return;
        };
        match kind {
            RECORD if from != cx.env.shard => {
                if let Some(line) = read_line(&mut r, Some(from), call, to_tag, cx.now) {
                    self.lines.add_remote(ext, line);
                }
            }
            RELEASE => {
                self.lines.remove_remote(ext, from, call, to_tag);
            }
            PROXY_BYE => {
                let Some(old) = read_line(&mut r, None, call, to_tag, cx.now) else {
                    return;
                };
                // The key's generation tells a reused slot apart.
                let holds = self
                    .calls
                    .get(call)
                    .is_some_and(|c| c.dialogs.iter().any(|d| d.to_tag == to_tag));
                if holds {
                    self.bye_old_device(cx, &old);
                }
            }
            _ => {}
        }
    }
}

impl Lines {
    /// Keeps a line of another shard's call (not indexed by call: its key is that shard's).
    fn add_remote(&mut self, ext: &[u8], line: Line) {
        self.by_ext.entry(ext.into()).or_default().push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(port: u16, tag: &str) -> Side {
        Side {
            uri: format!("sip:x@127.0.0.1:{port}").into_bytes().into(),
            dest: SocketAddr::from(([127, 0, 0, 1], port)),
            tag: tag.as_bytes().into(),
            party: format!("<sip:x@example.com>;tag={tag}").into_bytes().into(),
            replaces: true,
            join: false,
        }
    }

    #[test]
    fn a_line_survives_the_note_and_a_cut_note_is_refused() {
        let call = Key {
            index: 7,
            generation: 3,
        };
        let line = Line {
            origin: None,
            call,
            to_tag: 42,
            since: Instant::ZERO,
            call_id: b"abc@host"[..].into(),
            device: side(5061, "dev"),
            far: side(5062, "far"),
            bye_cseq: 1000,
            device_routes: vec![b"<sip:p1;lr>"[..].into(), b"<sip:p2;lr>"[..].into()],
        };
        let mut note = Vec::new();
        put_line(&mut note, &line);
        let back = read_line(
            &mut Reader(&note),
            Some(ShardId(1)),
            call,
            42,
            Instant::ZERO,
        );
        let back = back.expect("decodes");
        let mut again = Vec::new();
        put_line(&mut again, &back);
        assert_eq!(note, again);
        assert_eq!(back.origin, Some(ShardId(1)));
        assert_eq!((back.device.replaces, back.far.join), (true, false));
        for cut in 0..note.len() {
            let r = read_line(&mut Reader(&note[..cut]), None, call, 42, Instant::ZERO);
            assert!(r.is_none(), "cut at {cut}");
        }
    }
}
