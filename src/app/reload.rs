//! Configuration reload (SIGHUP, or `POST /reload` on the admin listener with the bearer token).
//!
//! The file is read and validated again; a configuration that does not validate is refused with
//! its error and the running one stays. What the shards can take between two datagrams
//! (extensions, passwords, limits, routes, trusted peers, domains, the proxy's and registrar's
//! settings) goes to every shard through the control path, where each core swaps its
//! `Arc<Config>`: bindings, transactions and dialogs stay, new requests see the new settings.
//! A renewed `[tls]` certificate (files re-read and checked) goes the same way: each shard's TLS
//! listeners give the new rustls configuration to the connections they accept from then on,
//! while open connections keep their session.
//! What needs a restart (the sockets, the shard count, the backend, the journal directory, the
//! admin listener, `[auth]`, which each shard builds its nonce authority from) is named in the
//! answer and the log, and keeps its running value.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::app::metrics::{Exposition, Value};
use crate::app::shard::Shard;
use crate::config::{Config, ConfigError};
use crate::core::shard::ShardId;
use crate::engine::control::{ControlError, Controller};

/// How long a reload waits for every shard to confirm the swap.
const SHARD_CONFIRM: Duration = Duration::from_secs(2);

/// What a reload would change, section by section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Sections that changed and apply now.
    pub applied: Vec<&'static str>,
    /// The call counters restart with the new configuration (tenants or extensions changed):
    /// calls in progress keep their counts in the old ones and are not counted against the new
    /// limits.
    pub counters_restart: bool,
    /// Keys that changed but need a restart (not applied).
    pub need_restart: Vec<&'static str>,
}

/// Compares the running configuration with a freshly loaded one.
pub fn diff(old: &Config, new: &Config) -> Diff {
    let (o, n) = (&old.server, &new.server);
    let restart = [
        (
            "server.listen",
            o.listen != n.listen || o.listeners != n.listeners,
        ),
        ("server.shards", o.shards != n.shards),
        ("server.io", o.io != n.io),
        ("server.steering", o.steering != n.steering),
        ("server.data_dir", o.data_dir != n.data_dir),
        ("server.admin", o.admin != n.admin),
        ("server.pin_cores", o.pin_cores != n.pin_cores),
        ("server.socket_buffer", o.socket_buffer != n.socket_buffer),
        ("server.coalesce_us", o.coalesce != n.coalesce),
        (
            "auth",
            format!("{:?}", old.auth) != format!("{:?}", new.auth),
        ),
        // Removing `[tls]` goes with removing the `tls:` listener (validation refuses one
        // without the other), which needs a restart; a changed `[tls]` applies now.
        ("tls", tls_changed(old, new) && new.tls.is_none()),
        ("tcp", old.tcp != new.tcp),
        ("websocket", old.websocket != new.websocket),
    ];
    let mut applied: Vec<_> = old
        .reloadable_sections()
        .into_iter()
        .zip(new.reloadable_sections())
        .filter(|((_, a), (_, b))| a != b)
        .map(|((name, _), _)| name)
        .collect();
    if tls_changed(old, new) && new.tls.is_some() {
        applied.push("tls");
    }
    Diff {
        applied,
        counters_restart: !old.same_counter_layout(new),
        need_restart: restart
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(k, _)| k)
            .collect(),
    }
}

/// Whether `[tls]` changed: other paths, or other contents of the files (a renewal).
fn tls_changed(old: &Config, new: &Config) -> bool {
    format!("{:?}", old.tls) != format!("{:?}", new.tls)
}

/// `new` with every setting that needs a restart put back to its running value in `old`.
pub fn applicable(old: &Config, mut new: Config) -> Config {
    let (o, n) = (&old.server, &mut new.server);
    n.listen = o.listen;
    n.shards = o.shards;
    n.io = o.io;
    n.steering = o.steering;
    n.data_dir.clone_from(&o.data_dir);
    n.admin = o.admin;
    n.pin_cores.clone_from(&o.pin_cores);
    n.socket_buffer = o.socket_buffer;
    n.coalesce = o.coalesce;
    n.listeners.clone_from(&o.listeners);
    if new.tls.is_none() {
        new.tls.clone_from(&old.tls);
    }
    new.tcp = old.tcp;
    new.websocket.clone_from(&old.websocket);
    new.auth.clone_from(&old.auth);
    new.security.clone_from(&old.security);
    if old.same_counter_layout(&new) {
        // Calls in progress stay counted against the limits.
        new.ledger = std::sync::Arc::clone(&old.ledger);
    }
    new
}

/// The outcome of a reload that validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// What changed and applies now, and what needs a restart.
    pub diff: Diff,
    /// Shards that did not confirm the swap in time (their job is queued and still runs).
    pub unconfirmed: Vec<u16>,
}

impl Report {
    /// A one-paragraph answer for the operator.
    pub fn text(&self) -> String {
        let mut out = if self.diff.applied.is_empty() {
            "reloaded: nothing that applies without a restart changed".to_owned()
        } else {
            format!("reloaded: applied {}", self.diff.applied.join(", "))
        };
        if self.diff.counters_restart {
            out += " (call limits count the calls placed from now on)";
        }
        if !self.diff.need_restart.is_empty() {
            out += &format!(
                "; not applied, needs a restart: {}",
                self.diff.need_restart.join(", ")
            );
        }
        if !self.unconfirmed.is_empty() {
            out += &format!(
                "; shards {:?} had not confirmed within {} s (the swap is queued there)",
                self.unconfirmed,
                SHARD_CONFIRM.as_secs()
            );
        }
        out
    }
}

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not validate; the running configuration stays.
    #[error("refused, the running configuration stays: {0}")]
    Invalid(#[from] ConfigError),
    /// A shard's control queue refused the swap (it is stuck or flooded); shards before it
    /// already run the new configuration.
    #[error("shard {0} could not take the new configuration: {1}")]
    Shard(u16, ControlError),
}

/// Re-reads the configuration file and hands it to the shards; shared by the signal loop and
/// the admin listener (one reload at a time).
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    current: Mutex<Arc<Config>>,
    control: Controller<Shard>,
    reloads: AtomicU64,
    refused: AtomicU64,
    cdr: Option<crate::app::cdr::CdrSink>,
}

impl Reloader {
    /// A reloader of `path`, whose running configuration is `current`.
    pub fn new(path: PathBuf, current: Arc<Config>, control: Controller<Shard>) -> Self {
        Self {
            path,
            current: Mutex::new(current),
            control,
            reloads: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            cdr: None,
        }
    }

    /// Reopens the CDR file (`app::cdr`) after every reload, applied or refused: logrotate's
    /// SIGHUP must reopen it even when the configuration file has a mistake.
    pub fn with_cdr(mut self, sink: crate::app::cdr::CdrSink) -> Self {
        self.cdr = Some(sink);
        self
    }

    /// The running configuration.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reloads; logs the outcome (who asked is `by`).
    pub fn reload(&self, by: &str) -> Result<Report, ReloadError> {
        let outcome = self.try_reload();
        if let Some(cdr) = &self.cdr {
            cdr.reopen(self.config().policy.cdr.clone());
        }
        match &outcome {
            Ok(report) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(by, "{}", report.text());
            }
            Err(e) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(by, "reload {e}");
            }
        }
        outcome
    }

    fn try_reload(&self) -> Result<Report, ReloadError> {
        // Read (and its host names resolved) before the lock: a slow resolver must not hold up
        // the admin API's readers of the running configuration.
        let loaded = Config::load(&self.path)?;
        for warning in loaded.warnings() {
            tracing::warn!("{warning}");
        }
        // Held from here on, so two reloads never interleave their swaps.
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let diff = diff(&current, &loaded);
        let next = Arc::new(applicable(&current, loaded));
        // A renewed certificate: the shards' TLS listeners take it with the configuration.
        // Another CA: the connections whose client certificate the old one vouched for close.
        let ca_changed = match (&current.tls, &next.tls) {
            (Some(old), Some(new)) => !old.same_ca(new),
            _ => false,
        };
        let tls = diff
            .applied
            .contains(&"tls")
            .then(|| {
                next.tls
                    .as_ref()
                    .map(|t| crate::engine::stream::TlsRenewal {
                        server: Arc::clone(&t.server),
                        client: t.client.clone(),
                        names: Arc::clone(&t.peer_names),
                        ca_changed,
                    })
            })
            .flatten();
        let mut replies = Vec::with_capacity(self.control.shards());
        for i in 0..self.control.shards() {
            let shard = ShardId(i as u16);
            let cfg = Arc::clone(&next);
            let tls = tls.clone();
            let reply = self
                .control
                .ask(shard, move |s: &mut Shard, _| {
                    s.core_mut().set_config(cfg);
                    if let Some(tls) = tls {
                        s.renew_tls(tls);
                    }
                })
                .map_err(|e| ReloadError::Shard(shard.0, e))?;
            replies.push((shard, reply));
        }
        *current = next;
        let deadline = std::time::Instant::now() + SHARD_CONFIRM;
        let unconfirmed = replies
            .into_iter()
            .filter_map(|(shard, reply)| {
                reply
                    .wait(deadline.saturating_duration_since(std::time::Instant::now()))
                    .is_err()
                    .then_some(shard.0)
            })
            .collect();
        Ok(Report { diff, unconfirmed })
    }

    /// `sipfork_config_reloads_total{result}` (and the CDR writer's counters).
    pub fn export(&self, out: &mut Exposition) {
        if let Some(cdr) = &self.cdr {
            cdr.export(out);
        }
        for (result, n) in [
            ("applied", self.reloads.load(Ordering::Relaxed)),
            ("refused", self.refused.load(Ordering::Relaxed)),
        ] {
            out.add(
                "sipfork_config_reloads_total",
                "Configuration reloads (SIGHUP or POST /reload), by result",
                &[("result", result)],
                Value::Counter(n),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:5060"
shards = 2
io = "mmsg"
admin = "127.0.0.1:8080"

[auth]
mode = "digest"
realm = "r"

[[extensions]]
numbers = "1000-1999"
password = "pw-{number}"
"#;

    fn cfg(text: &str) -> Config {
        Config::from_toml(text).unwrap()
    }

    #[test]
    fn nothing_changed_is_an_empty_diff() {
        assert_eq!(diff(&cfg(BASE), &cfg(BASE)), Diff::default());
    }

    #[test]
    fn passwords_ranges_limits_routes_and_peers_apply_now() {
        let new = BASE
            .replace("pw-{number}", "new-{number}")
            .replace("1000-1999", "1000-2999")
            + "\n[registrar]\nmax_contacts = 3\n\n[[trusted]]\ncidr = \"10.0.0.0/8\"\n\n[[routes]]\nprefix = \"00\"\nnext_hop = \"sip:127.0.0.1:5080\"\n";
        let d = diff(&cfg(BASE), &cfg(&new));
        assert_eq!(d.applied, ["registrar", "extensions", "trusted", "routes"]);
        assert!(d.counters_restart);
        assert!(d.need_restart.is_empty(), "{d:?}");
        // A password alone is a change of the extensions.
        let d = diff(&cfg(BASE), &cfg(&BASE.replace("pw-{number}", "x-{number}")));
        assert_eq!(d.applied, ["extensions"]);
    }

    #[test]
    fn sockets_shards_backend_journal_and_auth_need_a_restart_and_keep_their_value() {
        let new = BASE
            .replace("127.0.0.1:5060", "127.0.0.1:5070")
            .replace(
                "shards = 2",
                "shards = 4\ndata_dir = \"/tmp/x\"\ndrain_seconds = 5",
            )
            .replace("\"mmsg\"", "\"uring\"")
            .replace("realm = \"r\"", "realm = \"other\"");
        let (old, new) = (cfg(BASE), cfg(&new));
        let d = diff(&old, &new);
        assert_eq!(
            d.need_restart,
            [
                "server.listen",
                "server.shards",
                "server.io",
                "server.data_dir",
                "auth"
            ]
        );
        assert_eq!(d.applied, ["server.drain_seconds"]);
        assert!(!d.counters_restart);
        let merged = applicable(&old, new);
        assert_eq!(merged.server.listen, old.server.listen);
        assert_eq!(merged.server.shards, 2);
        assert_eq!(merged.server.data_dir, None);
        assert_eq!(merged.auth.realm, "r");
        assert_eq!(merged.server.drain, Duration::from_secs(5));
        let report = Report {
            diff: d,
            unconfirmed: vec![],
        };
        assert_eq!(
            report.text(),
            "reloaded: applied server.drain_seconds; not applied, needs a restart: \
             server.listen, server.shards, server.io, server.data_dir, auth"
        );
    }
}
