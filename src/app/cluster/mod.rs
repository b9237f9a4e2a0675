//! The cluster directory thread (issue 18, `docs/cluster.md`): keeps this node's part of the
//! shared directory on Redis Cluster and a local cache of the other nodes' parts, which the
//! shards read lock-free.
//!
//! Data model on a stock Redis Cluster (no server-side configuration, no modules):
//! - `sipfork:nodes` (hash): node name → `advertise|admin|expires_ms`, refreshed every `ttl/3`;
//!   a node whose record is past its expiry is dead and gone from every cache.
//! - `sipfork:ext:{N}` (sorted set): the nodes with at least one live binding of extension N,
//!   each scored with its own expiry (wall ms): the per-extension directory with per-node
//!   expiry. Written when the set changes, refreshed with the node record.
//! - `sipfork:held:{NODE}` (set): the extensions NODE holds; what a (re)starting node reads to
//!   build its cache.
//! - `sipfork:log` (stream, capped): one entry per change (`n`, `node`, `up`, `t`); every node
//!   polls it every [`TICK`] (XREAD), so a change is visible on the others within a few hundred
//!   milliseconds. A full re-read of the node records and held sets every `ttl/3` repairs any
//!   gap (a trimmed stream, a failover that lost writes).
//!
//! The shards push presence changes (an extension got its first binding / lost its last one)
//! into a lock-free queue; this thread batches them into one pipeline per tick. No SIP datagram
//! ever waits on Redis: the shards only read the last published [`Directory`] (`ArcSwap`).
//! When Redis is unreachable the thread keeps serving the last cache (entries vanish as their
//! nodes' records expire, within `ttl`), reports the directory stale (metrics, `/cluster`, a
//! warning in the log) and rewrites everything this node holds once Redis is back.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use crossbeam_queue::SegQueue;
use redis::cluster::{cluster_pipe, ClusterClient, ClusterConnection};
use redis::Value;

use crate::config::cluster::ClusterConfig;
use crate::core::cluster::{Directory, Node};
use crate::core::metrics::MetricSink;

pub mod admin;
pub mod link;

/// How often the thread writes pending changes and polls the change log.
pub const TICK: Duration = Duration::from_millis(100);
/// The directory counts as stale when Redis has not answered for this long.
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// Connect and response timeout of the Redis connections.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between reconnection attempts.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// Entries kept in the change log (approximate trim).
const LOG_MAXLEN: u32 = 100_000;
/// Commands per pipeline in a full refresh.
const CHUNK: usize = 500;

const NODES_KEY: &str = "sipfork:nodes";
const LOG_KEY: &str = "sipfork:log";

fn ext_key(number: &[u8]) -> Vec<u8> {
    [b"sipfork:ext:{".as_slice(), number, b"}"].concat()
}

fn held_key(node: &str) -> String {
    format!("sipfork:held:{{{node}}}")
}

/// Appends a change-log entry: extension `number` (empty for a node announcement) on `node`,
/// `up` 1 (held), 0 (released) or 2 (the node refreshed its records).
fn log_entry(p: &mut redis::cluster::ClusterPipeline, number: &[u8], node: &str, up: u8) {
    p.cmd("XADD")
        .arg(LOG_KEY)
        .arg("MAXLEN")
        .arg("~")
        .arg(LOG_MAXLEN)
        .arg("*")
        .arg("n")
        .arg(number)
        .arg("node")
        .arg(node)
        .arg("up")
        .arg(up)
        .arg("t")
        .arg(wall_ms())
        .ignore();
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A presence change of one local extension, from the shard owning it.
#[derive(Debug)]
pub struct Change {
    /// The extension.
    pub number: Box<[u8]>,
    /// It has at least one live binding now.
    pub present: bool,
}

/// What the directory thread shares with the shards and the admin listener.
pub struct Shared {
    /// The configuration it runs with.
    pub cfg: ClusterConfig,
    /// This node's admin listener.
    pub admin: Option<SocketAddr>,
    /// The newest directory snapshot (shards: `load`, lock-free).
    pub directory: ArcSwap<Directory>,
    /// Presence changes from the shards.
    pub changes: SegQueue<Change>,
    stop: AtomicBool,
    /// Redis answered the last command.
    pub redis_up: AtomicBool,
    /// Wall ms of the last successful exchange with Redis (0: never).
    pub last_ok_ms: AtomicU64,
    /// The last Redis error, for `/cluster`.
    pub last_error: Mutex<String>,
    /// Directory writes (pipelined commands) sent.
    pub writes: AtomicU64,
    /// Pipelines that failed.
    pub errors: AtomicU64,
    /// Full refreshes of this node's records.
    pub refreshes: AtomicU64,
    /// Change-log entries of other nodes applied.
    pub applied: AtomicU64,
    /// Age (ms) of the last change of another node when it reached this cache.
    pub lag_ms: AtomicU64,
    /// Largest such age since the start.
    pub lag_max_ms: AtomicU64,
    /// Extensions this node holds.
    pub local_extensions: AtomicU64,
    /// Times Redis went from reachable to unreachable.
    pub outages: AtomicU64,
    /// Turns of the directory thread.
    pub ticks: AtomicU64,
    /// Where this node reads the change log (a stream id).
    pub log_position: Mutex<String>,
}

impl Shared {
    /// Is the directory stale (Redis not answering for [`STALE_AFTER`])?
    pub fn stale(&self) -> bool {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        last == 0 || wall_ms().saturating_sub(last) > STALE_AFTER.as_millis() as u64
    }

    /// Writes the directory thread's metrics.
    pub fn export_metrics(&self, sink: &mut MetricSink) {
        let d = self.directory.load();
        let g = |sink: &mut MetricSink, name, help, v| sink.gauge(name, help, &[], v);
        let c = |sink: &mut MetricSink, name, help, a: &AtomicU64| {
            sink.counter(name, help, &[], a.load(Ordering::Relaxed))
        };
        g(
            sink,
            "sipfork_cluster_directory_stale",
            "1 while Redis has not answered for 3 s: remote nodes come from the last cache, local devices ring as always",
            u64::from(self.stale()),
        );
        g(
            sink,
            "sipfork_cluster_redis_up",
            "1 when the last exchange with Redis Cluster succeeded",
            u64::from(self.redis_up.load(Ordering::Relaxed)),
        );
        g(
            sink,
            "sipfork_cluster_nodes",
            "Live nodes in the directory cache (this one included)",
            d.nodes.len() as u64,
        );
        g(
            sink,
            "sipfork_cluster_remote_extensions",
            "Extensions other nodes hold, in the directory cache",
            d.extensions.len() as u64,
        );
        g(
            sink,
            "sipfork_cluster_local_extensions",
            "Extensions with at least one live binding on this node",
            self.local_extensions.load(Ordering::Relaxed),
        );
        g(
            sink,
            "sipfork_cluster_directory_lag_ms",
            "Age of the last change of another node when it reached this node's cache",
            self.lag_ms.load(Ordering::Relaxed),
        );
        c(
            sink,
            "sipfork_cluster_directory_writes_total",
            "Directory commands written to Redis (batched in pipelines)",
            &self.writes,
        );
        c(
            sink,
            "sipfork_cluster_directory_errors_total",
            "Redis pipelines that failed (retried; a full refresh follows)",
            &self.errors,
        );
        c(
            sink,
            "sipfork_cluster_directory_refreshes_total",
            "Full refreshes of this node's directory records",
            &self.refreshes,
        );
        c(
            sink,
            "sipfork_cluster_directory_changes_applied_total",
            "Other nodes' directory changes applied to this node's cache",
            &self.applied,
        );
        c(
            sink,
            "sipfork_cluster_redis_outages_total",
            "Times Redis Cluster became unreachable",
            &self.outages,
        );
    }

    /// `/cluster` as JSON.
    pub fn status_json(&self) -> serde_json::Value {
        let d = self.directory.load();
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        let now = wall_ms();
        let nodes: Vec<_> = d
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "node": n.name,
                    "advertise": n.advertise.to_string(),
                    "admin": n.admin.map(|a| a.to_string()),
                    "self": n.name == self.cfg.node,
                    "peer": self.cfg.is_peer(n.advertise.ip()),
                })
            })
            .collect();
        serde_json::json!({
            "node": self.cfg.node,
            "advertise": self.cfg.advertise.to_string(),
            "ttl_s": self.cfg.ttl.as_secs(),
            "nodes": nodes,
            "remote_extensions": d.extensions.len(),
            "local_extensions": self.local_extensions.load(Ordering::Relaxed),
            "directory": {
                "stale": self.stale(),
                "lag_ms": self.lag_ms.load(Ordering::Relaxed),
                "lag_max_ms": self.lag_max_ms.load(Ordering::Relaxed),
                "changes_applied": self.applied.load(Ordering::Relaxed),
                "writes": self.writes.load(Ordering::Relaxed),
                "refreshes": self.refreshes.load(Ordering::Relaxed),
                "ticks": self.ticks.load(Ordering::Relaxed),
                "log_position": self.log_position.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            },
            "redis": {
                "seeds": self.cfg.redis,
                "up": self.redis_up.load(Ordering::Relaxed),
                "last_ok_ms_ago": (last > 0).then(|| now.saturating_sub(last)),
                "errors": self.errors.load(Ordering::Relaxed),
                "outages": self.outages.load(Ordering::Relaxed),
                "last_error": self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            },
        })
    }
}

/// The running directory thread.
pub struct DirectoryThread {
    shared: Arc<Shared>,
    join: Option<JoinHandle<()>>,
}

impl DirectoryThread {
    /// Starts the thread (it connects in the background: the node serves its own devices at
    /// once, Redis or not).
    pub fn start(cfg: ClusterConfig, admin: Option<SocketAddr>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            cfg,
            admin,
            directory: ArcSwap::from_pointee(Directory::default()),
            changes: SegQueue::new(),
            stop: AtomicBool::new(false),
            redis_up: AtomicBool::new(false),
            last_ok_ms: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
            writes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            lag_max_ms: AtomicU64::new(0),
            local_extensions: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            log_position: Mutex::new(String::new()),
        });
        let s = Arc::clone(&shared);
        let join = std::thread::Builder::new()
            .name("sipfork-directory".into())
            .spawn(move || Worker::new(s).run())?;
        Ok(Self {
            shared,
            join: Some(join),
        })
    }

    /// What the shards and the admin listener read.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Stops the thread (this node's records expire from the directory within `ttl`).
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// A node record as read from `sipfork:nodes`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeRecord {
    advertise: SocketAddr,
    admin: Option<SocketAddr>,
    expires_ms: u64,
}

fn parse_record(v: &str) -> Option<NodeRecord> {
    let mut it = v.split('|');
    let advertise = it.next()?.parse().ok()?;
    let admin = it.next()?;
    let admin = (!admin.is_empty()).then(|| admin.parse().ok()).flatten();
    let expires_ms = it.next()?.parse().ok()?;
    Some(NodeRecord {
        advertise,
        admin,
        expires_ms,
    })
}

struct Worker {
    s: Arc<Shared>,
    client: Option<ClusterClient>,
    con: Option<ClusterConnection>,
    next_connect: Instant,
    /// Local extensions with a live binding.
    held: HashSet<Box<[u8]>>,
    /// Changes not yet written (number → present).
    pending: HashMap<Box<[u8]>, bool>,
    full_refresh: bool,
    next_refresh: Instant,
    next_resync: Instant,
    log_id: String,
    nodes: HashMap<String, NodeRecord>,
    remote: HashMap<Box<[u8]>, BTreeSet<String>>,
    dirty: bool,
    warned_stale: bool,
}

impl Worker {
    fn new(s: Arc<Shared>) -> Self {
        let now = Instant::now();
        Self {
            s,
            client: None,
            con: None,
            next_connect: now,
            held: HashSet::new(),
            pending: HashMap::new(),
            full_refresh: true,
            next_refresh: now,
            next_resync: now,
            log_id: "$".into(),
            nodes: HashMap::new(),
            remote: HashMap::new(),
            dirty: true,
            warned_stale: false,
        }
    }

    fn refresh_every(&self) -> Duration {
        (self.s.cfg.ttl / 3).max(Duration::from_secs(1))
    }

    fn run(mut self) {
        while !self.s.stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            self.tick();
            if let Some(rest) = TICK.checked_sub(started.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        // A clean stop withdraws this node at once (a crash waits for `ttl`).
        if let Some(con) = self.con.as_mut() {
            let _ = cluster_pipe()
                .cmd("HDEL")
                .arg(NODES_KEY)
                .arg(&self.s.cfg.node)
                .ignore()
                .query::<()>(con);
        }
    }

    fn tick(&mut self) {
        self.s.ticks.fetch_add(1, Ordering::Relaxed);
        while let Some(c) = self.s.changes.pop() {
            if c.present {
                self.held.insert(c.number.clone());
            } else {
                self.held.remove(&c.number);
            }
            self.pending.insert(c.number, c.present);
        }
        self.s
            .local_extensions
            .store(self.held.len() as u64, Ordering::Relaxed);
        let now = Instant::now();
        if self.con.is_none() && now >= self.next_connect {
            self.connect();
        }
        if self.con.is_some() {
            let result = self.exchange(now);
            match result {
                Ok(()) => self.ok(),
                Err(e) => self.failed(&e),
            }
        }
        self.publish();
        self.s
            .log_position
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone_from(&self.log_id);
        let stale = self.s.stale();
        if stale && !self.warned_stale && self.s.last_ok_ms.load(Ordering::Relaxed) > 0 {
            tracing::warn!(
                error = %self.s.last_error.lock().unwrap_or_else(PoisonError::into_inner),
                "cluster directory stale: Redis Cluster unreachable; local devices ring as always, other nodes from the last cache until their records expire"
            );
            self.warned_stale = true;
        } else if !stale && self.warned_stale {
            tracing::info!("cluster directory fresh again: Redis Cluster reachable");
            self.warned_stale = false;
        }
    }

    fn connect(&mut self) {
        self.next_connect = Instant::now() + RECONNECT_PAUSE;
        if self.client.is_none() {
            match ClusterClient::builder(self.s.cfg.redis.clone())
                .connection_timeout(REDIS_TIMEOUT)
                .response_timeout(REDIS_TIMEOUT)
                .retries(2)
                .build()
            {
                Ok(c) => self.client = Some(c),
                Err(e) => return self.failed(&e),
            }
        }
        if let Some(client) = &self.client {
            match client.get_connection() {
                Ok(con) => {
                    self.con = Some(con);
                    self.full_refresh = true;
                    self.next_resync = Instant::now();
                }
                Err(e) => self.failed(&e),
            }
        }
    }

    fn ok(&mut self) {
        self.s.redis_up.store(true, Ordering::Relaxed);
        self.s.last_ok_ms.store(wall_ms(), Ordering::Relaxed);
    }

    fn failed(&mut self, e: &redis::RedisError) {
        if self.s.redis_up.swap(false, Ordering::Relaxed) {
            self.s.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "Redis Cluster exchange failed; retrying");
        }
        self.s.errors.fetch_add(1, Ordering::Relaxed);
        *self
            .s
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = e.to_string();
        // What may not have been written is rewritten in full once Redis answers again.
        self.full_refresh = true;
        self.con = None;
        self.client = None;
        self.next_connect = Instant::now() + RECONNECT_PAUSE;
    }

    fn exchange(&mut self, now: Instant) -> redis::RedisResult<()> {
        if self.full_refresh || now >= self.next_refresh {
            self.refresh()?;
            self.full_refresh = false;
            self.next_refresh = now + self.refresh_every();
        } else if !self.pending.is_empty() {
            self.write_pending()?;
        }
        if now >= self.next_resync {
            self.resync()?;
            self.next_resync = now + self.refresh_every();
        } else {
            self.poll_log()?;
        }
        Ok(())
    }

    fn expiry_ms(&self) -> u64 {
        wall_ms() + self.s.cfg.ttl.as_millis() as u64
    }

    fn node_record(&self, expires_ms: u64) -> String {
        format!(
            "{}|{}|{expires_ms}",
            self.s.cfg.advertise,
            self.s.admin.map_or(String::new(), |a| a.to_string())
        )
    }

    /// Writes the pending changes in one pipeline: the per-extension set, the held set, the log.
    fn write_pending(&mut self) -> redis::RedisResult<()> {
        let exp = self.expiry_ms();
        let node = self.s.cfg.node.clone();
        let held = held_key(&node);
        let ttl_ms = 2 * self.s.cfg.ttl.as_millis() as u64;
        let (mut p, mut log) = (cluster_pipe(), cluster_pipe());
        let mut n = 0;
        for (number, &present) in &self.pending {
            let key = ext_key(number);
            if present {
                p.cmd("ZADD").arg(&key).arg(exp).arg(&node).ignore();
                p.cmd("PEXPIRE").arg(&key).arg(ttl_ms).ignore();
                p.cmd("SADD").arg(&held).arg(&number[..]).ignore();
            } else {
                p.cmd("ZREM").arg(&key).arg(&node).ignore();
                p.cmd("SREM").arg(&held).arg(&number[..]).ignore();
            }
            log_entry(&mut log, number, &node, u8::from(present));
            n += if present { 4 } else { 3 };
        }
        p.cmd("PEXPIRE").arg(&held).arg(ttl_ms).ignore();
        let con = self.con.as_mut().expect("connected");
        // The sets first, the log after: a node that sees the log entry and re-reads the held
        // set (a resync) finds the change there. A cluster pipeline spans masters in no order.
        p.query::<()>(con)?;
        log.query::<()>(con)?;
        self.s.writes.fetch_add(n + 1, Ordering::Relaxed);
        self.pending.clear();
        Ok(())
    }

    /// Rewrites this node's record and everything it holds (and removes what it no longer
    /// holds), then announces itself in the log so the others pick it up at once.
    fn refresh(&mut self) -> redis::RedisResult<()> {
        let exp = self.expiry_ms();
        let node = self.s.cfg.node.clone();
        let held = held_key(&node);
        let ttl_ms = 2 * self.s.cfg.ttl.as_millis() as u64;
        let record = self.node_record(exp);
        let con = self.con.as_mut().expect("connected");
        cluster_pipe()
            .cmd("HSET")
            .arg(NODES_KEY)
            .arg(&node)
            .arg(&record)
            .ignore()
            .query::<()>(con)?;
        let mut writes = 1u64;
        let numbers: Vec<&Box<[u8]>> = self.held.iter().collect();
        for chunk in numbers.chunks(CHUNK) {
            let mut p = cluster_pipe();
            for number in chunk {
                let key = ext_key(number);
                p.cmd("ZADD").arg(&key).arg(exp).arg(&node).ignore();
                p.cmd("PEXPIRE").arg(&key).arg(ttl_ms).ignore();
            }
            p.cmd("SADD").arg(&held);
            for number in chunk {
                p.arg(&number[..]);
            }
            p.ignore();
            p.query::<()>(con)?;
            writes += 2 * chunk.len() as u64 + 1;
        }
        // What the set says this node holds and it does not (a removal lost in an outage).
        let listed: Vec<Vec<u8>> = redis::cmd("SMEMBERS").arg(&held).query(con)?;
        let gone: Vec<&Vec<u8>> = listed
            .iter()
            .filter(|n| !self.held.contains(n.as_slice()))
            .collect();
        for chunk in gone.chunks(CHUNK) {
            let mut p = cluster_pipe();
            for number in chunk {
                p.cmd("ZREM").arg(ext_key(number)).arg(&node).ignore();
                p.cmd("SREM").arg(&held).arg(&number[..]).ignore();
            }
            p.query::<()>(con)?;
            writes += 2 * chunk.len() as u64;
        }
        let mut p = cluster_pipe();
        p.cmd("PEXPIRE").arg(&held).arg(ttl_ms).ignore();
        log_entry(&mut p, b"", &node, 2);
        p.query::<()>(con)?;
        self.s.writes.fetch_add(writes + 2, Ordering::Relaxed);
        self.s.refreshes.fetch_add(1, Ordering::Relaxed);
        self.pending.clear();
        Ok(())
    }

    /// Re-reads the node records and every other live node's held set.
    fn resync(&mut self) -> redis::RedisResult<()> {
        let con = self.con.as_mut().expect("connected");
        // The log position first, so nothing written during the re-read is missed.
        let last: Value = redis::cmd("XREVRANGE")
            .arg(LOG_KEY)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(con)?;
        let last_id = stream_entries(&last)
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id);
        self.read_nodes()?;
        let con = self.con.as_mut().expect("connected");
        let now = wall_ms();
        let mut remote: HashMap<Box<[u8]>, BTreeSet<String>> = HashMap::new();
        let live: Vec<String> = self
            .nodes
            .iter()
            .filter(|(name, r)| r.expires_ms > now && **name != self.s.cfg.node)
            .map(|(name, _)| name.clone())
            .collect();
        for name in live {
            let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS").arg(held_key(&name)).query(con)?;
            for m in members {
                remote
                    .entry(m.into_boxed_slice())
                    .or_default()
                    .insert(name.clone());
            }
        }
        // Stale node records (dead for more than a ttl) are removed by whoever sees them.
        let dead: Vec<&String> = self
            .nodes
            .iter()
            .filter(|(_, r)| r.expires_ms + self.s.cfg.ttl.as_millis() as u64 <= now)
            .map(|(n, _)| n)
            .collect();
        if !dead.is_empty() {
            let mut c = redis::cmd("HDEL");
            c.arg(NODES_KEY);
            for n in dead {
                c.arg(n);
            }
            c.query::<()>(con)?;
        }
        tracing::trace!(log = %last_id, nodes = self.nodes.len(), remote = remote.len(), "directory resync");
        self.remote = remote;
        self.log_id = last_id;
        self.dirty = true;
        Ok(())
    }

    fn read_nodes(&mut self) -> redis::RedisResult<()> {
        let con = self.con.as_mut().expect("connected");
        let all: HashMap<String, String> = redis::cmd("HGETALL").arg(NODES_KEY).query(con)?;
        let nodes: HashMap<String, NodeRecord> = all
            .into_iter()
            .filter_map(|(k, v)| parse_record(&v).map(|r| (k, r)))
            .collect();
        if nodes != self.nodes {
            self.nodes = nodes;
            self.dirty = true;
        }
        Ok(())
    }

    /// Applies the other nodes' changes since the last read.
    fn poll_log(&mut self) -> redis::RedisResult<()> {
        let con = self.con.as_mut().expect("connected");
        let v: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(10_000)
            .arg("STREAMS")
            .arg(LOG_KEY)
            .arg(&self.log_id)
            .query(con)?;
        let entries = match &v {
            Value::Nil => Vec::new(),
            Value::Array(streams) => streams
                .iter()
                .filter_map(|s| match s {
                    Value::Array(kv) if kv.len() == 2 => Some(stream_entries(&kv[1])),
                    _ => None,
                })
                .flatten()
                .collect(),
            Value::Map(m) => m.iter().flat_map(|(_, e)| stream_entries(e)).collect(),
            _ => Vec::new(),
        };
        let now = wall_ms();
        tracing::trace!(from = %self.log_id, entries = entries.len(), "directory log read");
        let mut new_node = false;
        for (id, fields) in entries {
            self.log_id = id;
            let field = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
            let (Some(number), Some(node), Some(up)) = (field("n"), field("node"), field("up"))
            else {
                continue;
            };
            let node = String::from_utf8_lossy(&node).into_owned();
            if node == self.s.cfg.node {
                continue;
            }
            if let Some(t) = field("t")
                .and_then(|t| String::from_utf8(t).ok())
                .and_then(|t| t.parse::<u64>().ok())
            {
                let lag = now.saturating_sub(t);
                self.s.lag_ms.store(lag, Ordering::Relaxed);
                self.s.lag_max_ms.fetch_max(lag, Ordering::Relaxed);
            }
            self.s.applied.fetch_add(1, Ordering::Relaxed);
            // A node this cache does not know as live: read its record and held set.
            new_node |= self.nodes.get(&node).is_none_or(|r| r.expires_ms <= now);
            match &up[..] {
                b"1" => {
                    self.remote
                        .entry(number.into_boxed_slice())
                        .or_default()
                        .insert(node);
                }
                b"0" => {
                    if let Some(set) = self.remote.get_mut(number.as_slice()) {
                        set.remove(&node);
                        if set.is_empty() {
                            self.remote.remove(number.as_slice());
                        }
                    }
                }
                _ => {}
            }
            self.dirty = true;
        }
        if new_node {
            // A node (re)appeared: its record (advertise, admin) and what it holds.
            self.next_resync = Instant::now();
        }
        Ok(())
    }

    /// Publishes a new snapshot when anything changed or a node record expired.
    fn publish(&mut self) {
        let now = wall_ms();
        let live: Vec<(&String, &NodeRecord)> = {
            let mut v: Vec<_> = self
                .nodes
                .iter()
                .filter(|(_, r)| r.expires_ms > now)
                .collect();
            v.sort_by(|a, b| a.0.cmp(b.0));
            v
        };
        let current = self.s.directory.load();
        let same_nodes = current.nodes.len() == live.len()
            && current
                .nodes
                .iter()
                .zip(&live)
                .all(|(n, (name, r))| n.name == **name && n.advertise == r.advertise);
        if !self.dirty && same_nodes {
            return;
        }
        let nodes: Vec<Node> = live
            .iter()
            .map(|(name, r)| Node {
                name: (*name).clone(),
                advertise: r.advertise,
                admin: r.admin,
            })
            .collect();
        let index: HashMap<&str, u16> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i as u16))
            .collect();
        let mut extensions = HashMap::with_capacity(self.remote.len());
        for (number, holders) in &self.remote {
            let idx: Vec<u16> = holders
                .iter()
                .filter_map(|h| index.get(h.as_str()).copied())
                .collect();
            if !idx.is_empty() {
                extensions.insert(number.clone(), idx);
            }
        }
        self.s
            .directory
            .store(Arc::new(Directory { nodes, extensions }));
        self.dirty = false;
    }
}

/// One change-log entry: its id and its `(field, value)` pairs.
type LogEntry = (String, Vec<(String, Vec<u8>)>);

/// The entries of an XRANGE/XREAD reply's entry list.
fn stream_entries(v: &Value) -> Vec<LogEntry> {
    let Value::Array(entries) = v else {
        return Vec::new();
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    };
    entries
        .iter()
        .filter_map(|e| {
            let Value::Array(parts) = e else { return None };
            let id = String::from_utf8(text(parts.first()?)?).ok()?;
            let Value::Array(kv) = parts.get(1)? else {
                return None;
            };
            let fields = kv
                .chunks(2)
                .filter_map(|p| {
                    Some((String::from_utf8(text(p.first()?)?).ok()?, text(p.get(1)?)?))
                })
                .collect();
            Some((id, fields))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_records_round_trip() {
        let r = parse_record("127.0.0.2:5060|127.0.0.2:8080|123").unwrap();
        assert_eq!(r.advertise, "127.0.0.2:5060".parse().unwrap());
        assert_eq!(r.admin, Some("127.0.0.2:8080".parse().unwrap()));
        assert_eq!(r.expires_ms, 123);
        assert_eq!(parse_record("127.0.0.2:5060||9").unwrap().admin, None);
        assert!(parse_record("nonsense").is_none());
    }
}
