//! The file as serde sees it: every table denies unknown keys, and every value that has a
//! syntax of its own (addresses, number ranges, CIDRs, sizes, hex) is parsed while it is
//! deserialized, so its error carries the value's span and hence its line.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::listen::{parse_listener, Listener};
use super::net::{
    parse_cidr, parse_domain, parse_next_hop, parse_socket_addr, Cidr, Domain, NextHop,
};
use super::numbers::{parse_number_spec, parse_template, NumberRange, Template};
use super::{AuthMode, ForkMode, IoBackend, NatMode, OnLimit, Steering};
use crate::core::registrar::digest::Algorithm;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub server: RawServer,
    #[serde(default)]
    pub registrar: RawRegistrar,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub security: RawSecurity,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
    #[serde(default)]
    pub emergency: Vec<RawEmergency>,
    #[serde(default)]
    pub dids: Vec<RawDid>,
    #[serde(default)]
    pub followme: Vec<RawFollowMe>,
    #[serde(default)]
    pub device_classes: Vec<RawDeviceClass>,
    #[serde(default)]
    pub extensions: Vec<RawExtensions>,
    #[serde(default)]
    pub trusted: Vec<RawTrusted>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub cluster: Option<RawCluster>,
    #[serde(default)]
    pub features: RawFeatures,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub tcp: RawTcp,
    pub websocket: Option<super::websocket::RawWebsocket>,
    #[serde(default)]
    pub overload: super::overload::RawOverload,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTcp {
    pub idle_seconds: Option<u64>,
    pub max_connections_per_source: Option<u32>,
    pub max_header_bytes: Option<u32>,
    pub max_body_bytes: Option<u32>,
    pub max_messages_per_second: Option<u32>,
    pub max_outbound_connections: Option<u32>,
    pub connect_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    pub peer_ca: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: OneOrMany<Parsed<Listener>>,
    pub domain: Option<OneOrMany<Parsed<Domain>>>,
    pub shards: Option<u16>,
    pub io: Option<IoBackend>,
    pub steering: Option<Steering>,
    pub data_dir: Option<PathBuf>,
    pub admin: Option<Parsed<SocketAddr>>,
    pub pin_cores: Option<PinSetting>,
    pub socket_buffer: Option<ByteSize>,
    pub coalesce_us: Option<u32>,
    pub admin_token: Option<String>,
    pub drain_seconds: Option<u64>,
    pub max_public_calls: Option<u32>,
    pub interface: Option<String>,
    pub xdp_mode: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFeatures {
    #[serde(rename = "move")]
    pub move_code: Option<String>,
    pub join: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistrar {
    pub max_contacts: Option<u32>,
    pub on_limit: Option<OnLimit>,
    pub min_expires: Option<u64>,
    pub max_expires: Option<u64>,
    pub default_expires: Option<u64>,
    pub nat: Option<NatMode>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub mode: Option<AuthMode>,
    pub realm: Option<String>,
    pub algorithms: Option<Vec<Parsed<Algorithm>>>,
    pub nonce_ttl: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecurity {
    pub max_auth_failures: Option<u32>,
    pub auth_window: Option<u64>,
    pub block_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub node: String,
    pub advertise: Parsed<SocketAddr>,
    pub redis: Vec<String>,
    #[serde(default)]
    pub peers: Vec<Parsed<Cidr>>,
    pub secret: String,
    pub ttl: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub refuse_with: Option<u16>,
    pub max_call_seconds: Option<u64>,
    pub cdr: Option<std::path::PathBuf>,
    pub trunk_keepalive: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    pub name: String,
    #[serde(default)]
    pub parent: String,
    pub max_public_calls: Option<u32>,
    pub forward_external: Option<bool>,
    pub voicemail: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeviceClass {
    pub name: String,
    pub user_agent: Option<String>,
    pub contact_param: Option<String>,
    pub transport: Option<OneOrMany<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFollowMe {
    pub extension: String,
    pub voicemail: Option<String>,
    pub stages: Vec<RawStage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStage {
    pub targets: Vec<String>,
    pub ring: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDid {
    pub numbers: String,
    pub extension: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmergency {
    pub numbers: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    pub fork: Option<ForkMode>,
    pub group_timeout: Option<u64>,
    pub max_branches: Option<u32>,
    pub single_answer: Option<bool>,
    pub timer_c: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExtensions {
    pub numbers: NumberSpec,
    pub password: Option<Parsed<Template>>,
    pub ha1_md5: Option<Hex<16>>,
    pub ha1_sha256: Option<Hex<32>>,
    pub max_contacts: Option<u32>,
    pub fork: Option<ForkMode>,
    pub group_timeout: Option<u64>,
    pub single_answer: Option<bool>,
    pub tenant: Option<String>,
    pub trunk: Option<OneOrMany<Parsed<TrunkAddr>>>,
    pub trunk_certificate: Option<OneOrMany<String>>,
    pub max_outgoing_calls: Option<u32>,
    pub all_busy: Option<bool>,
    pub classes: Option<std::collections::BTreeMap<String, u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrusted {
    pub cidr: Parsed<Cidr>,
    pub name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub prefix: Parsed<Prefix>,
    pub next_hop: Parsed<NextHop>,
}

/// A value written as a string and parsed by `FromConfigStr`.
pub(super) struct Parsed<T>(pub T);

/// Types a configuration string parses into; the error is the "why" shown to the operator.
pub(super) trait FromConfigStr: Sized {
    /// What the value should look like, for type errors.
    const EXPECTED: &'static str;
    fn from_config_str(text: &str) -> Result<Self, String>;
}

impl<'de, T: FromConfigStr> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<T: FromConfigStr> Visitor<'_> for V<T> {
            type Value = Parsed<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTED)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Parsed<T>, E> {
                T::from_config_str(text).map(Parsed).map_err(E::custom)
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl FromConfigStr for SocketAddr {
    const EXPECTED: &'static str = "an address such as \"127.0.0.1:5060\" or \"[::1]:5060\"";
    fn from_config_str(text: &str) -> Result<Self, String> {
        parse_socket_addr(text)
    }
}

impl FromConfigStr for Listener {
    const EXPECTED: &'static str =
        "a listen address such as \"127.0.0.1:5060\" or \"tcp:127.0.0.1:5060\"";
    fn from_config_str(text: &str) -> Result<Self, String> {
        parse_listener(text)
    }
}

impl FromConfigStr for Domain {
    const EXPECTED: &'static str = "a host name or IP address";
    fn from_config_str(text: &str) -> Result<Self, String> {
        parse_domain(text)
    }
}

impl FromConfigStr for Algorithm {
    const EXPECTED: &'static str = "one of \"SHA-256\", \"SHA-256-sess\", \"MD5\", \"MD5-sess\"";
    fn from_config_str(text: &str) -> Result<Self, String> {
        Algorithm::from_name(text.as_bytes()).ok_or_else(|| {
            format!(
                "unknown digest algorithm {text:?}, expected {}",
                Self::EXPECTED
            )
        })
    }
}

impl FromConfigStr for Template {
    const EXPECTED: &'static str = "a password, optionally with {number}";
    fn from_config_str(text: &str) -> Result<Self, String> {
        parse_template(text)
    }
}

impl FromConfigStr for Cidr {
    const EXPECTED: &'static str = "a network such as \"10.0.0.0/8\" or an IP address";
    fn from_config_str(text: &str) -> Result<Self, String> {
        parse_cidr(text)
    }
}

/// A trunk address: `"IP:port"` (UDP) or a next-hop URI such as
/// `"sip:IP:port;transport=tls"` (`parse_next_hop`).
pub(super) struct TrunkAddr(pub NextHop);

impl FromConfigStr for TrunkAddr {
    const EXPECTED: &'static str =
        "an address such as \"127.0.0.1:5090\" or a URI such as \"sip:127.0.0.1:5091;transport=tls\"";
    fn from_config_str(text: &str) -> Result<Self, String> {
        if text.get(..3).is_some_and(|s| s.eq_ignore_ascii_case("sip")) {
            return parse_next_hop(text).map(TrunkAddr);
        }
        let addr = parse_socket_addr(text)?;
        Ok(TrunkAddr(NextHop {
            uri: format!("sip:{addr}"),
            addr,
            transport: crate::core::transport::Transport::Udp,
            name: None,
        }))
    }
}

impl FromConfigStr for NextHop {
    const EXPECTED: &'static str = "a SIP URI such as \"sip:127.0.0.1:5080\"";
    fn from_config_str(text: &str) -> Result<Self, String> {
        parse_next_hop(text)
    }
}

/// A route prefix: digits, possibly none (the default route).
pub(super) struct Prefix(pub String);

impl FromConfigStr for Prefix {
    const EXPECTED: &'static str = "a string of digits such as \"00\"";
    fn from_config_str(text: &str) -> Result<Self, String> {
        if text.len() > 32 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{text:?}: a route prefix is up to 32 digits (\"\" is the default route)"
            ));
        }
        Ok(Prefix(text.to_owned()))
    }
}

/// `key = "x"` or `key = ["x", "y"]`.
pub(super) struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                T::deserialize(de::value::StrDeserializer::<E>::new(text))
                    .map(|v| OneOrMany(vec![v]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `numbers = "1000-1999"`, `"1000"`, or a list of these. Integers are refused: TOML integers
/// drop leading zeros, and the width of a number is part of its identity here.
pub(super) struct NumberSpec(pub Vec<NumberRange>);

impl<'de> Deserialize<'de> for NumberSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const HINT: &str = "write numbers as a string, e.g. numbers = \"1000-1999\" or [\"0100\", \"2000-2099\"], so leading zeros are kept";
        impl<'de> Visitor<'de> for V {
            type Value = NumberSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number range such as \"1000-1999\", a number, or a list of these")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<NumberSpec, E> {
                parse_number_spec(text)
                    .map(|r| NumberSpec(vec![r]))
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<NumberSpec, E> {
                Err(E::custom(HINT))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NumberSpec, A::Error> {
                let mut ranges = Vec::new();
                while let Some(item) = seq.next_element::<toml::Value>()? {
                    let text = item.as_str().ok_or_else(|| de::Error::custom(HINT))?;
                    ranges.push(parse_number_spec(text).map_err(de::Error::custom)?);
                }
                if ranges.is_empty() {
                    return Err(de::Error::custom("the list of numbers is empty"));
                }
                Ok(NumberSpec(ranges))
            }
        }
        d.deserialize_any(V)
    }
}

/// `pin_cores = true | false | [0, 2, 4]`.
pub(super) enum PinSetting {
    Enabled(bool),
    Cpus(Vec<usize>),
}

impl<'de> Deserialize<'de> for PinSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PinSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, or a list of CPU ids such as [0, 1]")
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<PinSetting, E> {
                Ok(PinSetting::Enabled(on))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PinSetting, A::Error> {
                let mut cpus: Vec<usize> = Vec::new();
                while let Some(cpu) = seq.next_element::<u16>()? {
                    let cpu = usize::from(cpu);
                    if cpus.contains(&cpu) {
                        return Err(de::Error::custom(format!("CPU {cpu} is listed twice")));
                    }
                    cpus.push(cpu);
                }
                if cpus.is_empty() {
                    return Err(de::Error::custom(
                        "the list of CPUs is empty (use false to not pin)",
                    ));
                }
                Ok(PinSetting::Cpus(cpus))
            }
        }
        d.deserialize_any(V)
    }
}

/// `socket_buffer = 8388608` or `"8MiB"` (also KiB, GiB; K/M/G mean the same binary units;
/// KB/MB/GB are decimal).
pub(super) struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes or a string such as \"8MiB\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
                parse_byte_size(text).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

fn parse_byte_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "{text:?}: unknown size unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{text:?} is not a size such as \"8MiB\""))
}

/// A hex string of exactly `N` bytes (an HA1).
pub(super) struct Hex<const N: usize>(pub [u8; N]);

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = text.as_bytes();
        let mut out = [0u8; N];
        let valid = bytes.len() == 2 * N
            && bytes.chunks_exact(2).zip(out.iter_mut()).all(|(pair, o)| {
                match (hex_digit(pair[0]), hex_digit(pair[1])) {
                    (Some(hi), Some(lo)) => {
                        *o = hi << 4 | lo;
                        true
                    }
                    _ => false,
                }
            });
        if valid {
            Ok(Hex(out))
        } else {
            Err(de::Error::custom(format!(
                "expected {} hex digits (the HA1, H(number:realm:password))",
                2 * N
            )))
        }
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::parse_byte_size;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_byte_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_byte_size("2M"), Ok(2 << 20));
        assert_eq!(parse_byte_size("3MB"), Ok(3_000_000));
        assert_eq!(parse_byte_size("4096"), Ok(4096));
        assert!(parse_byte_size("8 parsecs").is_err());
        assert!(parse_byte_size("MiB").is_err());
        assert!(parse_byte_size("99999999999999GiB").is_err());
    }
}
