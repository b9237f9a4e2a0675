//! TOML configuration → validated [`Config`], with errors that name the key and the line.
//!
//! `sipfork --config FILE` runs what this module accepts; `sipfork check-config FILE` prints
//! [`Config`]'s `Display` (what would run) and its [`Config::warnings`]. A wrong file is a
//! [`ConfigError`] such as
//! ``sipfork.toml:14: registrar.on_limit: unknown variant `rejct`, expected `reject` or `evict-oldest` ``,
//! and the appliance does not start.
//!
//! Every table denies unknown keys (a typo is an error, never a silently ignored setting).
//! Values with a syntax of their own are parsed during deserialization (`raw.rs`), so their
//! errors carry the value's span; checks across keys run afterwards (`validate.rs`) and find
//! their line through the key path (`locate.rs`). The result is lookup-friendly: durations are
//! [`Duration`], addresses [`SocketAddr`], and extension numbers are sorted ranges searched
//! without expansion.
//!
//! # Extension numbers and their width
//! A number is 1 to [`MAX_NUMBER_WIDTH`] ASCII digits and its width is part of it: both ends of
//! a range have the same number of digits, and the range holds exactly the numbers of that
//! width between them. `"0100-0199"` holds `0100` … `0199` but not `100`; `"1000-1999"` does not
//! hold `01000`. So a number matches at most one range, and no width is ever guessed.

pub mod classes;
pub mod cluster;
pub mod features;
pub mod followme;
mod listen;
mod locate;
mod net;
mod numbers;
pub mod overload;
mod raw;
mod summary;
pub mod tenancy;
pub mod tls;
mod trunk_cert;
mod validate;
pub mod websocket;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use self::listen::{Listener, TcpConfig};
use self::net::{parse_host_ip, RouteTable};
pub use self::net::{Cidr, Domain, NextHop, Route, TrustedPeer};
pub use self::numbers::{Credential, DidRange, ExtensionPolicy, NumberRange, MAX_NUMBER_WIDTH};
use self::numbers::{ExtensionIndex, PolicyDefaults};
use self::validate::parse;
use crate::core::registrar::digest::Algorithm;

/// Most shards (threads) a configuration may ask for.
pub const MAX_SHARDS: u16 = 1024;
/// Most devices per extension a configuration may allow.
pub const MAX_CONTACTS: u32 = 1000;
/// Most parallel branches per call a configuration may allow.
pub const MAX_BRANCHES: u32 = 100;
/// Longest registration a configuration may allow (one year, in seconds).
pub const MAX_EXPIRES_SECS: u64 = 365 * 24 * 3600;
/// Longest drain on stop (seconds).
pub const MAX_DRAIN_SECS: u64 = 3600;
/// Shortest admin token (characters): a bearer token is the only thing guarding `POST /reload`.
pub const MIN_ADMIN_TOKEN: usize = 16;
/// Longest batching window (µs): beyond it, latency suffers more than wake-ups cost.
pub const MAX_COALESCE_US: u32 = 1000;

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key is missing, unknown, or has a value that cannot work.
    #[error("{}", render_invalid(file.as_deref(), key, *line, why))]
    Invalid {
        /// The file, when loaded from one.
        file: Option<PathBuf>,
        /// Dotted key path (`registrar.on_limit`, `extensions[2].numbers`); empty for syntax errors.
        key: String,
        /// 1-based line.
        line: usize,
        /// What is wrong and what is expected.
        why: String,
    },
}

fn render_invalid(file: Option<&Path>, key: &str, line: usize, why: &str) -> String {
    let place = match file {
        Some(file) => format!("{}:{line}", file.display()),
        None => format!("line {line}"),
    };
    if key.is_empty() {
        format!("{place}: {why}")
    } else {
        format!("{place}: {key}: {why}")
    }
}

impl ConfigError {
    /// The key path, for [`ConfigError::Invalid`].
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } => None,
        }
    }

    /// The 1-based line, for [`ConfigError::Invalid`].
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => Some(*line),
            ConfigError::Read { .. } => None,
        }
    }
}

/// UDP I/O backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoBackend {
    /// io_uring when the probe succeeds, else recvmmsg/sendmmsg.
    Auto,
    /// io_uring; fails to start without it.
    Uring,
    /// recvmmsg/sendmmsg with epoll.
    Mmsg,
    /// AF_XDP on `server.interface` (never chosen by `auto`; see docs/xdp.md).
    Xdp,
}

/// Kernel steering of datagrams to their owner shard (`server.steering`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Steering {
    /// A reuseport eBPF program picks the owner shard's socket where the kernel allows it.
    #[default]
    Auto,
    /// The kernel's hash spreads datagrams; the mailbox hands them to their owners.
    Off,
}

/// Shard thread pinning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinCores {
    /// Threads float.
    Off,
    /// Shard `i` on the `i`-th CPU the process may use.
    PerShard,
    /// Shard `i` on CPU `cpus[i]`.
    Cpus(Vec<usize>),
}

/// What a REGISTER beyond `max_contacts` gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnLimit {
    /// `403 Too many registered devices`.
    Reject,
    /// The binding with the oldest registration time is removed.
    EvictOldest,
}

/// Where an INVITE to a binding goes (DECISIONS.md "NAT").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatMode {
    /// The REGISTER's source when the Contact's IP differs from it, else the Contact.
    Auto,
    /// Always the REGISTER's source address and port.
    Flow,
    /// Always the Contact.
    Contact,
}

/// Whether requests are challenged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// RFC 8760 digest: REGISTER gets 401, other initial requests 407.
    Digest,
    /// Nothing is challenged.
    None,
}

/// How a call to an extension rings its devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForkMode {
    /// Every binding at once.
    Parallel,
    /// Equal-q groups in descending q, each for `group_timeout` or until it failed.
    QGroups,
}

/// `[server]`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// UDP listen address.
    pub listen: SocketAddr,
    /// Every `listen` entry: the UDP address above, and the TCP and TLS ones when configured.
    pub listeners: Vec<Listener>,
    /// Configured domains (the listen address is accepted besides these).
    pub domains: Vec<Domain>,
    /// Shard threads.
    pub shards: u16,
    /// I/O backend.
    pub io: IoBackend,
    /// Kernel steering to the owner shard.
    pub steering: Steering,
    /// Bindings journal directory; `None` keeps registrations in memory only.
    pub data_dir: Option<PathBuf>,
    /// Admin HTTP listener (metrics, extension overview).
    pub admin: Option<SocketAddr>,
    /// Thread pinning.
    pub pin_cores: PinCores,
    /// Socket receive and send buffer, bytes.
    pub socket_buffer: u64,
    /// Bounded batching window; zero disables it.
    pub coalesce: Duration,
    /// Bearer token that `POST /reload` on the admin listener must carry; `None` refuses reloads
    /// over HTTP (SIGHUP still reloads).
    pub admin_token: Option<String>,
    /// On SIGTERM, how long calls in progress may go on (new INVITEs get 503) before the stop;
    /// zero stops at once.
    pub drain: Duration,
    /// Public calls the whole server allows at once (the top of the tenancy tree).
    pub max_public_calls: Option<u32>,
    /// The NIC whose queues the shards bind with `io = "xdp"`.
    pub interface: Option<String>,
    /// XDP attach mode with `io = "xdp"`.
    pub xdp_mode: crate::engine::io::xdp::XdpMode,
}

impl ServerConfig {
    /// The IP a listener on `ip` is reached at: `ip`, or our UDP address's IP (`udp`) for a
    /// wildcard listener, which names no host.
    pub fn named_ip(ip: IpAddr, udp: IpAddr) -> IpAddr {
        if ip.is_unspecified() {
            udp
        } else {
            ip
        }
    }

    /// Whether `ip`:`port` is one of our `tcp:`/`tls:`/`ws:`/`wss:` listeners (a wildcard one
    /// at our UDP IP, `udp`, as Via and Record-Route name it).
    pub fn is_stream_listener(&self, ip: IpAddr, port: u16, udp: IpAddr) -> bool {
        self.listeners.iter().any(|l| {
            l.transport.is_stream()
                && l.addr.port() == port
                && Self::named_ip(l.addr.ip(), udp).to_canonical() == ip.to_canonical()
        })
    }
}

/// `[registrar]`.
#[derive(Clone, Debug)]
pub struct RegistrarConfig {
    /// Devices per extension (tables may override).
    pub max_contacts: u32,
    /// What happens beyond `max_contacts`.
    pub on_limit: OnLimit,
    /// Shorter requested expiries get `423 Interval Too Brief`.
    pub min_expires: Duration,
    /// Longer requested expiries are shortened to this.
    pub max_expires: Duration,
    /// Expiry when a REGISTER names none.
    pub default_expires: Duration,
    /// NAT handling.
    pub nat: NatMode,
}

/// `[auth]`.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Digest or nothing.
    pub mode: AuthMode,
    /// Realm challenged for (default: the first domain, else the listen IP).
    pub realm: String,
    /// Algorithms offered, first preferred.
    pub algorithms: Vec<Algorithm>,
    /// How long a nonce is valid.
    pub nonce_ttl: Duration,
}

/// `[policy]`: what limits answer, how long a call may last, emergency numbers.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// Status for calls refused by a limit: 503 (with a Q.850 cause 34 Reason) or 486.
    pub refuse_with: u16,
    /// A dialog without BYE is forgotten (and its call released) after this long.
    pub max_call: Duration,
    /// `[[emergency]]` numbers: never limited, shed or blocked.
    pub emergency: Vec<Vec<u8>>,
    /// `cdr`: the file public calls' CDRs are appended to (JSON lines); `None`: no CDRs.
    pub cdr: Option<std::path::PathBuf>,
    /// `trunk_keepalive`: how often each shard sends OPTIONS to every trunk address (`None`:
    /// never; every address counts as alive).
    pub trunk_keepalive: Option<Duration>,
}

impl PolicyConfig {
    /// Is `number` an emergency number?
    pub fn is_emergency(&self, number: &[u8]) -> bool {
        self.emergency.iter().any(|n| n == number)
    }
}

/// `[security]`: how password guessing is throttled.
#[derive(Clone, Debug)]
pub struct SecurityConfig {
    /// Failed digest checks (wrong response to a fresh nonce) a (source IP, username) pair may
    /// make within `auth_window` before it is blocked; an address is blocked at five times this.
    pub max_auth_failures: u32,
    /// The window failures are counted in.
    pub auth_window: Duration,
    /// How long a block lasts.
    pub block: Duration,
}

/// `[proxy]`.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Fork mode (tables may override).
    pub fork: ForkMode,
    /// q-group ring time (tables may override).
    pub group_timeout: Duration,
    /// Branches per call; beyond it the most recently registered bindings ring.
    pub max_branches: u32,
    /// Pass only the first 2xx upstream (tables may override).
    pub single_answer: bool,
    /// Timer C (RFC 3261 §16.6 step 11: more than 3 minutes).
    pub timer_c: Duration,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[registrar]`.
    pub registrar: RegistrarConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[proxy]`.
    pub proxy: ProxyConfig,
    /// `[security]`.
    pub security: SecurityConfig,
    /// `[cluster]`: several nodes sharing one directory (`docs/cluster.md`).
    pub cluster: Option<cluster::ClusterConfig>,
    /// `[policy]` and `[[emergency]]`.
    pub policy: PolicyConfig,
    /// `[[tenants]]` under the server level.
    pub tenancy: tenancy::Tenancy,
    /// `[overload]`.
    pub overload: overload::OverloadConfig,
    /// Live public calls per tenancy level, shared by every shard of the process.
    pub ledger: std::sync::Arc<crate::core::policy::ledger::Ledger>,
    /// Trunk source addresses, the transport each is configured with, the number of the
    /// trunk extension each belongs to, and whether that trunk is known by its certificate
    /// (`trunk_certificate`; then never by the address).
    trunks: Vec<(
        std::net::SocketAddr,
        crate::core::transport::Transport,
        Vec<u8>,
        bool,
    )>,
    /// `trunk_certificate` names and the trunk number each identifies (`trunk_cert`).
    trunk_certificates: trunk_cert::TrunkNames,
    dids: Vec<DidRange>,
    followme: std::collections::HashMap<Vec<u8>, followme::FollowMe>,
    /// `[[device_classes]]`.
    pub device_classes: classes::DeviceClasses,
    /// `[features]`: dialog-aware feature codes.
    pub features: features::FeatureCodes,
    extensions: ExtensionIndex,
    trusted: Vec<TrustedPeer>,
    routes: RouteTable,
    warnings: Vec<String>,
    /// `[tls]`, loaded (certificate files read when the configuration is).
    pub tls: Option<tls::TlsConfig>,
    /// `[tcp]`: limits of TCP and TLS connections.
    pub tcp: TcpConfig,
    /// `[websocket]`: what `ws:` and `wss:` listeners accept.
    pub websocket: websocket::WsConfig,
}

impl Config {
    /// Reads and validates a file. A relative `data_dir` is taken relative to the file's
    /// directory, so a service manager's working directory does not matter.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = parse(&text, Some(path))?;
        if let Some(dir) = config.server.data_dir.as_mut().filter(|d| d.is_relative()) {
            if let Some(base) = path.parent() {
                *dir = base.join(&*dir);
            }
        }
        Ok(config)
    }

    /// Validates a configuration given as text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        parse(text, None)
    }

    /// The follow-me sequence of extension `number`.
    pub fn followme(&self, number: &[u8]) -> Option<&followme::FollowMe> {
        if self.followme.is_empty() {
            return None;
        }
        self.followme.get(number)
    }

    /// The public number ranges (`[[dids]]`).
    pub fn did_ranges(&self) -> &[DidRange] {
        &self.dids
    }

    /// The extension a public number (`[[dids]]`) leads to.
    pub fn did(&self, number: &[u8]) -> Option<&[u8]> {
        if self.dids.is_empty() {
            return None;
        }
        self.dids
            .iter()
            .find(|d| d.contains(number))
            .map(|d| d.extension.as_slice())
    }

    /// Every configured trunk address, in configuration order (OPTIONS keep-alives).
    pub fn trunk_addresses(&self) -> impl Iterator<Item = std::net::SocketAddr> + '_ {
        self.trunks.iter().map(|(a, ..)| *a)
    }

    /// The transport trunk address `addr` is configured with (`None`: no trunk's address).
    pub fn trunk_transport_at(
        &self,
        addr: std::net::SocketAddr,
    ) -> Option<crate::core::transport::Transport> {
        self.trunks
            .iter()
            .find(|(a, ..)| *a == addr)
            .map(|(_, t, ..)| *t)
    }

    /// The policy of a provisioned number (the user part of a request URI), or `None`.
    /// One binary search over the ranges; nothing is allocated.
    pub fn extension(&self, number: &[u8]) -> Option<ExtensionPolicy<'_>> {
        let found = self.extensions.find(number)?;
        let defaults = PolicyDefaults {
            max_contacts: self.registrar.max_contacts,
            fork: self.proxy.fork,
            group_timeout: self.proxy.group_timeout,
            single_answer: self.proxy.single_answer,
        };
        Some(ExtensionPolicy::new(&self.extensions, found, defaults))
    }

    /// The per-number counter (`Ledger` line) of `number`, when its table limits outgoing
    /// calls or is all-busy.
    pub fn line(&self, number: &[u8]) -> Option<usize> {
        self.extensions.line(number)
    }

    /// Numbers provisioned.
    pub fn extension_count(&self) -> u64 {
        self.extensions.count()
    }

    /// Provisioned ranges in number order.
    pub fn extension_ranges(&self) -> impl Iterator<Item = NumberRange> + '_ {
        self.extensions.ranges()
    }

    /// True when `ip` is the next hop of a `[[routes]]` entry (a carrier peer).
    pub fn is_route_hop(&self, ip: IpAddr) -> bool {
        self.routes.iter().any(|r| r.next_hop.addr.ip() == ip)
    }

    /// True when requests from `ip` are not challenged.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_peer(ip).is_some()
    }

    /// The first trusted entry containing `ip`.
    pub fn trusted_peer(&self, ip: IpAddr) -> Option<&TrustedPeer> {
        self.trusted.iter().find(|t| t.cidr.contains(ip))
    }

    /// Every trusted entry, in file order.
    pub fn trusted(&self) -> &[TrustedPeer] {
        &self.trusted
    }

    /// The route with the longest prefix of `number` (for numbers not provisioned here).
    pub fn route_for(&self, number: &[u8]) -> Option<&Route> {
        self.routes.lookup(number)
    }

    /// Every route, longest prefix first.
    pub fn routes(&self) -> impl Iterator<Item = &Route> + '_ {
        self.routes.iter()
    }

    /// True when a request URI host (and port) names this proxy: a configured domain (names
    /// case-insensitively, any port; a trailing dot ignored), or the listen IP with no port or
    /// the listen port, or a `tcp:`/`tls:` listener's IP and port (a wildcard one on the listen
    /// IP; a phone on TLS names `sips:1001@IP:5061`). `host` is as in the URI (`[::1]` for IPv6).
    pub fn is_local_domain(&self, host: &[u8], port: Option<u16>) -> bool {
        let host = host.strip_suffix(b".").unwrap_or(host);
        if let Some(ip) = parse_host_ip(host).map(|ip| ip.to_canonical()) {
            let listen = self.server.listen;
            if ip == listen.ip().to_canonical() && port.is_none_or(|p| p == listen.port()) {
                return true;
            }
            if port.is_some_and(|p| self.server.is_stream_listener(ip, p, listen.ip())) {
                return true;
            }
            return self.server.domains.contains(&Domain::Ip(ip));
        }
        self.server
            .domains
            .iter()
            .any(|d| matches!(d, Domain::Name(name) if name.as_bytes().eq_ignore_ascii_case(host)))
    }

    /// Each section a reload may change, with a rendering that differs when the section does
    /// (for telling an operator what a reload changed). It holds secrets: never log it.
    pub fn reloadable_sections(&self) -> [(&'static str, String); 13] {
        let s = &self.server;
        [
            ("server.domain", format!("{:?}", s.domains)),
            ("server.admin_token", format!("{:?}", s.admin_token)),
            ("server.drain_seconds", format!("{:?}", s.drain)),
            (
                "server.max_public_calls",
                format!("{:?}", s.max_public_calls),
            ),
            ("registrar", format!("{:?}", self.registrar)),
            ("proxy", format!("{:?}", self.proxy)),
            ("policy", format!("{:?}", self.policy)),
            ("tenants", format!("{:?}", self.tenancy)),
            ("extensions", format!("{:?}", self.extensions)),
            (
                "trunks and dids",
                format!(
                    "{:?}{:?}{:?}",
                    self.trunks, self.dids, self.trunk_certificates
                ),
            ),
            ("followme", format!("{:?}", sorted_debug(&self.followme))),
            ("trusted", format!("{:?}", self.trusted)),
            ("routes", format!("{:?}", self.routes)),
        ]
    }

    /// Whether `other` numbers its call counters (tenancy levels, per-number lines) as this one
    /// does, so the running counters stay valid across a reload.
    pub fn same_counter_layout(&self, other: &Config) -> bool {
        self.server.max_public_calls == other.server.max_public_calls
            && format!("{:?}", self.tenancy) == format!("{:?}", other.tenancy)
            && format!("{:?}", self.extensions) == format!("{:?}", other.extensions)
    }

    /// Things that run but that an operator should know (no persistence, no authentication…).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// A map's entries in key order (a HashMap's Debug order differs between two equal maps).
fn sorted_debug<K: Ord + fmt::Debug, V: fmt::Debug>(
    map: &std::collections::HashMap<K, V>,
) -> Vec<String> {
    let mut entries: Vec<(&K, &V)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries.iter().map(|e| format!("{e:?}")).collect()
}

#[cfg(test)]
mod tests;
