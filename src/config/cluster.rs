//! `[cluster]`: several sipfork nodes share one directory on Redis Cluster and fork calls across
//! nodes (issue 18, `docs/cluster.md`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::raw::RawCluster;
use super::{Cidr, ConfigError};

/// A validated `[cluster]` section.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This node's unique, stable name.
    pub node: String,
    /// Where the other nodes send this node's cluster branches.
    pub advertise: SocketAddr,
    /// Seed URLs of the Redis Cluster (`redis://host:port`).
    pub redis: Vec<String>,
    /// The other nodes' addresses: a cluster branch goes only to an `advertise` inside one of
    /// them, and a marked request is accepted only from inside one of them.
    pub peers: Vec<Cidr>,
    /// Shared by the nodes: keys the marks of cluster branches and cross-node admin calls.
    pub secret: Vec<u8>,
    /// How long a node's directory records live unless refreshed.
    pub ttl: Duration,
}

impl ClusterConfig {
    /// Is `ip` inside `peers`?
    pub fn is_peer(&self, ip: IpAddr) -> bool {
        self.peers.iter().any(|c| c.contains(ip))
    }
}

/// Shortest secret accepted (bytes).
const MIN_SECRET: usize = 16;

pub(super) fn build(
    c: RawCluster,
    at: impl Fn(&str, String) -> ConfigError,
) -> Result<ClusterConfig, ConfigError> {
    let node_ok = !c.node.is_empty()
        && c.node.len() <= 64
        && c.node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !node_ok {
        return Err(at(
            "cluster.node",
            "a node name is 1 to 64 letters, digits, '-', '_' or '.'".into(),
        ));
    }
    if c.redis.is_empty() {
        return Err(at(
            "cluster.redis",
            "name at least one Redis Cluster node (\"redis://host:port\")".into(),
        ));
    }
    for url in &c.redis {
        let ok = url
            .strip_prefix("redis://")
            .is_some_and(|rest| !rest.is_empty() && rest.contains(':'));
        if !ok {
            return Err(at(
                "cluster.redis",
                format!("{url:?} is not a redis://host:port URL"),
            ));
        }
    }
    if c.secret.len() < MIN_SECRET {
        return Err(at(
            "cluster.secret",
            format!("the shared secret must be at least {MIN_SECRET} characters"),
        ));
    }
    let ttl = c.ttl.unwrap_or(60);
    if !(3..=3600).contains(&ttl) {
        return Err(at("cluster.ttl", format!("{ttl} s is outside 3..=3600 s")));
    }
    let advertise = c.advertise.0;
    if advertise.ip().is_unspecified() || advertise.port() == 0 {
        return Err(at(
            "cluster.advertise",
            "other nodes must be able to reach this address: no 0.0.0.0 / :: and no port 0".into(),
        ));
    }
    Ok(ClusterConfig {
        node: c.node,
        advertise,
        redis: c.redis,
        peers: c.peers.into_iter().map(|p| p.0).collect(),
        secret: c.secret.into_bytes(),
        ttl: Duration::from_secs(ttl),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    const BASE: &str = "[server]\nlisten = \"127.0.0.1:5060\"\n[auth]\nmode = \"none\"\n";

    fn cluster(body: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{BASE}[cluster]\n{body}"))
    }

    const GOOD: &str = "node = \"n1\"\nadvertise = \"127.0.0.1:5060\"\n\
        redis = [\"redis://127.0.0.1:7000\"]\npeers = [\"127.0.0.2/32\"]\n\
        secret = \"0123456789abcdef\"\n";

    #[test]
    fn the_contract_parses_with_a_default_ttl() {
        let c = cluster(GOOD).unwrap().cluster.expect("[cluster]");
        assert_eq!(c.node, "n1");
        assert_eq!(c.ttl.as_secs(), 60);
        assert!(c.is_peer("127.0.0.2".parse().unwrap()));
        assert!(!c.is_peer("127.0.0.3".parse().unwrap()));
        assert!(Config::from_toml(BASE).unwrap().cluster.is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (GOOD.replace("\"n1\"", "\"n 1\""), "cluster.node"),
            (
                GOOD.replace("redis://127.0.0.1:7000", "127.0.0.1:7000"),
                "cluster.redis",
            ),
            (GOOD.replace("0123456789abcdef", "short"), "cluster.secret"),
            (
                GOOD.replace("127.0.0.1:5060", "0.0.0.0:5060"),
                "cluster.advertise",
            ),
            (format!("{GOOD}ttl = 1\n"), "cluster.ttl"),
            (format!("{GOOD}unknown = 1\n"), "cluster"),
        ];
        for (body, key) in cases {
            match cluster(&body) {
                Err(ConfigError::Invalid { key: k, .. }) => {
                    assert!(k.starts_with(key), "{k} for {body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
