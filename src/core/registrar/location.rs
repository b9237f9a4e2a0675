//! The location service of one shard: its extensions and their bindings (RFC 3261 §10.3), and
//! the lookup the proxy makes for every call.
//!
//! # Shape (memory per binding matters: the target is ≤ 400 bytes at 1,000,000 bindings)
//! - Extension numbers are keys of at most 19 digits, stored once, as one `u64`
//!   ([`NumberKey`]: a bijection between digit strings, leading zeros included, and integers).
//! - Map `NumberKey → Extension`, hashed by a fixed multiplicative hash: deterministic (the core
//!   never draws OS randomness), and safe because only provisioned numbers ever become keys.
//! - An [`Extension`] is a boxed slice of [`Binding`]s (16 bytes, no spare capacity) and the one
//!   expiry timer of the extension (its earliest binding).
//! - Bindings are kept sorted by q descending, then most recently registered first, so
//!   [`LocationTable::targets`] is a plain walk that allocates nothing.
//!
//! Invariant: an extension in the map has at least one binding once a REGISTER or a restore has
//! finished with it, and its timer (when armed) fires no later than its earliest expiry.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;

use crate::config::{NatMode, MAX_NUMBER_WIDTH};
use crate::core::timer::TimerId;
use crate::sip::Uri;
use crate::time::Instant;

use super::binding::{Binding, BindingSpec};
use super::reach::Reach;

/// An extension number as one integer: numbers of width `w` (1 to 19 digits) map to
/// `base(w) + value`, where `base(w)` counts every shorter number, so `"7"`, `"07"` and `"007"`
/// stay distinct and every key turns back into its digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NumberKey(u64);

/// `WIDTH_BASE[w]`: how many numbers have 1 to `w - 1` digits (`10 + 100 + … + 10^(w-1)`);
/// index 0 is unused. Every entry fits a `u64`, and so does the largest key.
const WIDTH_BASE: [u64; MAX_NUMBER_WIDTH + 1] = {
    let mut bases = [0u64; MAX_NUMBER_WIDTH + 1];
    let mut w = 2;
    while w <= MAX_NUMBER_WIDTH {
        bases[w] = bases[w - 1] * 10 + 10;
        w += 1;
    }
    bases
};

fn width_base(width: usize) -> u64 {
    WIDTH_BASE.get(width).copied().unwrap_or(u64::MAX)
}

impl NumberKey {
    /// The key of a number written in 1 to 19 ASCII digits; `None` for anything else.
    pub fn from_digits(number: &[u8]) -> Option<NumberKey> {
        if number.is_empty()
            || number.len() > MAX_NUMBER_WIDTH
            || !number.iter().all(u8::is_ascii_digit)
        {
            return None;
        }
        let value = number
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
        Some(NumberKey(width_base(number.len()) + value))
    }

    /// The number's digits, as written when registered.
    pub fn digits(self) -> Digits {
        // The largest width whose base is at most the key.
        let width = WIDTH_BASE
            .partition_point(|&base| base <= self.0)
            .saturating_sub(1)
            .clamp(1, MAX_NUMBER_WIDTH);
        let mut value = self.0 - width_base(width);
        let mut out = Digits {
            buf: [b'0'; MAX_NUMBER_WIDTH],
            len: width as u8,
        };
        for slot in out.buf.iter_mut().take(width).rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
        out
    }
}

/// Digits of an extension number, on the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digits {
    buf: [u8; MAX_NUMBER_WIDTH],
    len: u8,
}

impl Digits {
    /// The digits.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// Multiplicative hash of a [`NumberKey`] (fold of the 128-bit product), fixed across runs.
#[derive(Default, Clone, Copy)]
pub struct NumberHasher(u64);

impl Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        let product = u128::from(self.0) * 0x9e37_79b9_7f4a_7c15;
        (product as u64) ^ ((product >> 64) as u64)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One registered extension.
#[derive(Debug, Default)]
pub struct Extension {
    /// Sorted: q descending, then most recently registered first, then id.
    bindings: Box<[Binding]>,
    /// The expiry timer, armed at or before the earliest expiry.
    pub timer: Option<TimerId>,
}

impl Extension {
    /// The bindings in target order.
    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// The binding with id `id`.
    pub fn get(&self, id: u16) -> Option<&Binding> {
        self.bindings.iter().find(|b| b.id() == id)
    }

    /// The earliest expiry (wall µs).
    pub fn earliest_expiry_us(&self) -> Option<u64> {
        self.bindings.iter().map(Binding::expires_us).min()
    }

    /// An id no binding of this extension uses.
    pub fn free_id(&self) -> u16 {
        match self.bindings.iter().map(Binding::id).max() {
            None => 0,
            Some(max) if max < u16::MAX => max + 1,
            // At most 1000 bindings per extension, so some smaller id is free.
            Some(_) => (0..u16::MAX)
                .find(|id| self.get(*id).is_none())
                .unwrap_or(u16::MAX),
        }
    }
}

/// Mutable access to one extension that keeps the table's binding count right.
pub struct ExtensionMut<'t> {
    ext: &'t mut Extension,
    total: &'t mut usize,
}

impl ExtensionMut<'_> {
    /// The extension.
    pub fn get(&self) -> &Extension {
        self.ext
    }

    /// The expiry timer slot.
    pub fn timer(&mut self) -> &mut Option<TimerId> {
        &mut self.ext.timer
    }

    /// Adds a binding (call [`Self::sort`] when done changing).
    pub fn insert(&mut self, binding: Binding) {
        let mut all = std::mem::take(&mut self.ext.bindings).into_vec();
        all.reserve_exact(1);
        all.push(binding);
        self.ext.bindings = all.into_boxed_slice();
        *self.total += 1;
    }

    /// Rewrites binding `id` from `spec`, or inserts it when absent.
    pub fn upsert(&mut self, spec: &BindingSpec<'_>) {
        match self.ext.bindings.iter_mut().find(|b| b.id() == spec.id) {
            Some(b) => b.update(spec),
            None => self.insert(Binding::new(spec)),
        }
    }

    /// Removes binding `id`.
    pub fn remove(&mut self, id: u16) -> Option<Binding> {
        let at = self.ext.bindings.iter().position(|b| b.id() == id)?;
        let mut all = std::mem::take(&mut self.ext.bindings).into_vec();
        let removed = all.remove(at);
        self.ext.bindings = all.into_boxed_slice();
        *self.total -= 1;
        Some(removed)
    }

    /// Removes every binding expired at `now_us`, handing each to `removed` first.
    pub fn remove_expired(&mut self, now_us: u64, mut removed: impl FnMut(&Binding)) {
        if self.ext.bindings.iter().all(|b| b.expires_us() > now_us) {
            return;
        }
        let mut all = std::mem::take(&mut self.ext.bindings).into_vec();
        let before = all.len();
        all.retain(|b| {
            let keep = b.expires_us() > now_us;
            if !keep {
                removed(b);
            }
            keep
        });
        *self.total -= before - all.len();
        self.ext.bindings = all.into_boxed_slice();
    }

    /// Restores target order after changes.
    pub fn sort(&mut self) {
        self.ext.bindings.sort_unstable_by(|a, b| {
            b.q()
                .cmp(&a.q())
                .then(b.registered_us().cmp(&a.registered_us()))
                .then(a.id().cmp(&b.id()))
        });
    }
}

/// Where to send a request for one binding, as the proxy needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// The Contact URI, to use as Request-URI.
    pub contact: &'a [u8],
    /// Where to send (NAT rule applied).
    pub dest: SocketAddr,
    /// q in thousandths (1000 when the device gave none).
    pub q: u16,
    /// When the device last registered (saturates at the epoch for bindings restored from
    /// before this process started; the order of [`LocationTable::targets`] is exact anyway).
    pub registered_at: Instant,
    /// `+sip.instance`, without quotes.
    pub instance: Option<&'a [u8]>,
    /// What a connection to it would be opened with: its Contact's `;transport=tcp` when it
    /// registered over UDP (`core::transport::outbound`); UDP for a binding over a connection,
    /// which is reached over that connection only.
    pub transport: crate::core::transport::Transport,
}

/// This shard's extensions and their bindings.
pub struct LocationTable {
    extensions: HashMap<NumberKey, Extension, BuildHasherDefault<NumberHasher>>,
    bindings: usize,
    /// Wall-clock µs at `Instant::ZERO` (to turn stored wall times into instants).
    wall_epoch_us: u64,
}

impl LocationTable {
    /// An empty table; `wall_epoch_us` as in [`crate::core::context::Env`].
    pub fn new(wall_epoch_us: u64) -> LocationTable {
        LocationTable {
            extensions: HashMap::default(),
            bindings: 0,
            wall_epoch_us,
        }
    }

    /// Extensions with at least one binding.
    pub fn extension_count(&self) -> usize {
        self.extensions.len()
    }

    /// Bindings of all extensions.
    pub fn binding_count(&self) -> usize {
        self.bindings
    }

    /// One extension.
    pub fn extension(&self, key: NumberKey) -> Option<&Extension> {
        self.extensions.get(&key)
    }

    /// One extension, mutably.
    pub fn extension_mut(&mut self, key: NumberKey) -> Option<ExtensionMut<'_>> {
        let ext = self.extensions.get_mut(&key)?;
        Some(ExtensionMut {
            ext,
            total: &mut self.bindings,
        })
    }

    /// One extension, created empty when absent (remove it again with
    /// [`Self::remove_if_empty`] if nothing is bound).
    pub fn extension_or_insert(&mut self, key: NumberKey) -> ExtensionMut<'_> {
        ExtensionMut {
            ext: self.extensions.entry(key).or_default(),
            total: &mut self.bindings,
        }
    }

    /// Drops an extension without bindings; returns its timer for the caller to cancel.
    pub fn remove_if_empty(&mut self, key: NumberKey) -> Option<TimerId> {
        if self
            .extensions
            .get(&key)
            .is_some_and(|e| e.bindings.is_empty())
        {
            return self.extensions.remove(&key).and_then(|e| e.timer);
        }
        None
    }

    /// Every extension with its bindings (admin snapshots and journal compaction; never on a
    /// request's path).
    pub fn iter(&self) -> impl Iterator<Item = (NumberKey, &Extension)> + '_ {
        self.extensions.iter().map(|(k, e)| (*k, e))
    }

    /// The instant at wall-clock time `wall_us`.
    pub fn instant_at(&self, wall_us: u64) -> Instant {
        Instant::from_micros(wall_us.saturating_sub(self.wall_epoch_us))
    }

    /// Where a call to `number` goes: one [`Target`] per `sip:` binding, q descending, then
    /// most recently registered first. Allocates nothing.
    ///
    /// Only bindings the request can reach are listed ([`Reach`]): other schemes (`mailto:`
    /// and the like are no SIP destination) are registered but never targeted, nor is a
    /// binding registered over TCP or TLS whose flow is closed, nor a `sips:` Contact that
    /// cannot be reached over TLS. An expired binding leaves at its timer, which the engine
    /// fires in the same loop turn. A Contact asking for WS or WSS is
    /// targeted only over the WebSocket it registered on (sipfork never opens one).
    pub fn targets<'a, 'f>(
        &'a self,
        number: &[u8],
        reach: Reach<'f>,
    ) -> impl Iterator<Item = Target<'a>> + use<'a, 'f> {
        let bindings = NumberKey::from_digits(number)
            .and_then(|k| self.extensions.get(&k))
            .map_or(&[][..], |e| &e.bindings[..]);
        bindings.iter().filter_map(move |b| {
            let transport = reach.binding(b.contact(), b.dest(), b.transport())?;
            Some(Target {
                contact: b.contact(),
                dest: b.dest(),
                q: b.q(),
                registered_at: self.instant_at(b.registered_us()),
                instance: b.instance(),
                transport,
            })
        })
    }

    /// Approximate heap bytes held: the map's buckets, the binding lists and blocks (a figure
    /// for `/metrics`; the allocator's own overhead is not included).
    pub fn memory_bytes(&self) -> usize {
        let bucket = std::mem::size_of::<(NumberKey, Extension)>() + 1;
        let lists: usize = self
            .extensions
            .values()
            .map(|e| {
                e.bindings.len() * std::mem::size_of::<Binding>()
                    + e.bindings.iter().map(Binding::block_len).sum::<usize>()
            })
            .sum();
        self.extensions.capacity() * bucket + lists
    }
}

/// Where requests for a binding go (DECISIONS.md "NAT"): with `auto`, the Contact's IP and port
/// unless its host is no IP literal or differs from the REGISTER's source IP (a device behind
/// NAT), then the source address and port; `flow`: always the source; `contact`: always the
/// Contact when its host is an IP literal (else the source: a name would need DNS).
pub fn destination(nat: NatMode, contact: &Uri<'_>, source: SocketAddr) -> SocketAddr {
    let contact_addr = contact.as_sip().and_then(|u| {
        let ip = u.host.ip()?;
        Some(SocketAddr::new(
            ip,
            u.port.unwrap_or_else(|| u.default_port()),
        ))
    });
    match (nat, contact_addr) {
        (NatMode::Flow, _) | (_, None) => source,
        (NatMode::Contact, Some(addr)) => addr,
        (NatMode::Auto, Some(addr)) => {
            if addr.ip().to_canonical() == source.ip().to_canonical() {
                addr
            } else {
                source
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::registrar::binding::Transport;

    #[test]
    fn number_keys_round_trip_and_keep_leading_zeros_apart() {
        let numbers: [&[u8]; 9] = [
            b"0",
            b"9",
            b"00",
            b"07",
            b"7",
            b"1001",
            b"01001",
            b"9999999999999999999",
            b"0000000000000000000",
        ];
        let mut keys = Vec::new();
        for n in numbers {
            let k = NumberKey::from_digits(n).unwrap();
            assert_eq!(k.digits().as_bytes(), n);
            keys.push(k);
        }
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), numbers.len());
        for bad in [&b""[..], b"12a", b"+49", b"12345678901234567890"] {
            assert_eq!(NumberKey::from_digits(bad), None, "{bad:?}");
        }
    }

    fn binding(id: u16, contact: &[u8], q: Option<u16>, registered_us: u64) -> Binding {
        Binding::new(&BindingSpec {
            id,
            contact,
            call_id: b"c",
            cseq: 1,
            instance: None,
            class: 0,
            user_agent: b"",
            q,
            source: "127.0.0.1:5070".parse().unwrap(),
            dest: "127.0.0.1:5070".parse().unwrap(),
            transport: Transport::Udp,
            registered_us,
            lifetime_secs: 60,
        })
    }

    #[test]
    fn targets_come_by_q_then_newest_and_skip_non_sip() {
        let mut table = LocationTable::new(1_000_000);
        let key = NumberKey::from_digits(b"1001").unwrap();
        let mut ext = table.extension_or_insert(key);
        ext.insert(binding(0, b"sip:a@h", Some(500), 2_000_000));
        ext.insert(binding(1, b"sip:b@h", None, 3_000_000));
        ext.insert(binding(2, b"sip:c@h", Some(500), 4_000_000));
        ext.insert(binding(3, b"mailto:d@h", None, 5_000_000));
        ext.insert(binding(4, b"SIP:e@h", None, 1_000_000));
        ext.sort();
        let flows = crate::core::transport::flows::Flows::new();
        let got: Vec<_> = table
            .targets(b"1001", Reach::with(&flows, false))
            .map(|t| (t.contact, t.q, t.registered_at))
            .collect();
        let at = |s: u64| Instant::from_micros(s * 1_000_000 - 1_000_000);
        assert_eq!(
            got,
            vec![
                (&b"sip:b@h"[..], 1000, at(3)),
                (&b"SIP:e@h"[..], 1000, at(1)),
                (&b"sip:c@h"[..], 500, at(4)),
                (&b"sip:a@h"[..], 500, at(2)),
            ]
        );
        assert_eq!(table.binding_count(), 5);
        assert_eq!(
            table.targets(b"1002", Reach::with(&flows, false)).count(),
            0
        );
        assert_eq!(
            table
                .targets(b"not a number", Reach::with(&flows, false))
                .count(),
            0
        );
    }

    #[test]
    fn counts_follow_inserts_removals_and_expiry() {
        let mut table = LocationTable::new(0);
        let key = NumberKey::from_digits(b"42").unwrap();
        let mut ext = table.extension_or_insert(key);
        ext.insert(binding(0, b"sip:a@h", None, 1));
        ext.insert(binding(1, b"sip:b@h", None, 100_000_000));
        assert_eq!(ext.get().free_id(), 2);
        assert!(ext.remove(0).is_some());
        assert!(ext.remove(0).is_none());
        let mut gone = Vec::new();
        ext.remove_expired(200_000_000, |b| gone.push(b.id()));
        assert_eq!(gone, vec![1]);
        assert_eq!(table.binding_count(), 0);
        assert_eq!(table.remove_if_empty(key), None);
        assert_eq!(table.extension_count(), 0);
    }

    #[test]
    fn nat_rule() {
        let src: SocketAddr = "203.0.113.5:40000".parse().unwrap();
        let same_ip = Uri::parse(b"sip:1001@203.0.113.5:5062").unwrap();
        let private = Uri::parse(b"sip:1001@10.0.0.5:5060").unwrap();
        let name = Uri::parse(b"sip:1001@phone.example.com").unwrap();
        let no_port = Uri::parse(b"sip:1001@203.0.113.5").unwrap();
        let c = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            destination(NatMode::Auto, &same_ip, src),
            c("203.0.113.5:5062")
        );
        assert_eq!(destination(NatMode::Auto, &private, src), src);
        assert_eq!(destination(NatMode::Auto, &name, src), src);
        assert_eq!(
            destination(NatMode::Auto, &no_port, src),
            c("203.0.113.5:5060")
        );
        assert_eq!(destination(NatMode::Flow, &same_ip, src), src);
        assert_eq!(
            destination(NatMode::Contact, &private, src),
            c("10.0.0.5:5060")
        );
        assert_eq!(destination(NatMode::Contact, &name, src), src);
    }
}
