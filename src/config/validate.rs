//! From the deserialized file to a [`Config`]: ranges, defaults and checks across keys. Every
//! error names the key the operator wrote and its line.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::classes::{DeviceClass, DeviceClasses};
use super::followme;
use super::locate::Locator;
use super::net::{NextHop, Route, RouteTable, TrustedPeer};
use super::numbers::{DidRange, ExtensionIndex, ExtensionTable, NumberRange, Secret, MAX_LINES};
use super::raw::{self, PinSetting, RawConfig};
use super::tenancy::{Tenancy, TenantSpec, TreeError, MAX_TENANT_DEPTH};
use super::{
    AuthConfig, AuthMode, Config, ConfigError, Domain, ForkMode, IoBackend, NatMode, OnLimit,
    PinCores, PolicyConfig, ProxyConfig, RegistrarConfig, SecurityConfig, ServerConfig,
    MAX_BRANCHES, MAX_COALESCE_US, MAX_CONTACTS, MAX_DRAIN_SECS, MAX_EXPIRES_SECS, MAX_SHARDS,
    MIN_ADMIN_TOKEN,
};
use crate::core::registrar::digest::Algorithm;
use crate::core::transport::Transport;
use rustls::pki_types::ServerName;

/// Builds [`ConfigError::Invalid`] for a key path, finding its line.
struct Errors<'a> {
    locator: &'a Locator<'a>,
    file: Option<&'a Path>,
}

impl Errors<'_> {
    /// `at` as a closure, for builders in their own files.
    fn at_fn(&self) -> impl Fn(&str, String) -> ConfigError + '_ {
        move |key, why| self.at(key, why)
    }

    fn at(&self, key: &str, why: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.map(Path::to_owned),
            key: key.to_owned(),
            line: self.locator.line_of_key(key),
            why: why.into(),
        }
    }

    fn syntax(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        // An empty span is the whole document (e.g. a missing top-level table).
        let mut key = if span.is_empty() {
            String::new()
        } else {
            self.locator.key_at(span.start)
        };
        let why = e.message().trim().to_owned();
        if let Some(missing) = why
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(missing);
        }
        ConfigError::Invalid {
            file: self.file.map(Path::to_owned),
            key,
            line: self.locator.line_of(span.start),
            why,
        }
    }

    /// `value` when it lies in `range`, else an error naming the key.
    fn in_range<T: PartialOrd + fmt::Display + Copy>(
        &self,
        key: &str,
        value: T,
        range: std::ops::RangeInclusive<T>,
        unit: &str,
    ) -> Result<T, ConfigError> {
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(self.at(
                key,
                format!(
                    "{value}{unit} is out of range: expected {} to {}{unit}",
                    range.start(),
                    range.end()
                ),
            ))
        }
    }
}

pub(super) fn parse(text: &str, file: Option<&Path>) -> Result<Config, ConfigError> {
    let locator = Locator::new(text);
    let errors = Errors {
        locator: &locator,
        file,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| errors.syntax(&e))?;
    build(raw, &errors)
}

/// `[tls]` with relative paths taken from the configuration file's directory; a TLS listener
/// without `[tls]` is an error, `[tls]` without a TLS listener a warning.
fn build_tls(
    raw: Option<raw::RawTls>,
    server: &ServerConfig,
    e: &Errors<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<super::tls::TlsConfig>, ConfigError> {
    let has_listener = server.listeners.iter().any(|l| {
        matches!(
            l.transport,
            crate::core::transport::Transport::Tls | crate::core::transport::Transport::Wss
        )
    });
    let Some(raw) = raw else {
        return if has_listener {
            Err(e.at(
                "server.listen",
                "a tls: or wss: listener needs a [tls] section with cert and key (PEM files)",
            ))
        } else {
            Ok(None)
        };
    };
    if !has_listener {
        warnings.push("[tls] is set but server.listen has no tls: address; it is not used".into());
    }
    let base = e.file.and_then(Path::parent);
    let resolve = |p: std::path::PathBuf| match base {
        Some(base) if p.is_relative() => base.join(p),
        _ => p,
    };
    super::tls::load(
        resolve(raw.cert),
        resolve(raw.key),
        raw.ca.map(resolve),
        raw.peer_ca.map(resolve),
    )
    .map(Some)
    .map_err(|(key, why)| e.at(key, why))
}

/// A trunk or route next hop reached over TCP needs a `tcp:` listener (its in-dialog requests
/// come back to the Record-Route entry naming it); over TLS a `tls:` listener and
/// `[tls] peer_ca` (never an unverified connection). Else it would leave as cleartext UDP.
fn check_trunk_transport(
    server: &ServerConfig,
    tls: Option<&super::tls::TlsConfig>,
    t: crate::core::transport::Transport,
) -> Result<(), &'static str> {
    use crate::core::transport::Transport;
    let ok = crate::core::transport::outbound::can_connect(&server.listeners, tls, t);
    match t {
        Transport::Udp => Ok(()),
        Transport::Tcp | Transport::Tls if ok => Ok(()),
        Transport::Tcp => Err("transport=tcp needs a tcp: listen address"),
        Transport::Tls => Err("transport=tls needs a tls: listener and [tls] peer_ca (the CA certificates the peer's certificate must chain to)"),
        // The next-hop syntax takes udp, tcp or tls only; said here too, for the match's sake.
        Transport::Ws | Transport::Wss => Err("a trunk is never reached over WebSocket (sipfork opens none)"),
    }
}

fn build(raw: RawConfig, e: &Errors<'_>) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    let server = build_server(raw.server, e, &mut warnings)?;
    let mut tls = build_tls(raw.tls, &server, e, &mut warnings)?;
    // TLS peers written with a host name.
    let mut tls_names: Vec<TlsPeerName> = Vec::new();
    let tcp = super::listen::build_tcp(&raw.tcp).map_err(|(key, why)| e.at(key, why))?;
    let websocket =
        super::websocket::build(raw.websocket, &tcp).map_err(|(key, why)| e.at(key, why))?;
    let registrar = build_registrar(raw.registrar, e)?;
    let auth = build_auth(raw.auth, &server, e)?;
    let proxy = build_proxy(raw.proxy, e)?;
    let security = build_security(raw.security, e)?;
    let cluster = raw
        .cluster
        .map(|c| super::cluster::build(c, e.at_fn()))
        .transpose()?;
    let features = super::features::build(raw.features.move_code, raw.features.join)
        .map_err(|(key, why)| e.at(key, why))?;
    let overload = super::overload::build(raw.overload).map_err(|(key, why)| e.at(&key, why))?;
    let policy = build_policy(raw.policy, raw.emergency, e)?;
    let tenancy = build_tenancy(server.max_public_calls, raw.tenants, e)?;
    let mut device_classes = DeviceClasses::default();
    for (i, c) in raw.device_classes.into_iter().enumerate() {
        let user_agent = c
            .user_agent
            .map(|r| {
                regex::bytes::Regex::new(&r).map_err(|why| {
                    e.at(
                        &format!("device_classes[{i}].user_agent"),
                        format!("not a regular expression: {why}"),
                    )
                })
            })
            .transpose()?;
        let transport = c
            .transport
            .map_or(Ok(Vec::new()), |t| {
                t.0.iter()
                    .map(|name| super::listen::transport_named(name))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|why| e.at(&format!("device_classes[{i}].transport"), why))?;
        device_classes
            .add(DeviceClass {
                name: c.name,
                user_agent,
                contact_param: c.contact_param,
                transport,
            })
            .map_err(|why| e.at(&format!("device_classes[{i}]"), why))?;
    }
    if auth.mode == AuthMode::None {
        warnings.push(
            "auth.mode = \"none\": anyone who reaches the listen address can register as and call any extension".into(),
        );
    }

    let mut tables = Vec::with_capacity(raw.extensions.len());
    let mut trunks: Vec<(SocketAddr, crate::core::transport::Transport, Vec<u8>, bool)> =
        Vec::new();
    let mut trunk_certificates = Vec::new();
    for (i, mut table) in raw.extensions.into_iter().enumerate() {
        let cert_names = table.trunk_certificate.take();
        let (table, ranges) = build_extension_table(
            i,
            table,
            (&auth, &tenancy, &device_classes),
            e,
            &mut warnings,
            &mut tls_names,
        )?;
        // The trunk's number, written once for its names and addresses.
        let number = ranges.first().map(|r| r.to_string().into_bytes());
        let by_certificate = cert_names.is_some();
        if let Some(names) = cert_names {
            super::trunk_cert::add(
                i,
                names.0,
                number.as_deref().filter(|_| !table.trunk.is_empty()),
                &server,
                tls.as_ref(),
                &mut trunk_certificates,
            )
            .map_err(|(key, why)| e.at(&key, why))?;
        }
        for (addr, transport) in table.trunk.iter().zip(&table.trunk_transports) {
            check_trunk_transport(&server, tls.as_ref(), *transport)
                .map_err(|why| e.at(&format!("extensions[{i}].trunk"), why))?;
            if trunks.iter().any(|(a, ..)| a == addr) {
                return Err(e.at(
                    &format!("extensions[{i}].trunk"),
                    format!("{addr} is already another trunk's address: a trunk is known by its address"),
                ));
            }
            if let Some(number) = &number {
                trunks.push((*addr, *transport, number.clone(), by_certificate));
            }
        }
        tables.push((table, ranges));
    }
    let extensions = ExtensionIndex::build(tables).map_err(|overlap| {
        let (second, range) = overlap.second;
        let (first, other) = overlap.first;
        let whose = if first == second {
            "earlier in this list".to_owned()
        } else {
            format!("in extensions[{first}]")
        };
        e.at(
            &format!("extensions[{second}].numbers"),
            format!("{range} overlaps {other} {whose}; every number may be provisioned once"),
        )
    })?;
    if extensions.lines_wanted() > MAX_LINES {
        return Err(e.at(
            "extensions",
            format!(
                "max_outgoing_calls / all_busy apply to {} numbers; at most {MAX_LINES} numbers can have them",
                extensions.lines_wanted()
            ),
        ));
    }
    if extensions.count() == 0 {
        warnings
            .push("no [[extensions]]: every REGISTER gets 404 and only [[routes]] apply".into());
    }

    let mut dids: Vec<DidRange> = Vec::with_capacity(raw.dids.len());
    for (i, d) in raw.dids.into_iter().enumerate() {
        let did = DidRange::parse(&d.numbers, &d.extension)
            .map_err(|why| e.at(&format!("dids[{i}].numbers"), why))?;
        if extensions.find(d.extension.as_bytes()).is_none() {
            return Err(e.at(
                &format!("dids[{i}].extension"),
                format!("{:?} is not a provisioned extension", d.extension),
            ));
        }
        if dids.iter().any(|o| {
            o.plus == did.plus
                && o.range.width == did.range.width
                && o.range.start <= did.range.end
                && did.range.start <= o.range.end
        }) {
            return Err(e.at(
                &format!("dids[{i}].numbers"),
                "overlaps an earlier [[dids]] entry",
            ));
        }
        dids.push(did);
    }

    let mut trusted = Vec::with_capacity(raw.trusted.len());
    for (i, t) in raw.trusted.into_iter().enumerate() {
        if t.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(e.at(
                &format!("trusted[{i}].name"),
                "the name is empty (leave it out instead)",
            ));
        }
        trusted.push(TrustedPeer {
            cidr: t.cidr.0,
            name: t.name,
        });
    }

    // A next hop over TLS needs a tls: listener (its Record-Route entry names it) and
    // [tls] peer_ca (TLS out is never unverified); over TCP a tcp: listener. As for trunks.
    for (i, r) in raw.routes.iter().enumerate() {
        let hop = &r.next_hop.0;
        check_trunk_transport(&server, tls.as_ref(), hop.transport)
            .map_err(|why| e.at(&format!("routes[{i}].next_hop"), why))?;
        if let (Some(name), Transport::Tls) = (&hop.name, hop.transport) {
            tls_names.push((format!("routes[{i}].next_hop"), hop.addr, name.clone()));
        }
    }
    if let Some(tls) = tls.as_mut() {
        tls.peer_names = tls_peer_names(tls_names, e)?;
    }
    let routes: Vec<Route> = raw
        .routes
        .into_iter()
        .map(|r| Route {
            prefix: r.prefix.0 .0,
            next_hop: r.next_hop.0,
        })
        .collect();
    let routes = RouteTable::build(routes).map_err(|i| {
        e.at(
            &format!("routes[{i}].prefix"),
            "this prefix is already routed by an earlier [[routes]] entry",
        )
    })?;

    let mut followme = std::collections::HashMap::new();
    for (i, f) in raw.followme.into_iter().enumerate() {
        let key = |k: &str| format!("followme[{i}].{k}");
        match extensions.find(f.extension.as_bytes()) {
            Some((t, _, _)) if extensions.table(t).trunk.is_empty() => {}
            Some(_) => return Err(e.at(&key("extension"), "a trunk has no devices to follow")),
            None => {
                return Err(e.at(
                    &key("extension"),
                    format!("{:?} is not a provisioned extension", f.extension),
                ))
            }
        }
        if f.stages.is_empty() {
            return Err(e.at(&key("stages"), "give at least one stage"));
        }
        let mut stages = Vec::with_capacity(f.stages.len());
        for (j, st) in f.stages.into_iter().enumerate() {
            let ring = e.in_range(
                &format!("followme[{i}].stages[{j}].ring"),
                st.ring,
                1..=600,
                " s",
            )?;
            let mut targets = Vec::with_capacity(st.targets.len());
            for t in st.targets {
                let target = if t == "self" {
                    followme::Target::Own
                } else if extensions.find(t.as_bytes()).is_some() {
                    followme::Target::Extension(t.into_bytes())
                } else if let Some(route) = routes.lookup(t.as_bytes()) {
                    followme::Target::External {
                        next_hop: route.next_hop.addr,
                        transport: route.next_hop.transport,
                        number: t.into_bytes(),
                    }
                } else {
                    return Err(e.at(
                        &format!("followme[{i}].stages[{j}].targets"),
                        format!("{t:?} is neither \"self\", an extension, nor a number a [[routes]] entry reaches"),
                    ));
                };
                targets.push(target);
            }
            stages.push(followme::Stage {
                targets,
                ring: Duration::from_secs(ring),
            });
        }
        let voicemail = f
            .voicemail
            .map(|v| followme::parse_voicemail(&v).map_err(|why| e.at(&key("voicemail"), why)))
            .transpose()?;
        if followme
            .insert(
                f.extension.into_bytes(),
                followme::FollowMe { stages, voicemail },
            )
            .is_some()
        {
            return Err(e.at(
                &key("extension"),
                "this extension has an earlier [[followme]]",
            ));
        }
    }

    Ok(Config {
        server,
        registrar,
        auth,
        proxy,
        security,
        cluster,
        policy,
        overload,
        ledger: std::sync::Arc::new(crate::core::policy::ledger::Ledger::new(
            &tenancy,
            extensions.lines(),
        )),
        tenancy,
        trunks,
        trunk_certificates,
        dids,
        followme,
        device_classes,
        features,
        extensions,
        trusted,
        routes,
        warnings,
        tls,
        tcp,
        websocket,
    })
}

fn build_server(
    s: raw::RawServer,
    e: &Errors<'_>,
    warnings: &mut Vec<String>,
) -> Result<ServerConfig, ConfigError> {
    let listeners: Vec<super::Listener> = s.listen.0.into_iter().map(|l| l.0).collect();
    super::listen::check_listeners(&listeners).map_err(|why| e.at("server.listen", why))?;
    let listen = listeners
        .iter()
        .find(|l| l.transport == crate::core::transport::Transport::Udp)
        .map(|l| l.addr)
        .expect("check_listeners requires one UDP address");
    let cpus = match &s.pin_cores {
        Some(PinSetting::Cpus(cpus)) => Some(cpus.clone()),
        _ => None,
    };
    let shards = match (s.shards, &cpus) {
        (Some(n), _) => e.in_range("server.shards", n, 1..=MAX_SHARDS, "")?,
        (None, Some(cpus)) => e.in_range(
            "server.pin_cores",
            cpus.len(),
            1..=usize::from(MAX_SHARDS),
            " CPUs",
        )? as u16,
        (None, None) => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, usize::from(MAX_SHARDS)) as u16,
    };
    if let Some(cpus) = &cpus {
        if cpus.len() != usize::from(shards) {
            return Err(e.at(
                "server.pin_cores",
                format!(
                    "lists {} CPUs for {shards} shards; list one CPU per shard",
                    cpus.len()
                ),
            ));
        }
    }
    let pin_cores = match s.pin_cores {
        None | Some(PinSetting::Enabled(false)) => PinCores::Off,
        Some(PinSetting::Enabled(true)) => PinCores::PerShard,
        Some(PinSetting::Cpus(cpus)) => PinCores::Cpus(cpus),
    };
    let socket_buffer = match s.socket_buffer {
        Some(size) => e.in_range("server.socket_buffer", size.0, 64 << 10..=1 << 30, " bytes")?,
        None => 8 << 20,
    };
    let coalesce_us = e.in_range(
        "server.coalesce_us",
        s.coalesce_us.unwrap_or(0),
        0..=MAX_COALESCE_US,
        " µs",
    )?;
    let drain_seconds = e.in_range(
        "server.drain_seconds",
        s.drain_seconds.unwrap_or(0),
        0..=MAX_DRAIN_SECS,
        " s",
    )?;
    if let Some(token) = &s.admin_token {
        if token.len() < MIN_ADMIN_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(e.at(
                "server.admin_token",
                format!(
                    "expected at least {MIN_ADMIN_TOKEN} printable ASCII characters without spaces \
                     (e.g. the output of `openssl rand -hex 24`)"
                ),
            ));
        }
        if s.admin.is_none() {
            warnings.push(
                "server.admin_token is set but server.admin is not: there is no listener to reload through"
                    .into(),
            );
        }
    }
    if s.data_dir
        .as_ref()
        .is_some_and(|d| d.as_os_str().is_empty())
    {
        return Err(e.at(
            "server.data_dir",
            "the path is empty (leave the key out to keep no journal)",
        ));
    }
    if s.data_dir.is_none() {
        warnings.push(
            "server.data_dir is not set: registrations live in memory only and are lost on restart"
                .into(),
        );
    }
    if listen.ip().is_unspecified() {
        warnings.push(format!(
            "server.listen {listen} is an unspecified address: requests for the proxy's real addresses are \
             recognised only when those addresses are listed in server.domain"
        ));
    }
    let io = s.io.unwrap_or(IoBackend::Auto);
    let xdp_mode = match s.xdp_mode.as_deref() {
        None => crate::engine::io::xdp::XdpMode::Auto,
        Some(m) => crate::engine::io::xdp::XdpMode::parse(m).ok_or_else(|| {
            e.at(
                "server.xdp_mode",
                "expected \"auto\", \"native\" or \"generic\"",
            )
        })?,
    };
    if io == IoBackend::Xdp {
        if s.interface.as_deref().is_none_or(str::is_empty) {
            return Err(e.at(
                "server.io",
                "io = \"xdp\" needs server.interface (the NIC whose queues the shards bind)",
            ));
        }
        if listen.ip().is_unspecified() {
            return Err(e.at(
                "server.listen",
                "io = \"xdp\" needs a specific address on server.interface, not an unspecified one",
            ));
        }
    } else if s.interface.is_some() {
        warnings.push("server.interface is only used with io = \"xdp\"".into());
    }
    Ok(ServerConfig {
        listen,
        listeners,
        domains: s
            .domain
            .map(|d| d.0.into_iter().map(|p| p.0).collect())
            .unwrap_or_default(),
        shards,
        io,
        steering: s.steering.unwrap_or_default(),
        data_dir: s.data_dir,
        admin: s.admin.map(|a| a.0),
        pin_cores,
        socket_buffer,
        coalesce: Duration::from_micros(u64::from(coalesce_us)),
        admin_token: s.admin_token,
        drain: Duration::from_secs(drain_seconds),
        max_public_calls: s.max_public_calls,
        interface: s.interface,
        xdp_mode,
    })
}

fn build_registrar(r: raw::RawRegistrar, e: &Errors<'_>) -> Result<RegistrarConfig, ConfigError> {
    let max_contacts = e.in_range(
        "registrar.max_contacts",
        r.max_contacts.unwrap_or(10),
        1..=MAX_CONTACTS,
        "",
    )?;
    let secs = |key: &str, value: Option<u64>, default: u64| {
        e.in_range(key, value.unwrap_or(default), 1..=MAX_EXPIRES_SECS, " s")
    };
    let min = secs("registrar.min_expires", r.min_expires, 60)?;
    let max = secs("registrar.max_expires", r.max_expires, 7200)?;
    let default = secs("registrar.default_expires", r.default_expires, 3600)?;
    // Blame a key the operator wrote, preferring default_expires (it sits between the others).
    fn blame(candidates: [(&'static str, bool); 2]) -> &'static str {
        candidates
            .into_iter()
            .find(|c| c.1)
            .map_or(candidates[0].0, |c| c.0)
    }
    if min > max {
        let key = blame([
            ("registrar.max_expires", r.max_expires.is_some()),
            ("registrar.min_expires", true),
        ]);
        return Err(e.at(
            key,
            format!("min_expires ({min} s) is above max_expires ({max} s)"),
        ));
    }
    if default < min || default > max {
        let key = blame([
            ("registrar.default_expires", r.default_expires.is_some()),
            (
                if default < min {
                    "registrar.min_expires"
                } else {
                    "registrar.max_expires"
                },
                true,
            ),
        ]);
        return Err(e.at(
            key,
            format!("default_expires ({default} s) must lie between min_expires ({min} s) and max_expires ({max} s)"),
        ));
    }
    Ok(RegistrarConfig {
        max_contacts,
        on_limit: r.on_limit.unwrap_or(OnLimit::Reject),
        min_expires: Duration::from_secs(min),
        max_expires: Duration::from_secs(max),
        default_expires: Duration::from_secs(default),
        nat: r.nat.unwrap_or(NatMode::Auto),
    })
}

fn build_policy(
    p: raw::RawPolicy,
    emergency: Vec<raw::RawEmergency>,
    e: &Errors<'_>,
) -> Result<PolicyConfig, ConfigError> {
    let refuse_with = p.refuse_with.unwrap_or(503);
    if ![503, 486].contains(&refuse_with) {
        return Err(e.at(
            "policy.refuse_with",
            "calls refused by a limit get 503 (Service Unavailable) or 486 (Busy Here)",
        ));
    }
    let max_call = e.in_range(
        "policy.max_call_seconds",
        p.max_call_seconds.unwrap_or(14_400),
        60..=7 * 86_400,
        " s",
    )?;
    if p.cdr.as_ref().is_some_and(|c| c.as_os_str().is_empty()) {
        return Err(e.at(
            "policy.cdr",
            "the CDR file's path is empty (leave the key out to write no CDRs)",
        ));
    }
    let trunk_keepalive = match p.trunk_keepalive {
        None => None,
        Some(s) => Some(Duration::from_secs(e.in_range(
            "policy.trunk_keepalive",
            s,
            5..=3600,
            " s",
        )?)),
    };
    let mut numbers = Vec::new();
    for (i, list) in emergency.into_iter().enumerate() {
        for n in list.numbers {
            if n.is_empty() || n.len() > 32 || !n.bytes().all(|b| b.is_ascii_digit() || b == b'+') {
                return Err(e.at(
                    &format!("emergency[{i}].numbers"),
                    format!("{n:?} is not a number (digits, optionally a leading +)"),
                ));
            }
            numbers.push(n.into_bytes());
        }
    }
    Ok(PolicyConfig {
        refuse_with,
        max_call: Duration::from_secs(max_call),
        emergency: numbers,
        cdr: p.cdr,
        trunk_keepalive,
    })
}

fn build_tenancy(
    server_limit: Option<u32>,
    tenants: Vec<raw::RawTenant>,
    e: &Errors<'_>,
) -> Result<Tenancy, ConfigError> {
    let specs = tenants
        .into_iter()
        .map(|t| TenantSpec {
            name: t.name,
            parent: t.parent,
            max_public_calls: t.max_public_calls,
            forward_external: t.forward_external,
            voicemail: t.voicemail,
        })
        .collect();
    Tenancy::build(server_limit, specs).map_err(|err| match err {
        TreeError::EmptyName(i) => e.at(&format!("tenants[{i}].name"), "a tenant needs a name"),
        TreeError::Duplicate(i) => e.at(
            &format!("tenants[{i}].name"),
            "this name is already used by an earlier tenant; names are unique",
        ),
        TreeError::UnknownParent(i) => e.at(
            &format!("tenants[{i}].parent"),
            "no tenant of that name (or the parents form a cycle); \"\" places it under the server",
        ),
        TreeError::TooDeep(i) => e.at(
            &format!("tenants[{i}].parent"),
            format!("tenants nest at most {MAX_TENANT_DEPTH} levels deep"),
        ),
    })
}

fn build_security(s: raw::RawSecurity, e: &Errors<'_>) -> Result<SecurityConfig, ConfigError> {
    let max_auth_failures = e.in_range(
        "security.max_auth_failures",
        u64::from(s.max_auth_failures.unwrap_or(10)),
        1..=1_000_000,
        "",
    )?;
    let window = e.in_range(
        "security.auth_window",
        s.auth_window.unwrap_or(60),
        1..=86_400,
        " s",
    )?;
    let block = e.in_range(
        "security.block_seconds",
        s.block_seconds.unwrap_or(300),
        1..=604_800,
        " s",
    )?;
    Ok(SecurityConfig {
        max_auth_failures: u32::try_from(max_auth_failures).unwrap_or(u32::MAX),
        auth_window: Duration::from_secs(window),
        block: Duration::from_secs(block),
    })
}

fn build_auth(
    a: raw::RawAuth,
    server: &ServerConfig,
    e: &Errors<'_>,
) -> Result<AuthConfig, ConfigError> {
    let realm = match a.realm {
        Some(realm) => {
            let ok = !realm.is_empty()
                && realm.len() <= 128
                && realm.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                && !realm.contains(['"', '\\']);
            if !ok {
                return Err(e.at(
                    "auth.realm",
                    "a realm is 1 to 128 printable ASCII characters without quotes or backslashes",
                ));
            }
            realm
        }
        None => server
            .domains
            .first()
            .map_or_else(|| server.listen.ip().to_string(), Domain::to_string),
    };
    let algorithms: Vec<Algorithm> = match a.algorithms {
        Some(list) => list.into_iter().map(|p| p.0).collect(),
        None => vec![Algorithm::Sha256, Algorithm::Md5],
    };
    if algorithms.is_empty() {
        return Err(e.at(
            "auth.algorithms",
            "offer at least one algorithm, e.g. [\"SHA-256\", \"MD5\"]",
        ));
    }
    if let Some(dup) = algorithms
        .iter()
        .enumerate()
        .find(|(i, a)| algorithms[..*i].contains(a))
    {
        return Err(e.at(
            "auth.algorithms",
            format!("{} is listed twice", dup.1.name()),
        ));
    }
    let ttl = e.in_range(
        "auth.nonce_ttl",
        a.nonce_ttl.unwrap_or(300),
        10..=86_400,
        " s",
    )?;
    Ok(AuthConfig {
        mode: a.mode.unwrap_or(AuthMode::Digest),
        realm,
        algorithms,
        nonce_ttl: Duration::from_secs(ttl),
    })
}

fn build_proxy(p: raw::RawProxy, e: &Errors<'_>) -> Result<ProxyConfig, ConfigError> {
    let group_timeout = e.in_range(
        "proxy.group_timeout",
        p.group_timeout.unwrap_or(20),
        1..=3600,
        " s",
    )?;
    let max_branches = e.in_range(
        "proxy.max_branches",
        p.max_branches.unwrap_or(12),
        1..=MAX_BRANCHES,
        "",
    )?;
    let timer_c = p.timer_c.unwrap_or(181);
    if timer_c <= 180 {
        return Err(e.at(
            "proxy.timer_c",
            format!("{timer_c} s is too short: RFC 3261 §16.6 step 11 requires Timer C above 3 minutes (181 or more)"),
        ));
    }
    let timer_c = e.in_range("proxy.timer_c", timer_c, 181..=86_400, " s")?;
    Ok(ProxyConfig {
        fork: p.fork.unwrap_or(ForkMode::Parallel),
        group_timeout: Duration::from_secs(group_timeout),
        max_branches,
        single_answer: p.single_answer.unwrap_or(false),
        timer_c: Duration::from_secs(timer_c),
    })
}

/// A TLS peer written with a host name: the key it was written at, its address, the name.
type TlsPeerName = (String, SocketAddr, ServerName<'static>);

/// One verified name per TLS peer address: a connection to an address is checked against one
/// certificate name, so two names for one address cannot both hold.
fn tls_peer_names(
    names: Vec<TlsPeerName>,
    e: &Errors<'_>,
) -> Result<Arc<BTreeMap<SocketAddr, ServerName<'static>>>, ConfigError> {
    let mut map = BTreeMap::new();
    for (key, addr, name) in names {
        match map.entry(addr) {
            Entry::Vacant(v) => {
                v.insert(name);
            }
            Entry::Occupied(o) if *o.get() != name => {
                return Err(e.at(
                    &key,
                    format!(
                        "{:?} resolves to {addr}, which is also {:?}: a TLS peer address has one certificate name",
                        name.to_str(),
                        o.get().to_str()
                    ),
                ))
            }
            Entry::Occupied(_) => {}
        }
    }
    Ok(Arc::new(map))
}

fn build_extension_table(
    i: usize,
    t: raw::RawExtensions,
    (auth, tenancy, device_classes): (&AuthConfig, &Tenancy, &DeviceClasses),
    e: &Errors<'_>,
    warnings: &mut Vec<String>,
    tls_names: &mut Vec<TlsPeerName>,
) -> Result<(ExtensionTable, Vec<NumberRange>), ConfigError> {
    let key = |name: &str| format!("extensions[{i}].{name}");
    let ranges = t.numbers.0;
    let count: u64 = ranges.iter().map(NumberRange::count).sum();
    let has_ha1 = t.ha1_md5.is_some() || t.ha1_sha256.is_some();
    let ha1_key = if t.ha1_md5.is_some() {
        key("ha1_md5")
    } else {
        key("ha1_sha256")
    };
    if t.password.is_some() && has_ha1 {
        return Err(e.at(
            &key("password"),
            "give either password or ha1_md5/ha1_sha256, not both",
        ));
    }
    if has_ha1 && count > 1 {
        return Err(e.at(
            &ha1_key,
            format!(
                "an HA1 hashes one number's number:realm:password, but this entry holds {count} numbers; \
                 give ranges a password template such as \"pw-{{number}}\""
            ),
        ));
    }
    let secret = match (t.password, t.ha1_md5, t.ha1_sha256) {
        (Some(template), _, _) => {
            if count > 1 && !template.0.uses_number() {
                warnings.push(format!(
                    "extensions[{i}]: all {count} numbers share one password (no {{number}} in the template)"
                ));
            }
            Secret::Template(template.0)
        }
        (None, None, None) => Secret::None,
        (None, md5, sha256) => Secret::Ha1 {
            md5: md5.map(|h| h.0),
            sha256: sha256.map(|h| h.0),
        },
    };
    let hops: Vec<NextHop> = t
        .trunk
        .map(|l| l.0.into_iter().map(|a| a.0 .0).collect())
        .unwrap_or_default();
    for h in &hops {
        if let (Some(name), Transport::Tls) = (&h.name, h.transport) {
            tls_names.push((key("trunk"), h.addr, name.clone()));
        }
    }
    let trunk: Vec<SocketAddr> = hops.iter().map(|h| h.addr).collect();
    let trunk_transports = hops.iter().map(|h| h.transport).collect();
    if !trunk.is_empty() && count != 1 {
        return Err(e.at(
            &key("trunk"),
            format!("a trunk is one extension number (a PBX's), but this entry holds {count}"),
        ));
    }
    if !trunk.is_empty() && !matches!(secret, Secret::None) {
        return Err(e.at(
            &key("trunk"),
            "a trunk is authenticated by its address and never registers: leave out its password",
        ));
    }
    let tenant = match t.tenant {
        Some(name) => Some(tenancy.find(&name).ok_or_else(|| {
            e.at(
                &key("tenant"),
                format!("no [[tenants]] entry is named {name:?}"),
            )
        })?),
        None => None,
    };
    if auth.mode == AuthMode::Digest && trunk.is_empty() {
        match &secret {
            Secret::None => {
                return Err(e.at(
                    &format!("extensions[{i}]"),
                    "auth.mode = \"digest\" needs a password (or ha1_md5 / ha1_sha256) for every number; \
                     add one, or set auth.mode = \"none\"",
                ))
            }
            Secret::Ha1 { md5, sha256 } => {
                for algorithm in &auth.algorithms {
                    let (have, name) = match algorithm.base() {
                        Algorithm::Sha256 => (sha256.is_some(), "ha1_sha256"),
                        _ => (md5.is_some(), "ha1_md5"),
                    };
                    if !have {
                        return Err(e.at(
                            &ha1_key,
                            format!("auth.algorithms offers {} but this entry has no {name}", algorithm.name()),
                        ));
                    }
                }
            }
            Secret::Template(_) => {}
        }
    }
    let max_contacts = t
        .max_contacts
        .map(|n| e.in_range(&key("max_contacts"), n, 1..=MAX_CONTACTS, ""))
        .transpose()?;
    let group_timeout = t
        .group_timeout
        .map(|s| {
            e.in_range(&key("group_timeout"), s, 1..=3600, " s")
                .map(Duration::from_secs)
        })
        .transpose()?;
    let table = ExtensionTable {
        secret,
        max_contacts,
        fork: t.fork,
        group_timeout,
        single_answer: t.single_answer,
        tenant,
        trunk,
        trunk_transports,
        max_outgoing_calls: t
            .max_outgoing_calls
            .map(|n| e.in_range(&key("max_outgoing_calls"), n, 0..=100_000, ""))
            .transpose()?,
        all_busy: t.all_busy.unwrap_or(false),
        class_limits: t
            .classes
            .unwrap_or_default()
            .into_iter()
            .map(|(name, limit)| {
                let class = device_classes.find(&name).ok_or_else(|| {
                    e.at(
                        &key("classes"),
                        format!("no [[device_classes]] entry is named {name:?} (ip_phone is the default class)"),
                    )
                })?;
                Ok((class, limit))
            })
            .collect::<Result<_, ConfigError>>()?,
    };
    Ok((table, ranges))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_peer_address_has_one_certificate_name() {
        let locator = Locator::new("");
        let e = Errors {
            locator: &locator,
            file: None,
        };
        let addr: SocketAddr = "127.0.0.1:5061".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:5062".parse().unwrap();
        let entry = |key: &str, addr, name: &str| {
            let name = ServerName::try_from(name.to_owned()).unwrap();
            (key.to_owned(), addr, name)
        };
        // The same name twice (a trunk and a route to one SBC), and another address: kept.
        let map = tls_peer_names(
            vec![
                entry("routes[0].next_hop", addr, "sbc.example.net"),
                entry("extensions[0].trunk", addr, "sbc.example.net"),
                entry("routes[1].next_hop", other, "sbc2.example.net"),
            ],
            &e,
        )
        .unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map[&addr], ServerName::try_from("sbc.example.net").unwrap());
        // Two names for one address: refused, naming the second entry.
        let err = tls_peer_names(
            vec![
                entry("routes[0].next_hop", addr, "sbc.example.net"),
                entry("routes[1].next_hop", addr, "other.example.net"),
            ],
            &e,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("routes[1].next_hop"), "{err}");
        assert!(err.contains("one certificate name"), "{err}");
    }
}
