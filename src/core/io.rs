//! What crosses the boundary between the sans-IO core and the engine.
//!
//! In: one [`Datagram`] at a time (bytes borrowed from the engine's receive buffer).
//! Out: an [`Outbox`] the engine drains once per batch. Messages are written straight into the
//! outbox's arena, so building a datagram allocates nothing once the arena has grown to its
//! working size; the engine clears (never frees) it after each send batch.

use std::net::SocketAddr;
use std::ops::Range;

use crate::core::shard::ShardId;
use crate::core::transport::Transport;

/// One received message: a UDP datagram, or a message framed from a TCP or TLS connection.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    /// Source address (what `rport`/`received` and NAT handling look at).
    pub from: SocketAddr,
    /// Local address it arrived on (the listen address).
    pub local: SocketAddr,
    /// The datagram's bytes.
    pub bytes: &'a [u8],
    /// What it came on: [`Transport::Udp`], or the stream whose peer is `from`.
    pub transport: Transport,
    /// Over TLS (or WSS): the names of the client certificate the connection's peer presented
    /// and the listener verified (`None` for every other message).
    pub peer_cert: Option<&'a crate::core::transport::peer_cert::PeerCert>,
}

impl<'a> Datagram<'a> {
    /// A UDP datagram.
    pub fn udp(from: SocketAddr, local: SocketAddr, bytes: &'a [u8]) -> Datagram<'a> {
        Datagram {
            from,
            local,
            bytes,
            transport: Transport::Udp,
            peer_cert: None,
        }
    }
}

/// What the core did with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Handled here (answered, forwarded, absorbed or dropped and counted).
    Handled,
    /// Belongs to another shard: the engine hands the same bytes to that shard's mailbox.
    ForShard(ShardId),
}

/// One datagram to send: its destination and where its bytes lie in the outbox arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// Local address to send from: one of the backend's own sockets (a load generator playing
    /// many devices, each on its own port). `None`: the backend's first socket of the
    /// destination's address family, which is what the proxy uses.
    pub from: Option<SocketAddr>,
    /// Byte range in the arena.
    pub bytes: Range<u32>,
    /// `Some(Tcp)` only on requests toward a target that asks for a stream transport (a
    /// registered device's `;transport=tcp` Contact, a next hop configured so): the engine
    /// opens a connection of this transport to `to` when none is open, and writes to it once
    /// up. `Some(Udp)`: over UDP even if a connection with `to` is open (the answers to a
    /// request that came over UDP from the address of a connection sipfork opened, RFC 3261
    /// §18.2.2). `None` everywhere else: over the connection with `to` if one is open, else
    /// UDP; the engine never connects for it.
    pub connect: Option<Transport>,
}

/// Datagrams the core wants sent, in order.
#[derive(Default, Debug)]
pub struct Outbox {
    arena: Vec<u8>,
    transmits: Vec<Transmit>,
    /// Transmits queued with [`Transmit::connect`] since the last clear (the engine looks for
    /// connections to open only when some are).
    connects: usize,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a datagram for `to` whose bytes `write` appends to the given buffer, and returns
    /// those bytes (so a caller that must keep a copy takes it without building twice).
    /// A writer that appends nothing adds no datagram.
    pub fn push_with(&mut self, to: SocketAddr, write: impl FnOnce(&mut Vec<u8>)) -> &[u8] {
        self.push_from_with(None, to, write)
    }

    /// As [`Outbox::push_with`], sent from the local socket bound to `from` (see
    /// [`Transmit::from`]).
    pub fn push_from_with(
        &mut self,
        from: Option<SocketAddr>,
        to: SocketAddr,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> &[u8] {
        let start = self.arena.len();
        write(&mut self.arena);
        let end = self.arena.len();
        if end > start {
            self.transmits.push(Transmit {
                to,
                from,
                bytes: to_u32(start)..to_u32(end),
                connect: None,
            });
        }
        &self.arena[start..end]
    }

    /// Appends a copy of `bytes` for `to` (retransmissions of a stored message).
    pub fn push(&mut self, to: SocketAddr, bytes: &[u8]) {
        self.push_with(to, |buf| buf.extend_from_slice(bytes));
    }

    /// Replaces the bytes of queued datagram `i` with what `write` appends (same destination and
    /// position); the old bytes stay unused in the arena until [`Outbox::clear`].
    pub fn replace(&mut self, i: usize, write: impl FnOnce(&mut Vec<u8>)) {
        if i >= self.transmits.len() {
            return;
        }
        let start = self.arena.len();
        write(&mut self.arena);
        let end = self.arena.len();
        self.transmits[i].bytes = to_u32(start)..to_u32(end);
    }

    /// Marks the datagram queued last as a request for which the engine may open a `transport`
    /// connection to its destination ([`Transmit::connect`]).
    pub fn connect_last(&mut self, transport: Transport) {
        if let Some(t) = self.transmits.last_mut() {
            if !t.connect.is_some_and(Transport::is_stream) {
                self.connects += 1;
            }
            t.connect = Some(transport);
        }
    }

    /// Marks the datagrams queued from index `start` on to `to` that carry no mark to go over
    /// UDP ([`Transmit::connect`]).
    pub fn keep_udp(&mut self, start: usize, to: SocketAddr) {
        for t in self.transmits.iter_mut().skip(start) {
            if t.to == to && t.connect.is_none() {
                t.connect = Some(Transport::Udp);
            }
        }
    }

    /// Whether a queued datagram may need a connection opened ([`Transmit::connect`]).
    pub fn wants_connect(&self) -> bool {
        self.connects > 0
    }

    /// Takes back the datagram queued last (its bytes stay unused in the arena until
    /// [`Outbox::clear`]).
    pub fn pop(&mut self) {
        if self
            .transmits
            .pop()
            .is_some_and(|t| t.connect.is_some_and(Transport::is_stream))
        {
            self.connects -= 1;
        }
    }

    /// The datagrams in the order they were queued.
    pub fn transmits(&self) -> &[Transmit] {
        &self.transmits
    }

    /// The bytes of one queued datagram.
    pub fn bytes(&self, t: &Transmit) -> &[u8] {
        &self.arena[t.bytes.start as usize..t.bytes.end as usize]
    }

    /// Every queued datagram with its destination.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        self.transmits.iter().map(|t| (t.to, self.bytes(t)))
    }

    /// Keeps only the datagrams for which `keep(transmit, bytes)` is true, in order (the
    /// engine takes out what goes over a TCP or TLS connection before the UDP send).
    pub fn retain(&mut self, mut keep: impl FnMut(&Transmit, &[u8]) -> bool) {
        let arena = &self.arena;
        self.transmits
            .retain(|t| keep(t, &arena[t.bytes.start as usize..t.bytes.end as usize]));
    }

    /// Number of queued datagrams.
    pub fn len(&self) -> usize {
        self.transmits.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.transmits.is_empty()
    }

    /// Forgets every queued datagram, keeping the memory for the next batch.
    pub fn clear(&mut self) {
        self.arena.clear();
        self.transmits.clear();
        self.connects = 0;
    }
}

fn to_u32(n: usize) -> u32 {
    // A batch never approaches 4 GiB; the engine drains the outbox after every batch.
    u32::try_from(n).expect("invariant: outbox arena below 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_come_out_in_order_and_clear_keeps_capacity() {
        let a: SocketAddr = "127.0.0.1:5071".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5072".parse().unwrap();
        let mut out = Outbox::new();
        out.push_with(a, |buf| buf.extend_from_slice(b"one"));
        out.push_with(b, |_| {});
        out.push(b, b"two");
        let got: Vec<_> = out.iter().map(|(to, bytes)| (to, bytes.to_vec())).collect();
        assert_eq!(got, vec![(a, b"one".to_vec()), (b, b"two".to_vec())]);
        let cap = out.arena.capacity();
        out.clear();
        assert!(out.is_empty());
        assert_eq!(out.arena.capacity(), cap);
    }
}
