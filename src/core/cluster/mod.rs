//! Forking across the nodes of a cluster (issue 18, `docs/cluster.md`): sans-IO parts.
//!
//! - [`Directory`]: a read-only snapshot of the shared directory (which nodes hold which
//!   extensions, where each node listens). The app's directory thread builds it from Redis and
//!   publishes it through an `ArcSwap`; the shard hands the newest one to its core
//!   ([`crate::core::Core::set_directory`]) before a datagram, so no datagram waits on Redis.
//! - Cluster branches: an initial INVITE for extension N on node A gets one branch per other
//!   node holding N ([`remote_targets`]), to that node's `advertise` address, only inside
//!   `peers`. The branch's Request-URI carries a mark (`sfcl=TIME.MAC`, [`mark_uri`]): an
//!   HMAC-SHA256, keyed by the shared `secret`, over the number, the Call-ID, the branch's Via
//!   branch and the wall-clock second it was sent. The receiving node ([`inbound`]) accepts it
//!   only with a valid MAC, a time within [`MARK_WINDOW_SECS`], and a source inside `peers`:
//!   then it rings its *local* devices only (no cluster branches, so no loops) without
//!   challenging (node A authenticated and admitted the caller). A mark that fails is answered
//!   `403` and nothing is forked.
//! - Follow-me runs on the entry node: a stage naming `self` gets the cluster branches too
//!   ([`followme_targets`]), with the stage's ring time; a stage naming another extension
//!   spirals to this node, which adds that extension's cluster branches.
//! - A cluster branch gets a short Timer C ([`BRANCH_TIMEOUT`]) until the remote node's first
//!   response (its `100 Trying`), so a dead node costs a caller at most 2 s, not Timer B's 32 s.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::cluster::ClusterConfig;
use crate::config::followme::{FollowMe, Target};
use crate::core::context::Cx;
use crate::core::metrics::MetricSink;
use crate::core::proxy::ForkTarget;
use crate::sip::Essentials;
use crate::time::{Duration, Instant};

/// The Request-URI parameter of a cluster branch.
pub const MARK_PARAM: &str = "sfcl";

/// How far (seconds, either way) a mark's time may be from the receiver's clock.
pub const MARK_WINDOW_SECS: u64 = 30;

/// Timer C of a cluster branch until the remote node answers anything.
pub const BRANCH_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes of the HMAC kept in a mark (128 bits).
const MAC_BYTES: usize = 16;

/// One node of the cluster as the directory knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Its `[cluster] node` name.
    pub name: String,
    /// Where its cluster branches go.
    pub advertise: SocketAddr,
    /// Its admin listener, when it has one.
    pub admin: Option<SocketAddr>,
}

/// A snapshot of the directory: live nodes and, per extension, the nodes holding it.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    /// Live nodes (this one included when its record is live).
    pub nodes: Vec<Node>,
    /// Extension number → indexes into `nodes`.
    pub extensions: HashMap<Box<[u8]>, Vec<u16>>,
}

impl Directory {
    /// The nodes holding `number`.
    pub fn holders<'a>(&'a self, number: &[u8]) -> impl Iterator<Item = &'a Node> + 'a {
        self.extensions
            .get(number)
            .map_or(&[][..], |v| &v[..])
            .iter()
            .filter_map(|&i| self.nodes.get(usize::from(i)))
    }
}

/// What a request's cluster mark says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// No mark: an ordinary request.
    Unmarked,
    /// A valid cluster branch from a peer: ring local devices only.
    Branch,
    /// A mark that fails (forged, stale, wrong peer or no `[cluster]`): refused.
    Forged,
}

/// The cluster state a shard's core keeps: the newest directory snapshot and counters.
#[derive(Debug, Default)]
pub struct Cluster {
    directory: Option<std::sync::Arc<Directory>>,
    /// Cluster branches sent.
    pub branches: u64,
    /// Marked requests accepted.
    pub accepted: u64,
    /// Marked requests refused.
    pub refused: u64,
}

impl Cluster {
    /// Installs a newer directory snapshot.
    pub fn set_directory(&mut self, d: std::sync::Arc<Directory>) {
        self.directory = Some(d);
    }

    /// The snapshot in use.
    pub fn directory(&self) -> Option<&std::sync::Arc<Directory>> {
        self.directory.as_ref()
    }

    /// Writes the counters.
    pub fn export_metrics(&self, sink: &mut MetricSink, labels: &[(&'static str, &str)]) {
        sink.counter(
            "sipfork_cluster_branches_total",
            "Cluster branches sent to other nodes",
            labels,
            self.branches,
        );
        sink.counter(
            "sipfork_cluster_marks_accepted_total",
            "Cluster branches from other nodes accepted (valid mark)",
            labels,
            self.accepted,
        );
        sink.counter(
            "sipfork_cluster_marks_refused_total",
            "Requests with a cluster mark that failed (forged, stale, not from a peer): 403",
            labels,
            self.refused,
        );
    }
}

fn mac(secret: &[u8], number: &[u8], call_id: &[u8], branch: &[u8], secs: u64) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    for field in [number, call_id, branch] {
        m.update(&(field.len() as u32).to_be_bytes());
        m.update(field);
    }
    m.update(&secs.to_be_bytes());
    m.finalize().into_bytes().into()
}

fn hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

/// Writes a mark value (`TIME.MAC`, hex) for a branch.
pub fn write_mark(
    secret: &[u8],
    number: &[u8],
    call_id: &[u8],
    branch: &[u8],
    secs: u64,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(format!("{secs:x}.").as_bytes());
    hex(
        out,
        &mac(secret, number, call_id, branch, secs)[..MAC_BYTES],
    );
}

/// Checks a mark value against the request it came with (constant-time MAC comparison).
pub fn verify_mark(
    secret: &[u8],
    number: &[u8],
    call_id: &[u8],
    branch: &[u8],
    mark: &[u8],
    now_secs: u64,
) -> bool {
    let Some(dot) = mark.iter().position(|&b| b == b'.') else {
        return false;
    };
    let (t, m) = (&mark[..dot], &mark[dot + 1..]);
    let Some(secs) = std::str::from_utf8(t)
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= 16)
        .and_then(|t| u64::from_str_radix(t, 16).ok())
    else {
        return false;
    };
    if secs.abs_diff(now_secs) > MARK_WINDOW_SECS || m.len() != MAC_BYTES * 2 {
        return false;
    }
    let mut want = Vec::with_capacity(MAC_BYTES * 2);
    hex(
        &mut want,
        &mac(secret, number, call_id, branch, secs)[..MAC_BYTES],
    );
    want.iter().zip(m).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The number a cluster mark covers: the Request-URI's user part.
fn uri_number<'a>(e: &'a Essentials<'_>) -> &'a [u8] {
    e.request_uri
        .as_sip()
        .and_then(|u| u.user)
        .unwrap_or_default()
}

/// Classifies an initial request by its cluster mark. Never trusts the source address alone:
/// a valid mark is needed, and the source must be a peer too.
pub fn inbound(cx: &Cx<'_>, e: &Essentials<'_>, from: SocketAddr) -> Inbound {
    let Some(mark) = e.request_uri.as_sip().and_then(|u| u.param(MARK_PARAM)) else {
        return Inbound::Unmarked;
    };
    let Some(c) = cx.cfg.cluster.as_ref() else {
        return Inbound::Forged;
    };
    let ok = c.is_peer(from.ip())
        && e.top_via.has_rfc3261_branch()
        && mark.is_some_and(|m| {
            verify_mark(
                &c.secret,
                uri_number(e),
                e.call_id,
                e.top_via.branch.unwrap_or_default(),
                m,
                cx.env.wall_secs(cx.now),
            )
        });
    if ok {
        Inbound::Branch
    } else {
        Inbound::Forged
    }
}

/// Pushes one cluster branch per other node holding `number` whose `advertise` lies inside
/// `peers`. The Request-URI ends in a bare `;sfcl` that [`mark_uri`] fills in once the
/// branch's Via branch exists.
pub fn remote_targets(
    c: &ClusterConfig,
    dir: &Directory,
    number: &[u8],
    out: &mut Vec<ForkTarget<'_>>,
) -> u64 {
    let mut n = 0;
    for node in dir.holders(number) {
        if node.name == c.node || node.advertise == c.advertise || !c.is_peer(node.advertise.ip()) {
            continue;
        }
        let mut uri = b"sip:".to_vec();
        uri.extend_from_slice(number);
        uri.push(b'@');
        crate::sip::build::push_hostport(&mut uri, node.advertise);
        uri.push(b';');
        uri.extend_from_slice(MARK_PARAM.as_bytes());
        out.push(ForkTarget {
            uri: Cow::Owned(uri),
            dest: node.advertise,
            q: 1000,
            // Newest: a branch cap keeps the cluster branches (each stands for a node's devices).
            registered_at: Instant::from_micros(u64::MAX / 2),
            external: false,
            transport: crate::core::transport::Transport::Udp,
        });
        n += 1;
    }
    n
}

/// Follow-me across nodes: every stage naming `self` also rings, one cluster branch per
/// other node holding `number`, that node's devices in that stage (same `q` = 1000 - stage,
/// so the branch shares the stage's ring time and is cancelled when the stage ends). The
/// remote node rings its local devices only, never its own follow-me.
pub fn followme_targets(
    c: &ClusterConfig,
    dir: &Directory,
    number: &[u8],
    fm: &FollowMe,
    out: &mut Vec<ForkTarget<'_>>,
) -> u64 {
    let mut n = 0;
    for (i, stage) in fm.stages.iter().enumerate() {
        if !stage.targets.iter().any(|t| matches!(t, Target::Own)) {
            continue;
        }
        let q = 1000u16.saturating_sub(i as u16);
        let start = out.len();
        n += remote_targets(c, dir, number, out);
        for t in &mut out[start..] {
            t.q = q;
        }
    }
    n
}

/// Is this branch target a cluster branch (its URI asks for a mark and it goes to a peer)?
pub fn is_cluster_target(cx: &Cx<'_>, uri: &[u8], dest: SocketAddr) -> bool {
    // Every branch of every call asks this: without a cluster it costs one load.
    let Some(cluster) = cx.cfg.cluster.as_ref() else {
        return false;
    };
    uri.strip_suffix(MARK_PARAM.as_bytes())
        .is_some_and(|rest| rest.ends_with(b";"))
        && cluster.is_peer(dest.ip())
}

/// Is `dest` a peer node (a branch there is a cluster branch)?
pub fn is_peer(cx: &Cx<'_>, dest: SocketAddr) -> bool {
    cx.cfg
        .cluster
        .as_ref()
        .is_some_and(|c| c.is_peer(dest.ip()))
}

/// The Request-URI of a cluster branch with its mark filled in, given the branch's Via value
/// (`...;branch=X`) and the request's Call-ID; `None` when `uri` is no cluster branch.
pub fn mark_uri(
    cx: &Cx<'_>,
    uri: &[u8],
    dest: SocketAddr,
    call_id: &[u8],
    via: &[u8],
) -> Option<Vec<u8>> {
    if !is_cluster_target(cx, uri, dest) {
        return None;
    }
    let c = cx.cfg.cluster.as_ref()?;
    let branch = via
        .windows(8)
        .position(|w| w == b";branch=")
        .map(|i| &via[i + 8..])?;
    let branch = &branch[..branch
        .iter()
        .position(|&b| b == b';')
        .unwrap_or(branch.len())];
    let number = crate::sip::Uri::parse(uri)
        .ok()
        .and_then(|u| u.as_sip().and_then(|s| s.user).map(<[u8]>::to_vec))?;
    let mut out = uri.to_vec();
    out.push(b'=');
    write_mark(
        &c.secret,
        &number,
        call_id,
        branch,
        cx.env.wall_secs(cx.now),
        &mut out,
    );
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_verify_only_for_their_fields_and_window() {
        let s = b"0123456789abcdef-secret";
        let mut m = Vec::new();
        write_mark(s, b"1001", b"cid", b"z9hG4bKx", 1_000, &mut m);
        assert!(verify_mark(s, b"1001", b"cid", b"z9hG4bKx", &m, 1_000));
        assert!(verify_mark(s, b"1001", b"cid", b"z9hG4bKx", &m, 1_030));
        assert!(!verify_mark(s, b"1001", b"cid", b"z9hG4bKx", &m, 1_031));
        assert!(!verify_mark(s, b"1002", b"cid", b"z9hG4bKx", &m, 1_000));
        assert!(!verify_mark(s, b"1001", b"cie", b"z9hG4bKx", &m, 1_000));
        assert!(!verify_mark(s, b"1001", b"cid", b"z9hG4bKy", &m, 1_000));
        assert!(!verify_mark(
            b"another-secret-0000",
            b"1001",
            b"cid",
            b"z9hG4bKx",
            &m,
            1_000
        ));
        let mut bad = m.clone();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
        assert!(!verify_mark(s, b"1001", b"cid", b"z9hG4bKx", &bad, 1_000));
        assert!(!verify_mark(
            s,
            b"1001",
            b"cid",
            b"z9hG4bKx",
            b"3e8.",
            1_000
        ));
        assert!(!verify_mark(s, b"1001", b"cid", b"z9hG4bKx", b"", 1_000));
    }
}
