//! Integration tests of `sipfork`'s sans-IO layers, in one binary (ARCHITECTURE.md §2, §8).
//!
//! - `rfc4475`: every RFC 4475 torture vector gets the disposition its MANIFEST expects, as
//!   recorded in `tests/core/RFC4475-DISPOSITIONS.md`.
//! - `builder`: whatever the splicing builder writes parses back to the fields it was built from
//!   (structured messages from proptest strategies, plus fixed cases).
//! - `core_fuzz`: the forked-call script of `benches/core.rs` and the `core_datagrams` fuzz
//!   harness (seeds, and record-level mutations of a recorded call).
//! - `flows`: RFC 3261 / 3665 / 5118 call-flow messages parse and read back exactly.
//! - `properties`: byte mutations of every vector never panic, and accessors agree with each other.
//! - `expiry`: `[policy] max_call_seconds` ends a dialog whose BYE was lost with a BYE to each
//!   leg (virtual time).
//! - `sequences`: the `core_sequences` fuzz target's invariants (no panic, bounded state, every
//!   call ends) on its committed seeds (`fuzz/seeds/core_sequences`) and on proptest input.
//! - `cluster`: forking across two nodes' cores, cluster marks and their attacks (issue 18).
//! - `overload`: shedding (503 + Retry-After, what is never shed, RFC 7339 `oc`) and the
//!   per-source rate limit on virtual time.
//! - `websocket`: browsers registered over WS/WSS flows reached only over them, the `web`
//!   class, and attacks naming `;transport=ws` (issue 16 point 6).
//! - `ws_fuzz`: the `ws_framer` fuzz target on its committed seeds and proptest input.
//! - `trunk_certificate`: a trunk recognised by its TLS client certificate from any address,
//!   and not by its address alone (issue 16 point 1).
//! - `transport`: bindings over TCP/TLS flows, the Via transport toward a flow, closed flows
//!   (480), requests too large for UDP (513) on virtual time (issue 16).
//! - `outbound`: connections sipfork opens to `;transport=tcp` devices and next hops, connect
//!   failures as 503, and attacks trying to make it connect elsewhere (issue 16 point 4).
//! - `reliable`: our Via sent-by and Record-Route host per transport, and no retransmissions
//!   over TCP/TLS (RFC 3261 §17 timers on reliable transports; issue 16).
//! - `registrar`: REGISTER handling through `Core` on virtual time (§10.3 steps, limits, instance
//!   replacement, 423, digest, expiry, persistence, RFC 4475 registrar vectors, REGISTER flows).

#[path = "core/builder.rs"]
mod builder;
#[path = "core/cdr.rs"]
mod cdr;
#[path = "core/cluster.rs"]
mod cluster;
#[path = "core/core_fuzz.rs"]
mod core_fuzz;
#[path = "core/expiry.rs"]
mod expiry;
#[path = "core/features.rs"]
mod features;
#[path = "core/flows.rs"]
mod flows;
#[path = "core/followme.rs"]
mod followme;
#[path = "core/forking.rs"]
mod forking;
#[path = "core/keepalive.rs"]
mod keepalive;
#[path = "core/keepalive_stream.rs"]
mod keepalive_stream;
#[path = "core/outbound.rs"]
mod outbound;
#[path = "core/outbound_tls.rs"]
mod outbound_tls;
#[path = "core/overload.rs"]
mod overload;
#[path = "core/policy.rs"]
mod policy;
#[path = "core/properties.rs"]
mod properties;
#[path = "core/races.rs"]
mod races;
#[path = "core/registrar.rs"]
mod registrar;
#[path = "core/reliable.rs"]
mod reliable;
#[path = "core/rfc4475.rs"]
mod rfc4475;
#[path = "core/rfc4475_proxy.rs"]
mod rfc4475_proxy;
#[path = "core/security.rs"]
mod security;
#[path = "core/sequences.rs"]
mod sequences;
#[path = "core/sips.rs"]
mod sips;
#[path = "core/transport.rs"]
mod transport;
#[path = "core/trunk_certificate.rs"]
mod trunk_certificate;
#[path = "core/vectors.rs"]
mod vectors;
#[path = "core/websocket.rs"]
mod websocket;
#[path = "core/ws_fuzz.rs"]
mod ws_fuzz;
