//! `[websocket]`: what a `ws:` or `wss:` listener accepts (RFC 6455 / RFC 7118): the Origins a
//! browser's upgrade may come from, and the largest WebSocket message (one SIP message).

use serde::Deserialize;

use super::listen::TcpConfig;
#[cfg(test)]
use crate::core::transport::Transport;

/// `[websocket]` as written.
#[derive(Deserialize, Default, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebsocket {
    pub allowed_origins: Option<Vec<String>>,
    pub max_message_bytes: Option<u32>,
}

/// `[websocket]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsConfig {
    /// `None`: any Origin (or none) is accepted; `Some`: an upgrade whose `Origin` is not one of
    /// these (compared without regard to ASCII case) gets 403.
    pub allowed_origins: Option<Vec<String>>,
    /// The largest WebSocket message (after reassembly of its fragments), bytes; a bigger one
    /// closes the connection (1009). Default: `[tcp]`'s header block plus body limits.
    pub max_message_bytes: u32,
}

impl WsConfig {
    /// The defaults for these `[tcp]` limits.
    pub fn defaults(tcp: &TcpConfig) -> WsConfig {
        WsConfig {
            allowed_origins: None,
            max_message_bytes: tcp.max_header_bytes.saturating_add(tcp.max_body_bytes),
        }
    }
}

/// `[websocket]` with its defaults; an error names the key.
pub(super) fn build(
    raw: Option<RawWebsocket>,
    tcp: &TcpConfig,
) -> Result<WsConfig, (&'static str, String)> {
    let mut c = WsConfig::defaults(tcp);
    let Some(raw) = raw else {
        return Ok(c);
    };
    if let Some(n) = raw.max_message_bytes {
        if !(1024..=16 << 20).contains(&n) {
            return Err((
                "websocket.max_message_bytes",
                format!("{n} is out of range: expected 1024 to {}", 16 << 20),
            ));
        }
        c.max_message_bytes = n;
    }
    if let Some(origins) = raw.allowed_origins {
        for o in &origins {
            let ok = (o.starts_with("https://") || o.starts_with("http://"))
                && !o
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
            if !ok {
                return Err((
                    "websocket.allowed_origins",
                    format!("{o:?} is not an origin: write it as a browser sends it, e.g. \"https://phone.example.com\""),
                ));
            }
        }
        c.allowed_origins = Some(origins);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};

    fn key_of(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn websocket_listeners_and_class_transports_in_a_whole_config() {
        let base = "[server]\nlisten = [\"udp:127.0.0.1:5060\", \"ws:127.0.0.1:8080\"]\n\
                    domain = \"example.com\"\n[auth]\nmode = \"none\"\n\
                    [[extensions]]\nnumbers = \"1000-1099\"\n";
        let web = "[[device_classes]]\nname = \"web\"\ntransport = \"WS\"\n";
        let c = Config::from_toml(&format!("{base}{web}")).unwrap();
        assert_eq!(c.device_classes.find("web"), Some(1));
        assert_eq!(
            c.device_classes
                .classify_over(Transport::Ws, b"", |_| false),
            1
        );
        assert_eq!(c.websocket, WsConfig::defaults(&c.tcp));
        let bad = "[[device_classes]]\nname = \"web\"\ntransport = [\"ws\", \"sctp\"]\n";
        let e = Config::from_toml(&format!("{base}{bad}")).unwrap_err();
        assert_eq!(key_of(e), "device_classes[0].transport");
        // wss: needs [tls].
        let e = Config::from_toml(&base.replace("ws:127", "wss:127")).unwrap_err();
        assert_eq!(key_of(e), "server.listen");
        let e =
            Config::from_toml(&format!("{base}[websocket]\nmax_message_bytes = 5\n")).unwrap_err();
        assert_eq!(key_of(e), "websocket.max_message_bytes");
        let c = Config::from_toml(&format!(
            "{base}[websocket]\nallowed_origins = [\"https://phone.example.com\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.websocket.allowed_origins,
            Some(vec!["https://phone.example.com".to_string()])
        );
    }

    #[test]
    fn defaults_follow_tcp_and_keys_are_checked() {
        let tcp = TcpConfig::default();
        let d = build(None, &tcp).unwrap();
        assert_eq!(d.allowed_origins, None);
        assert_eq!(
            d.max_message_bytes,
            tcp.max_header_bytes + tcp.max_body_bytes
        );
        let raw = RawWebsocket {
            allowed_origins: Some(vec!["https://phone.example.com".into()]),
            max_message_bytes: Some(4096),
        };
        let c = build(Some(raw), &tcp).unwrap();
        assert_eq!(c.max_message_bytes, 4096);
        assert_eq!(
            c.allowed_origins.as_deref(),
            Some(&["https://phone.example.com".to_string()][..])
        );
        let raw = RawWebsocket {
            allowed_origins: Some(vec!["phone.example.com".into()]),
            max_message_bytes: None,
        };
        assert_eq!(
            build(Some(raw), &tcp).unwrap_err().0,
            "websocket.allowed_origins"
        );
        let raw = RawWebsocket {
            allowed_origins: None,
            max_message_bytes: Some(10),
        };
        assert_eq!(
            build(Some(raw), &tcp).unwrap_err().0,
            "websocket.max_message_bytes"
        );
    }
}
