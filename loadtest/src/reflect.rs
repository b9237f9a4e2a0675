//! The null reflector: a UDP relay that answers each datagram with the datagrams a forking proxy
//! would send in answer (same count, same sizes, to the same parties) and does no SIP work
//! (DECISIONS.md "Measuring"), so sipfork's CPU per call ÷ the reflector's is the distance of
//! sipfork from the kernel floor on the same machine, in the same run, with the same load.
//!
//! The harness in reflector mode knows what a parallel-forking proxy sends for each message it
//! sends (the model lives with the senders: `agent/caller.rs` `invite_hint`, `agent/device.rs`
//! `response_hint`) and writes it into the message as a hint row (`wire.rs`). The reflector reads
//! only that row: for each `ip:port/size/kind` entry it sends the datagram it received, truncated
//! or padded to `size`, to `ip:port`. It runs on `sipfork::engine::start` like sipfork itself, so
//! the I/O backend, batching and coalescing options are the same.
//!
//! The sizes come from sipfork: `ProxySizes::measure` (in `sim.rs`) runs a few calls of the
//! scenario through sipfork's own `Core` in memory and records what it sent, by kind.

use serde::{Deserialize, Serialize};
use sipfork::core::io::{Datagram, Inbound, Outbox};
use sipfork::engine::shard::Handler;
use sipfork::time::Instant;

use crate::wire;

/// Sizes (bytes) of what a forking proxy sends, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxySizes {
    /// 100 Trying to the caller.
    pub trying: u32,
    /// The INVITE forwarded to a device.
    pub invite: u32,
    /// A device's 180 forwarded to the caller.
    pub ringing: u32,
    /// A device's 2xx forwarded to the caller.
    pub answer: u32,
    /// A final non-2xx to the caller.
    pub failure: u32,
    /// CANCEL to a device.
    pub cancel: u32,
    /// 200 to the caller's CANCEL.
    pub cancel_ok: u32,
    /// The proxy's own ACK of a device's non-2xx.
    pub ack: u32,
    /// The caller's ACK of a 2xx, forwarded to the device.
    pub ack_fwd: u32,
    /// The caller's BYE, forwarded.
    pub bye: u32,
    /// 200 of a BYE forwarded to the caller.
    pub bye_ok: u32,
    /// The registrar's answer to a REGISTER.
    pub register_ok: u32,
}

impl Default for ProxySizes {
    /// Typical sizes for a 3-way fork on loopback (replaced by `measure` in reflector runs).
    fn default() -> Self {
        ProxySizes {
            trying: 330,
            invite: 850,
            ringing: 450,
            answer: 650,
            failure: 430,
            cancel: 310,
            cancel_ok: 330,
            ack: 310,
            ack_fwd: 460,
            bye: 460,
            bye_ok: 420,
            register_ok: 420,
        }
    }
}

impl ProxySizes {
    /// Every field, in declaration order.
    pub fn fields_mut(&mut self) -> [&mut u32; 12] {
        [
            &mut self.trying,
            &mut self.invite,
            &mut self.ringing,
            &mut self.answer,
            &mut self.failure,
            &mut self.cancel,
            &mut self.cancel_ok,
            &mut self.ack,
            &mut self.ack_fwd,
            &mut self.bye,
            &mut self.bye_ok,
            &mut self.register_ok,
        ]
    }
}

/// Counters of the reflector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReflectorStats {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Received datagrams without a hint (dropped).
    pub without_hint: u64,
}

/// The engine handler of `sipfork-load reflect`.
#[derive(Debug, Default)]
pub struct HintReflector {
    out: Outbox,
    /// Counters.
    pub stats: ReflectorStats,
}

impl HintReflector {
    /// A reflector with an empty outbox.
    pub fn new() -> HintReflector {
        HintReflector::default()
    }
}

/// Bytes of the datagram up to the end of its hint row: never cut below this, so every copy
/// still names its receivers.
fn hint_end(datagram: &[u8], value: &[u8]) -> usize {
    let start = value.as_ptr() as usize - datagram.as_ptr() as usize;
    (start + value.len() + 2).min(datagram.len())
}

impl Handler for HintReflector {
    fn handle_datagram(&mut self, _now: Instant, d: Datagram<'_>) -> Inbound {
        self.stats.received += 1;
        let Some(value) = wire::hint_value(d.bytes) else {
            self.stats.without_hint += 1;
            return Inbound::Handled;
        };
        let floor = hint_end(d.bytes, value);
        for (to, size, _) in wire::hint_entries(value) {
            let n = (size as usize).max(floor);
            self.out.push_with(to, |buf| {
                if n <= d.bytes.len() {
                    buf.extend_from_slice(&d.bytes[..n]);
                } else {
                    buf.extend_from_slice(d.bytes);
                    buf.resize(buf.len() + n - d.bytes.len(), b' ');
                }
            });
            self.stats.sent += 1;
        }
        Inbound::Handled
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Meaning, Origin, Reflect};
    use std::net::SocketAddr;

    #[test]
    fn each_entry_gets_one_copy_of_its_size_and_unhinted_datagrams_are_dropped() {
        let a: SocketAddr = "127.0.0.1:20000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:20001".parse().unwrap();
        let msg = b"INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: x\r\nContent-Length: 0\r\n\r\n";
        let mut hinted = Vec::new();
        let reflects = [
            Reflect {
                to: a,
                size: 400,
                meaning: Meaning::Trying,
            },
            Reflect {
                to: b,
                size: 10,
                meaning: Meaning::Invite,
            },
        ];
        wire::push_with_hint(
            &mut hinted,
            msg,
            Origin {
                id: 1,
                device: 0,
                status: 0,
            },
            &reflects,
        );
        let mut r = HintReflector::new();
        let from: SocketAddr = "127.0.0.1:19000".parse().unwrap();
        let d = Datagram {
            from,
            local: from,
            bytes: &hinted,
            transport: sipfork::core::transport::Transport::Udp,
            peer_cert: None,
        };
        r.handle_datagram(Instant::ZERO, d);
        let out: Vec<(SocketAddr, Vec<u8>)> =
            r.outbox().iter().map(|(to, b)| (to, b.to_vec())).collect();
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].0, out[0].1.len()), (a, 400), "padded to its size");
        assert_eq!(out[1].0, b);
        assert_eq!(
            wire::read_hint(&out[1].1, b).map(|h| h.1),
            Some(Meaning::Invite)
        );
        assert!(
            out[1].1.len() < hinted.len(),
            "truncated, but not below the hint"
        );
        r.handle_datagram(
            Instant::ZERO,
            Datagram {
                from,
                local: from,
                bytes: msg,
                transport: sipfork::core::transport::Transport::Udp,
                peer_cert: None,
            },
        );
        assert_eq!(r.stats.without_hint, 1);
        assert_eq!(r.stats.sent, 2);
    }
}
