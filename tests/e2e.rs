//! End-to-end tests: the real `sipfork` binary on 127.0.0.1 with a generated configuration,
//! driven over UDP and its admin API, on both I/O backends (ARCHITECTURE.md §8).
//!
//! - `admin`: `promtool check metrics`, slow and idle admin clients vs `/health` and a stop,
//!   `POST /reload` and its token, SIGHUP reloads (passwords, ranges, a broken file, a change
//!   that needs a restart), the drain on SIGTERM, a reload under the load harness.
//! - `basics`: start-up, OPTIONS ping, `/health`, `/metrics` (backend per shard), clean stop on
//!   SIGTERM and SIGINT with the journal flushed.
//! - `cli`: `check-config` on good and bad files, a bad `--config` that must not start, the
//!   `devices` command against a running instance.
//! - `registrar`: several contacts, query, `*` removal, the device limit under both policies,
//!   instance replacement, 423, digest challenge, success and replay, expiry, `devices` tables.
//! - `restart`: `kill -9` keeps every binding with its remaining expiry, also when the shard
//!   count changes.
//! - `cluster`: three nodes on a real Redis Cluster (3 masters + 3 replicas) in a namespace of
//!   their own: cross-node forking, directory propagation, a node killed, a Redis master killed.
//! - `durability`: `data_dir` on a small tmpfs filled mid-run: 503 instead of 200 for what the
//!   journal cannot take, `/health` 503, recovery once space returns, nothing acknowledged lost
//!   to `kill -9` (root only: it mounts the tmpfs).
//! - `sipp`: SIPp registers 1,000 extensions × 3 contacts; every 200 lists the 3 bindings.
//! - `forking`: the anchor's SIPp forking scenario (a caller, three devices per extension: one
//!   answers, two are cancelled) at a steady rate with zero failed calls.
//! - `baresip`: two real phones on one extension both ring; one answers, the other is cancelled
//!   (in a network namespace of its own).
//! - `baresip_tls`: baresip registered over TLS (its CA file naming the generated certificate)
//!   and a UDP baresip of the same extension both ring; the TLS one answers, the UDP one gets
//!   its CANCEL over UDP (in a network namespace of its own).
//! - `sipvicious`: SIPVicious `svwar` finds no extension and `svcrack` is blocked before it finds
//!   the password, while a phone elsewhere still registers (in a network namespace of its own).
//! - `example`: SIPp (`-au/-ap`, MD5) registers and calls through the shipped
//!   `examples/sipfork.toml` (baresip does the same in `baresip`).
//! - `policy`: CDRs of public calls reach `[policy] cdr`, one JSON line each, and follow a
//!   rotation (rename + SIGHUP); a SIPp PBX at a trunk's static address gets exactly its
//!   tenant's limit in progress and 503 (Q.850 cause 34) beyond; follow-me reaches an external
//!   number through a `[[routes]]` next hop only with `forward_external`.
//! - `features`: PJSIP agents (pjsua2-python): a caller's answered call moved from device A to
//!   device B of one extension with `*75` (RFC 3891 Replaces).
//! - `instance`: a second instance on the same port, and on the same data_dir, is refused.
//! - `tcp`: OPTIONS and keep-alives over TCP on the UDP port, oversize and idle connections
//!   closed and counted, SIPp (`-t t1`) registering over TCP.
//! - `tls`: a rustls client registering over TLS and forked to beside a UDP device; a renewed
//!   certificate reaching new connections on SIGHUP while the open one keeps its session; a
//!   broken renewal refused.
//! - `tls_trunk`: a trunk recognised by its TLS client certificate (issue 16 point 1): its
//!   certificate from any address calls out as the trunk, none gets 407, another CA's is refused.
//! - `trunk_keepalive`: OPTIONS keep-alives to TLS trunk addresses over connections sipfork
//!   opens (a test-side rustls PBX answers them and then takes the call on that connection), a
//!   refused address dead at once, nothing over UDP to either (both backends).
//! - `websocket`: browser-like WebSocket clients (tungstenite) registered over `ws:` and `wss:`
//!   beside a UDP device; a UDP caller rings all three, the WS one answers (ACK and BYE over
//!   its WebSocket), the others get their CANCEL (in a network namespace of its own).
//! - `xdp`: the `forking` SIPp test unchanged on `io = "xdp"` across a veth pair (native and
//!   generic mode); `kill -9` and a restart on the same interface; detached on a clean stop.
//!
//! Each appliance gets its own free ports and scratch directory, so the tests run in parallel.

#[path = "e2e/admin.rs"]
mod admin;
#[path = "e2e/baresip.rs"]
mod baresip;
#[path = "e2e/baresip_tls.rs"]
mod baresip_tls;
#[path = "e2e/basics.rs"]
mod basics;
#[path = "e2e/cli.rs"]
mod cli;
#[path = "e2e/cluster.rs"]
mod cluster;
#[path = "e2e/durability.rs"]
mod durability;
#[path = "e2e/example.rs"]
mod example;
#[path = "e2e/features.rs"]
mod features;
#[path = "e2e/forking.rs"]
mod forking;
#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/instance.rs"]
mod instance;
#[path = "e2e/netns.rs"]
mod netns;
#[path = "e2e/phone.rs"]
mod phone;
#[path = "e2e/policy.rs"]
mod policy;
#[path = "e2e/registrar.rs"]
mod registrar;
#[path = "e2e/restart.rs"]
mod restart;
#[path = "e2e/sipp.rs"]
mod sipp;
#[path = "e2e/sipvicious.rs"]
mod sipvicious;
#[path = "e2e/tcp.rs"]
mod tcp;
#[path = "e2e/websocket.rs"]
mod websocket;
// The veth-pair namespaces of the load harness's tests, shared rather than copied.
#[path = "e2e/tls.rs"]
mod tls;
#[path = "e2e/tls_out.rs"]
mod tls_out;
#[path = "e2e/tls_trunk.rs"]
mod tls_trunk;
#[path = "e2e/trunk_keepalive.rs"]
mod trunk_keepalive;
#[path = "../loadtest/tests/common/netns.rs"]
#[allow(dead_code)]
mod veth;
#[path = "e2e/xdp.rs"]
mod xdp;
