//! Identifiers sipfork puts on the wire, and how it recognises them when they come back.
//!
//! Our Via branches and Record-Route parameters select internal state (a shard, a call slot, a
//! branch). Anything taken from the wire that selects state is bounds-checked and authenticated
//! (DECISIONS.md): each token carries a 32-bit keyed MAC over its fields, and the slot it names
//! carries a generation, so a forged or stale token selects nothing.
//!
//! Branch (RFC 3261 §8.1.1.7, §16.6 step 8): `z9hG4bKsf<loop>.<shard>.<slot>.<gen>.<branch>.<mac>`
//! in lower-case hex. `<loop>` hashes the fields §16.3 step 4 uses for loop detection, so a
//! request that comes back with our own branch and the same loop hash has looped (482), while a
//! spiral (same Call-ID, different Request-URI) has not.

use siphasher::sip::SipHasher13;
use siphasher::sip128::{Hasher128, SipHasher13 as SipHasher13x128};
use std::hash::Hasher;

use crate::core::shard::ShardId;
use crate::core::slab::Key;

/// The RFC 3261 magic cookie every compliant branch starts with.
pub const MAGIC_COOKIE: &[u8] = b"z9hG4bK";
/// Every branch sipfork mints starts with this; the shard's four hex digits follow at once.
pub const BRANCH_PREFIX: &[u8] = b"z9hG4bKsf";
/// Hex digits of the shard field at the head of branches and route tokens.
pub const SHARD_DIGITS: usize = 4;

/// What one of our branches says, after its MAC checked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OurBranch {
    /// Loop-detection hash of the request the branch was created for.
    pub loop_hash: u32,
    /// Shard that owns the client transaction.
    pub shard: ShardId,
    /// The call (response context) on that shard.
    pub call: Key,
    /// Index of the branch within the call.
    pub branch: u8,
}

/// What our Record-Route parameter says: which shard and call hold a dialog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DialogRef {
    /// Shard that owns the dialog.
    pub shard: ShardId,
    /// The call record on that shard.
    pub call: Key,
}

/// Mints and verifies branches, route tokens, tags and transaction keys from one secret.
///
/// Every shard of a process is built from the same `secret` (so any shard can verify a token
/// another shard minted) and its own shard id (so tags never collide between shards).
#[derive(Clone)]
pub struct Ids {
    k0: u64,
    k1: u64,
    shard: ShardId,
    counter: u64,
}

impl Ids {
    /// Identifiers for `shard`, keyed by the process-wide `secret` (drawn by the engine).
    pub fn new(secret: [u8; 16], shard: ShardId) -> Self {
        let (a, b) = secret.split_at(8);
        Ids {
            k0: u64::from_le_bytes(a.try_into().expect("invariant: 8 bytes")),
            k1: u64::from_le_bytes(b.try_into().expect("invariant: 8 bytes")),
            shard,
            counter: 0,
        }
    }

    fn mac(&self, fields: &[u64]) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        for f in fields {
            h.write_u64(*f);
        }
        h.finish()
    }

    /// Appends a branch for branch `branch` of `call` on this shard.
    pub fn write_branch(&self, loop_hash: u32, call: Key, branch: u8, out: &mut Vec<u8>) {
        let mac = self.branch_mac(loop_hash, self.shard, call, branch);
        out.extend_from_slice(BRANCH_PREFIX);
        write_shard(out, self.shard);
        for field in [
            u64::from(loop_hash),
            u64::from(call.index),
            u64::from(call.generation),
            u64::from(branch),
        ] {
            out.push(b'.');
            write_hex(out, field);
        }
        out.push(b'.');
        write_mac(out, mac);
    }

    fn branch_mac(&self, loop_hash: u32, shard: ShardId, call: Key, branch: u8) -> u64 {
        self.mac(&[
            1,
            u64::from(loop_hash),
            u64::from(shard.0),
            u64::from(call.index),
            u64::from(call.generation),
            u64::from(branch),
        ])
    }

    /// Reads one of our branches back; `None` for anybody else's or a forged/garbled one, or one
    /// naming a shard outside `0..shards`.
    pub fn read_branch(&self, branch: &[u8], shards: u16) -> Option<OurBranch> {
        let rest = branch.strip_prefix(BRANCH_PREFIX)?;
        let (shard, rest) = read_shard(rest, shards)?;
        let mut fields = [0u64; 5];
        if !read_hex_fields(rest, &mut fields) {
            return None;
        }
        let [loop_hash, index, generation, br, mac] = fields;
        let loop_hash = u32::try_from(loop_hash).ok()?;
        let call = Key {
            index: u32::try_from(index).ok()?,
            generation: u32::try_from(generation).ok()?,
        };
        let branch = u8::try_from(br).ok()?;
        let expect = self.branch_mac(loop_hash, ShardId(shard), call, branch);
        (expect == mac).then_some(OurBranch {
            loop_hash,
            shard: ShardId(shard),
            call,
            branch,
        })
    }

    /// Appends the value of our Record-Route `sf` parameter for `call` on this shard, bound to
    /// the dialog's Call-ID.
    pub fn write_route_token(&self, call: Key, call_id: &[u8], out: &mut Vec<u8>) {
        let mac = self.route_mac(self.shard, call, call_id);
        write_shard(out, self.shard);
        for field in [u64::from(call.index), u64::from(call.generation)] {
            out.push(b'.');
            write_hex(out, field);
        }
        out.push(b'.');
        write_mac(out, mac);
    }

    fn route_mac(&self, shard: ShardId, call: Key, call_id: &[u8]) -> u64 {
        let call_id = self.digest(&[b"call-id", call_id]);
        self.mac(&[
            2,
            u64::from(shard.0),
            u64::from(call.index),
            u64::from(call.generation),
            call_id as u64,
            (call_id >> 64) as u64,
        ])
    }

    /// Reads our Record-Route token back (bounds-checked and authenticated against the Call-ID
    /// of the request carrying it).
    pub fn read_route_token(&self, token: &[u8], call_id: &[u8], shards: u16) -> Option<DialogRef> {
        let (shard, rest) = read_shard(token, shards)?;
        let mut fields = [0u64; 3];
        if !read_hex_fields(rest, &mut fields) {
            return None;
        }
        let [index, generation, mac] = fields;
        let call = Key {
            index: u32::try_from(index).ok()?,
            generation: u32::try_from(generation).ok()?,
        };
        let expect = self.route_mac(ShardId(shard), call, call_id);
        (expect == mac).then_some(DialogRef {
            shard: ShardId(shard),
            call,
        })
    }

    /// The shard a route token names, read from its fixed place without checking the MAC:
    /// only for steering a datagram to the shard that will check it.
    pub fn route_token_shard(token: &[u8], shards: u16) -> Option<ShardId> {
        read_shard(token, shards).map(|(shard, _)| ShardId(shard))
    }

    /// The shard a branch of ours names, read like [`Ids::route_token_shard`].
    pub fn branch_shard(branch: &[u8], shards: u16) -> Option<ShardId> {
        let rest = branch.strip_prefix(BRANCH_PREFIX)?;
        read_shard(rest, shards).map(|(shard, _)| ShardId(shard))
    }

    /// A fresh tag (To tag of responses we generate): unique per shard and unguessable.
    pub fn tag(&mut self) -> Tag {
        self.counter += 1;
        let x = self.mac(&[3, u64::from(self.shard.0), self.counter]);
        // The counter keeps tags unique; the MAC keeps them unguessable.
        let v = (x << 32) | (self.counter & 0xffff_ffff);
        let mut tag = Tag {
            buf: [0; 24],
            len: 0,
        };
        tag.push(b"sf");
        tag.push_hex(u64::from(self.shard.0));
        tag.push(b"-");
        tag.push_hex(v);
        tag
    }

    /// Appends a fresh tag to `out`.
    pub fn write_tag(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.tag());
    }

    /// A 128-bit keyed digest of `parts`, used as a compact transaction key: with a per-process
    /// secret key, a peer cannot craft two requests that collide.
    pub fn digest(&self, parts: &[&[u8]]) -> u128 {
        let mut h = SipHasher13x128::new_with_keys(self.k0, self.k1);
        for p in parts {
            h.write_usize(p.len());
            h.write(p);
        }
        h.finish128().as_u128()
    }

    /// A 32-bit unkeyed-order-stable hash for loop detection (keyed, so peers cannot aim at it).
    pub fn loop_hash(&self, parts: &[&[u8]]) -> u32 {
        let d = self.digest(parts);
        (d ^ (d >> 64) ^ (d >> 32)) as u32
    }
}

/// A tag we minted, kept on the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    buf: [u8; 24],
    len: u8,
}

impl Tag {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(slot) = self.buf.get_mut(usize::from(self.len)) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    fn push_hex(&mut self, v: u64) {
        let digits = (64 - v.leading_zeros()).div_ceil(4).max(1);
        for i in (0..digits).rev() {
            self.push(&[HEX[((v >> (i * 4)) & 0xf) as usize]]);
        }
    }
}

impl std::ops::Deref for Tag {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_hex(out: &mut Vec<u8>, v: u64) {
    if v == 0 {
        out.push(b'0');
        return;
    }
    let digits = (64 - v.leading_zeros()).div_ceil(4);
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}

/// The shard field: exactly [`SHARD_DIGITS`] lower-case hex digits naming a shard below
/// `shards`, then the rest after a dot.
fn read_shard(s: &[u8], shards: u16) -> Option<(u16, &[u8])> {
    let (digits, rest) = (s.get(..SHARD_DIGITS)?, s.get(SHARD_DIGITS..)?);
    let rest = rest.strip_prefix(b".")?;
    let mut v = 0u16;
    for &b in digits {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = v << 4 | u16::from(d);
    }
    (v < shards).then_some((v, rest))
}

fn write_shard(out: &mut Vec<u8>, shard: ShardId) {
    for i in (0..SHARD_DIGITS).rev() {
        out.push(HEX[usize::from((shard.0 >> (i * 4)) & 0xf)]);
    }
}

/// A MAC is always written as 16 hex digits (64 bits).
fn write_mac(out: &mut Vec<u8>, mac: u64) {
    for i in (0..16).rev() {
        out.push(HEX[((mac >> (i * 4)) & 0xf) as usize]);
    }
}

/// Parses exactly `fields.len()` dot-separated lower-case hex numbers of at most 16 digits.
fn read_hex_fields(s: &[u8], fields: &mut [u64]) -> bool {
    let mut parts = s.split(|&b| b == b'.');
    for f in fields.iter_mut() {
        let Some(p) = parts.next() else { return false };
        if p.is_empty() || p.len() > 16 {
            return false;
        }
        let mut v = 0u64;
        for &b in p {
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => return false,
            };
            v = v << 4 | u64::from(d);
        }
        *f = v;
    }
    parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(shard: u16) -> Ids {
        Ids::new(*b"0123456789abcdef", ShardId(shard))
    }

    #[test]
    fn branch_round_trips_across_shards() {
        let a = ids(1);
        let b = ids(0);
        let call = Key {
            index: 77,
            generation: 3,
        };
        let mut out = Vec::new();
        a.write_branch(0xdead_beef, call, 2, &mut out);
        assert!(out.starts_with(MAGIC_COOKIE));
        assert!(out.starts_with(b"z9hG4bKsf0001."), "shard at a fixed place");
        assert_eq!(Ids::branch_shard(&out, 2), Some(ShardId(1)));
        let got = b
            .read_branch(&out, 2)
            .expect("shard 0 verifies shard 1's branch");
        assert_eq!(
            got,
            OurBranch {
                loop_hash: 0xdead_beef,
                shard: ShardId(1),
                call,
                branch: 2
            }
        );
        assert_eq!(
            b.read_branch(&out, 1),
            None,
            "shard 1 is out of range for 1 shard"
        );
    }

    #[test]
    fn tampered_or_foreign_branches_are_rejected() {
        let a = ids(0);
        let call = Key {
            index: 5,
            generation: 9,
        };
        let mut out = Vec::new();
        a.write_branch(1, call, 0, &mut out);
        for i in BRANCH_PREFIX.len()..out.len() {
            let mut t = out.clone();
            t[i] = if t[i] == b'1' { b'2' } else { b'1' };
            assert_eq!(
                a.read_branch(&t, u16::MAX),
                None,
                "flip at {i}: {}",
                String::from_utf8_lossy(&t)
            );
        }
        let other = Ids::new(*b"fedcba9876543210", ShardId(0));
        assert_eq!(other.read_branch(&out, 4), None, "another process's secret");
        assert_eq!(a.read_branch(b"z9hG4bK776asdhds", 4), None);
        assert_eq!(a.read_branch(b"z9hG4bKsf1.0.0.0.0.0.0", 4), None);
        assert_eq!(a.read_branch(b"", 4), None);
    }

    #[test]
    fn route_token_round_trips_and_rejects_forgeries() {
        let a = ids(3);
        let call = Key {
            index: 1,
            generation: 2,
        };
        let mut tok = Vec::new();
        a.write_route_token(call, b"cid@host", &mut tok);
        assert!(tok.starts_with(b"0003."), "shard at a fixed place");
        assert_eq!(Ids::route_token_shard(&tok, 4), Some(ShardId(3)));
        assert_eq!(
            a.read_route_token(&tok, b"cid@host", 4),
            Some(DialogRef {
                shard: ShardId(3),
                call
            })
        );
        assert_eq!(a.read_route_token(&tok, b"cid@host", 3), None);
        assert_eq!(
            a.read_route_token(&tok, b"other@host", 4),
            None,
            "bound to its Call-ID"
        );
        let mac_len = tok.len() - tok.iter().rposition(|&b| b == b'.').unwrap() - 1;
        assert_eq!(mac_len, 16, "a 64-bit MAC");
        for i in 0..tok.len() {
            let mut t = tok.clone();
            t[i] = if t[i] == b'1' { b'2' } else { b'1' };
            assert_eq!(
                a.read_route_token(&t, b"cid@host", u16::MAX),
                None,
                "flip at {i}"
            );
        }
    }

    #[test]
    fn tags_differ_between_calls_and_shards() {
        let mut a = ids(0);
        let mut b = ids(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let mut t = Vec::new();
            a.write_tag(&mut t);
            assert!(seen.insert(t));
            let mut t = Vec::new();
            b.write_tag(&mut t);
            assert!(seen.insert(t));
        }
    }

    #[test]
    fn digest_separates_field_boundaries() {
        let a = ids(0);
        assert_ne!(a.digest(&[b"ab", b"c"]), a.digest(&[b"a", b"bc"]));
        assert_eq!(a.digest(&[b"ab", b"c"]), ids(5).digest(&[b"ab", b"c"]));
    }
}
