//! Configuration: the example parses, lookups answer, and every error names key and line.

use super::*;

const MINIMAL: &str = "[server]\nlisten = \"127.0.0.1:5060\"\n[auth]\nmode = \"none\"\n";

fn parse_ok(text: &str) -> Config {
    Config::from_toml(text).unwrap_or_else(|e| panic!("{e}"))
}

/// The error for `text`, as (key, line, why).
fn parse_err(text: &str) -> (String, usize, String) {
    match Config::from_toml(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(ConfigError::Invalid { key, line, why, .. }) => (key, line, why),
        Err(other) => panic!("{other}"),
    }
}

fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

#[test]
fn the_example_parses_and_says_what_it_would_run() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sipfork.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.listen, "127.0.0.1:5060".parse().unwrap());
    assert_eq!(config.server.admin, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(config.server.shards, 2);
    assert_eq!(
        config.server.data_dir.as_deref(),
        Some(Path::new("/tmp/sipfork-example"))
    );
    assert_eq!(config.auth.mode, AuthMode::Digest);
    assert_eq!(config.extension_count(), 1000);
    let policy = config.extension(b"1234").expect("provisioned");
    assert_eq!(policy.max_contacts, 5);
    assert_eq!(policy.credential(), Credential::Password("pw-1234".into()));
    assert!(config.is_trusted("127.0.0.2".parse().unwrap()));
    assert_eq!(
        config
            .route_for(b"0049301234")
            .map(|r| r.next_hop.addr.port()),
        Some(5080)
    );
    let summary = config.to_string();
    for expected in [
        "listen        udp 127.0.0.1:5060",
        "shards        2",
        "1000 numbers in 1 ranges: 1000-1999",
        "bindings journal in /tmp/sipfork-example",
        "route         00 -> sip:127.0.0.1:5080",
        "trusted       127.0.0.2/32 local-test-pbx",
    ] {
        assert!(
            summary.contains(expected),
            "missing {expected:?} in\n{summary}"
        );
    }
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

#[test]
fn defaults() {
    let config = parse_ok(MINIMAL);
    assert!(config.server.shards >= 1);
    assert_eq!(config.server.io, IoBackend::Auto);
    assert_eq!(config.server.pin_cores, PinCores::Off);
    assert_eq!(config.server.socket_buffer, 8 << 20);
    assert_eq!(config.server.coalesce, Duration::ZERO);
    assert_eq!(config.registrar.max_contacts, 10);
    assert_eq!(config.registrar.on_limit, OnLimit::Reject);
    assert_eq!(config.registrar.min_expires, Duration::from_secs(60));
    assert_eq!(config.registrar.max_expires, Duration::from_secs(7200));
    assert_eq!(config.registrar.default_expires, Duration::from_secs(3600));
    assert_eq!(config.registrar.nat, NatMode::Auto);
    assert_eq!(config.auth.realm, "127.0.0.1");
    assert_eq!(
        config.auth.algorithms,
        vec![Algorithm::Sha256, Algorithm::Md5]
    );
    assert_eq!(config.auth.nonce_ttl, Duration::from_secs(300));
    assert_eq!(config.proxy.fork, ForkMode::Parallel);
    assert_eq!(config.proxy.group_timeout, Duration::from_secs(20));
    assert_eq!(config.proxy.max_branches, 12);
    assert!(!config.proxy.single_answer);
    assert_eq!(config.proxy.timer_c, Duration::from_secs(181));
    let warnings = config.warnings().join("\n");
    assert!(warnings.contains("data_dir is not set"), "{warnings}");
    assert!(warnings.contains("no [[extensions]]"), "{warnings}");
    assert!(warnings.contains("auth.mode = \"none\""), "{warnings}");
    // Digest is the default mode.
    assert_eq!(
        parse_ok("[server]\nlisten = \"127.0.0.1:5060\"\n")
            .auth
            .mode,
        AuthMode::Digest
    );
}

#[test]
fn unknown_keys_name_key_and_line() {
    let (key, line, why) = parse_err(&with(
        "\n[registrar]\nmax_contacts = 3\non_limt = \"reject\"\n",
    ));
    assert_eq!((key.as_str(), line), ("registrar.on_limt", 8));
    assert!(
        why.contains("unknown field `on_limt`") && why.contains("on_limit"),
        "{why}"
    );
    let (key, line, _) = parse_err(&with(
        "[[extensions]]\nnumbers = \"1\"\n[[extensions]]\nnumbers = \"2\"\nmax_contact = 1\n",
    ));
    assert_eq!((key.as_str(), line), ("extensions[1].max_contact", 9));
    let (key, line, _) = parse_err(&with("[serverr]\nx = 1\n"));
    assert_eq!((key.as_str(), line), ("serverr", 5));
    let (key, _, _) = parse_err("server = { listen = \"127.0.0.1:5060\", lisen = \"x\" }\n");
    assert_eq!(key, "server.lisen");
}

#[test]
fn bad_values_name_key_line_and_what_is_expected() {
    let (key, line, why) = parse_err(&with("[registrar]\non_limit = \"rejct\"\n"));
    assert_eq!((key.as_str(), line), ("registrar.on_limit", 6));
    assert!(
        why.contains("`reject`") && why.contains("`evict-oldest`"),
        "{why}"
    );
    let (key, line, why) = parse_err("[server]\nlisten = \"localhost:5060\"\n");
    assert_eq!((key.as_str(), line), ("server.listen", 2));
    assert!(why.contains("127.0.0.1:5060"), "{why}");
    let (key, _, why) = parse_err(&with("[server2]\n"));
    assert_eq!(key, "server2");
    assert!(why.contains("unknown field"), "{why}");
    let (key, line, why) = parse_err("[server]\nlisten = \"127.0.0.1:5060\"\nshards = -2\n");
    assert_eq!((key.as_str(), line), ("server.shards", 3));
    assert!(why.contains("u16"), "{why}");
    let (key, _, why) = parse_err(&with("[[extensions]]\nnumbers = 1000\n"));
    assert_eq!(key, "extensions[0].numbers");
    assert!(why.contains("as a string"), "{why}");
    let (key, _, why) = parse_err(&with(
        "[[extensions]]\nnumbers = [\"1000\", \"100-1999\"]\n",
    ));
    assert_eq!(key, "extensions[0].numbers");
    assert!(why.contains("same number of digits"), "{why}");
    let (key, _, why) = parse_err(&with("[[trusted]]\ncidr = \"10.0.0.1/8\"\n"));
    assert_eq!(key, "trusted[0].cidr");
    assert!(why.contains("10.0.0.0/8"), "{why}");
    let (key, _, why) = parse_err(&with(
        "[[routes]]\nprefix = \"00\"\nnext_hop = \"sip:gw_example!com\"\n",
    ));
    assert_eq!(key, "routes[0].next_hop");
    assert!(
        why.contains("neither an IP address nor a host name"),
        "{why}"
    );
    // A next hop over TCP without a tcp: listener would leave as cleartext UDP.
    let (key, _, why) = parse_err(&with(
        "[[routes]]\nprefix = \"00\"\nnext_hop = \"sip:127.0.0.1:5080;transport=tcp\"\n",
    ));
    assert_eq!(key, "routes[0].next_hop");
    assert!(why.contains("needs a tcp: listen"), "{why}");
    let (key, _, _) = parse_err(&with(
        "[[extensions]]\nnumbers = \"1000\"\nha1_md5 = \"abc\"\n",
    ));
    assert_eq!(key, "extensions[0].ha1_md5");
    let (key, _, why) =
        parse_err("[server]\nlisten = \"127.0.0.1:5060\"\nsocket_buffer = \"8 parsecs\"\n");
    assert_eq!(key, "server.socket_buffer");
    assert!(why.contains("unit"), "{why}");
    let (key, line, why) = parse_err(&with("[auth]\n"));
    assert_eq!(
        (key.as_str(), line),
        ("", 5),
        "a table given twice is a TOML syntax error: line only"
    );
    assert!(why.contains("duplicate"), "{why}");
    let (key, _, why) =
        parse_err("[server]\nlisten = \"127.0.0.1:5060\"\n[auth]\nalgorithms = [\"SHA-512\"]\n");
    assert_eq!(key, "auth.algorithms[0]");
    assert!(why.contains("SHA-256"), "{why}");
}

#[test]
fn missing_required_keys_and_syntax_errors() {
    let (key, line, why) = parse_err("[server]\nshards = 2\n");
    assert_eq!((key.as_str(), line), ("server.listen", 1));
    assert!(why.contains("missing field `listen`"), "{why}");
    let (key, _, _) = parse_err("");
    assert_eq!(key, "server");
    let (key, line, _) = parse_err(&with("[[extensions]]\npassword = \"x\"\n"));
    assert_eq!((key.as_str(), line), ("extensions[0].numbers", 5));
    let (key, line, why) = parse_err("[server]\nlisten = \"127.0.0.1:5060\"\nthis is not toml\n");
    assert_eq!((key.as_str(), line), ("", 3));
    assert!(!why.is_empty());
}

#[test]
fn error_display_has_file_line_key_and_why() {
    let dir = std::env::temp_dir().join(format!("sipfork-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, with("[registrar]\non_limit = \"rejct\"\n")).unwrap();
    let err = Config::load(&path).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.key(), Some("registrar.on_limit"));
    assert_eq!(err.line(), Some(6));
    assert!(
        text.starts_with(&format!(
            "{}:6: registrar.on_limit: unknown variant",
            path.display()
        )),
        "{text}"
    );
    let missing = Config::load(&dir.join("absent.toml")).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }));
    assert!(missing.to_string().contains("cannot read"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn relative_data_dir_follows_the_config_file() {
    let dir = std::env::temp_dir().join(format!("sipfork-config-rel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sipfork.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:5060\"\ndata_dir = \"data\"\n[auth]\nmode = \"none\"\n",
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.server.data_dir, Some(dir.join("data")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn expiry_bounds_are_checked_on_the_key_written() {
    let (key, line, why) = parse_err(&with(
        "[registrar]\nmin_expires = 60\ndefault_expires = 30\n",
    ));
    assert_eq!((key.as_str(), line), ("registrar.default_expires", 7));
    assert!(why.contains("between"), "{why}");
    let (key, _, _) = parse_err(&with("[registrar]\nmin_expires = 4000\n"));
    assert_eq!(
        key, "registrar.min_expires",
        "default 3600 lies below the written min"
    );
    let (key, _, _) = parse_err(&with("[registrar]\nmin_expires = 600\nmax_expires = 300\n"));
    assert_eq!(key, "registrar.max_expires");
    let (key, _, _) = parse_err(&with("[registrar]\nmax_contacts = 0\n"));
    assert_eq!(key, "registrar.max_contacts");
    let config = parse_ok(&with(
        "[registrar]\nmin_expires = 30\ndefault_expires = 30\nmax_expires = 30\n",
    ));
    assert_eq!(config.registrar.default_expires, Duration::from_secs(30));
}

#[test]
fn proxy_limits() {
    let (key, line, why) = parse_err(&with("[proxy]\ntimer_c = 180\n"));
    assert_eq!((key.as_str(), line), ("proxy.timer_c", 6));
    assert!(why.contains("16.6"), "{why}");
    assert_eq!(
        parse_ok(&with("[proxy]\ntimer_c = 200\n")).proxy.timer_c,
        Duration::from_secs(200)
    );
    let (key, _, _) = parse_err(&with("[proxy]\nmax_branches = 0\n"));
    assert_eq!(key, "proxy.max_branches");
    let (key, _, why) = parse_err(&with("[proxy]\nfork = \"serial\"\n"));
    assert_eq!(key, "proxy.fork");
    assert!(why.contains("`q-groups`"), "{why}");
    assert_eq!(
        parse_ok(&with("[proxy]\nfork = \"q-groups\"\n")).proxy.fork,
        ForkMode::QGroups
    );
}

#[test]
fn shards_and_pinning() {
    let config = parse_ok(
        "[server]\nlisten = \"127.0.0.1:5060\"\npin_cores = [3, 5]\n[auth]\nmode = \"none\"\n",
    );
    assert_eq!(config.server.shards, 2);
    assert_eq!(config.server.pin_cores, PinCores::Cpus(vec![3, 5]));
    let (key, _, why) =
        parse_err("[server]\nlisten = \"127.0.0.1:5060\"\nshards = 3\npin_cores = [0, 1]\n");
    assert_eq!(key, "server.pin_cores");
    assert!(why.contains("one CPU per shard"), "{why}");
    let (key, _, why) = parse_err("[server]\nlisten = \"127.0.0.1:5060\"\npin_cores = [1, 1]\n");
    assert_eq!(key, "server.pin_cores");
    assert!(why.contains("twice"), "{why}");
    let (key, _, _) = parse_err("[server]\nlisten = \"127.0.0.1:5060\"\nshards = 0\n");
    assert_eq!(key, "server.shards");
    let config = parse_ok(&with("[server.x]\n").replace("[server.x]\n", "")); // sanity
    assert_eq!(config.server.pin_cores, PinCores::Off);
    let pinned = parse_ok("[server]\nlisten = \"127.0.0.1:5060\"\npin_cores = true\nshards = 4\n[auth]\nmode = \"none\"\n");
    assert_eq!(
        (pinned.server.pin_cores, pinned.server.shards),
        (PinCores::PerShard, 4)
    );
    let (key, _, _) = parse_err("[server]\nlisten = \"127.0.0.1:5060\"\ncoalesce_us = 5000\n");
    assert_eq!(key, "server.coalesce_us");
    let (key, _, _) = parse_err("[server]\nlisten = \"127.0.0.1:5060\"\nsocket_buffer = 1024\n");
    assert_eq!(key, "server.socket_buffer");
}

#[test]
fn domains_and_the_listen_address() {
    let config = parse_ok(
        "[server]\nlisten = \"127.0.0.1:5060\"\ndomain = [\"Example.com\", \"203.0.113.5\"]\n[auth]\nmode = \"none\"\n",
    );
    assert!(config.is_local_domain(b"example.com", None));
    assert!(
        config.is_local_domain(b"EXAMPLE.COM.", Some(5070)),
        "names match any port"
    );
    assert!(!config.is_local_domain(b"example.org", None));
    assert!(!config.is_local_domain(b"sub.example.com", None));
    assert!(config.is_local_domain(b"127.0.0.1", None));
    assert!(config.is_local_domain(b"127.0.0.1", Some(5060)));
    assert!(
        !config.is_local_domain(b"127.0.0.1", Some(5061)),
        "another port on our IP is another server"
    );
    assert!(config.is_local_domain(b"203.0.113.5", Some(5099)));
    assert!(!config.is_local_domain(b"203.0.113.6", None));
    assert!(!config.is_local_domain(b"\xff\xfe", None));
    assert_eq!(
        config.auth.realm, "example.com",
        "realm defaults to the first domain"
    );
    let v6 = parse_ok("[server]\nlisten = \"[::1]:5060\"\ndomain = \"sip.example.net\"\n[auth]\nmode = \"none\"\n");
    assert!(v6.is_local_domain(b"[::1]", Some(5060)));
    assert!(v6.is_local_domain(b"[0:0::1]", None));
    assert!(!v6.is_local_domain(b"[::2]", None));
    assert!(v6.is_local_domain(b"SIP.example.net", None));
    let (key, _, _) =
        parse_err("[server]\nlisten = \"127.0.0.1:5060\"\ndomain = [\"ok.com\", \"bad domain\"]\n");
    assert_eq!(key, "server.domain[1]");
}

#[test]
fn extension_lookup_with_overrides_and_credentials() {
    let config = parse_ok(
        r#"
[server]
listen = "127.0.0.1:5060"
[registrar]
max_contacts = 7
[proxy]
fork = "parallel"
group_timeout = 15
[[extensions]]
numbers = ["0100-0199", "2000"]
password = "secret-{number}"
fork = "q-groups"
[[extensions]]
numbers = "3000"
ha1_md5 = "939e7578ed9e3c518a452acee763bce9"
ha1_sha256 = "7987c7b3d1a1e1fe9f8e5e2d1a62e3e0f2a7b6a0c0d8f8e4e6c2a4b9d0e1f2a3"
max_contacts = 2
group_timeout = 5
single_answer = true
"#,
    );
    let a = config.extension(b"0150").unwrap();
    assert_eq!(
        (a.max_contacts, a.fork, a.group_timeout, a.single_answer),
        (7, ForkMode::QGroups, Duration::from_secs(15), false)
    );
    assert_eq!(a.credential(), Credential::Password("secret-0150".into()));
    assert_eq!(a.table_index(), 0);
    assert!(
        config.extension(b"150").is_none(),
        "width is part of the number"
    );
    assert_eq!(
        config.extension(b"2000").unwrap().credential(),
        Credential::Password("secret-2000".into())
    );
    let b = config.extension(b"3000").unwrap();
    assert_eq!(
        (b.max_contacts, b.fork, b.group_timeout, b.single_answer),
        (2, ForkMode::Parallel, Duration::from_secs(5), true)
    );
    let credential = b.credential();
    let ha1 = credential
        .ha1(Algorithm::Md5Sess, b"3000", b"127.0.0.1")
        .unwrap();
    assert_eq!(ha1.algorithm(), Algorithm::Md5);
    assert_eq!(ha1.as_bytes()[..2], [0x93, 0x9e]);
    assert!(credential
        .ha1(Algorithm::Sha256, b"3000", b"127.0.0.1")
        .is_some());
    let password = config.extension(b"0100").unwrap().credential();
    let derived = password.ha1(Algorithm::Md5, b"0100", b"r").unwrap();
    assert_eq!(derived, Ha1ForTest::md5(b"0100", b"r", b"secret-0100"));
    assert!(config.extension(b"1000").is_none());
    assert_eq!(config.extension_count(), 102);
    assert!(
        format!("{credential:?}").contains("md5: true"),
        "secrets are not printed"
    );
}

/// Digest's own HA1, to check the config hands out the same thing.
struct Ha1ForTest;
impl Ha1ForTest {
    fn md5(user: &[u8], realm: &[u8], password: &[u8]) -> crate::core::registrar::digest::Ha1 {
        crate::core::registrar::digest::Ha1::from_password(Algorithm::Md5, user, realm, password)
    }
}

#[test]
fn credential_rules() {
    let (key, line, why) = parse_err(
        "[server]\nlisten = \"127.0.0.1:5060\"\n[[extensions]]\nnumbers = \"1000-1999\"\n",
    );
    assert_eq!((key.as_str(), line), ("extensions[0]", 3));
    assert!(why.contains("auth.mode"), "{why}");
    let (key, _, why) = parse_err(
        "[server]\nlisten = \"127.0.0.1:5060\"\n[[extensions]]\nnumbers = \"1000-1001\"\nha1_md5 = \"939e7578ed9e3c518a452acee763bce9\"\n",
    );
    assert_eq!(key, "extensions[0].ha1_md5");
    assert!(why.contains("2 numbers"), "{why}");
    let (key, _, why) = parse_err(
        "[server]\nlisten = \"127.0.0.1:5060\"\n[[extensions]]\nnumbers = \"1000\"\nha1_md5 = \"939e7578ed9e3c518a452acee763bce9\"\n",
    );
    assert_eq!(key, "extensions[0].ha1_md5");
    assert!(
        why.contains("SHA-256") && why.contains("ha1_sha256"),
        "{why}"
    );
    parse_ok(
        "[server]\nlisten = \"127.0.0.1:5060\"\n[auth]\nalgorithms = [\"MD5\"]\n[[extensions]]\nnumbers = \"1000\"\nha1_md5 = \"939e7578ed9e3c518a452acee763bce9\"\n",
    );
    let (key, _, _) = parse_err(
        "[server]\nlisten = \"127.0.0.1:5060\"\n[[extensions]]\nnumbers = \"1000\"\npassword = \"x\"\nha1_md5 = \"939e7578ed9e3c518a452acee763bce9\"\n",
    );
    assert_eq!(key, "extensions[0].password");
    let (key, _, why) = parse_err(&with(
        "[[extensions]]\nnumbers = \"1\"\npassword = \"pw-{num}\"\n",
    ));
    assert_eq!(key, "extensions[0].password");
    assert!(why.contains("{number}"), "{why}");
    let shared = parse_ok("[server]\nlisten = \"127.0.0.1:5060\"\n[[extensions]]\nnumbers = \"1000-1009\"\npassword = \"same\"\n");
    assert!(shared
        .warnings()
        .iter()
        .any(|w| w.contains("share one password")));
    let (key, _, _) = parse_err(
        &with("[auth]\nrealm = \"a\\\"b\"\n")
            .replace("[auth]\nmode = \"none\"\n[auth]", "[auth]\nmode = \"none\""),
    );
    assert_eq!(key, "auth.realm");
    let (key, _, why) = parse_err(
        &with("[auth]\nalgorithms = [\"MD5\", \"md5\"]\n")
            .replace("[auth]\nmode = \"none\"\n[auth]", "[auth]\nmode = \"none\""),
    );
    assert_eq!(key, "auth.algorithms");
    assert!(why.contains("twice"), "{why}");
}

#[test]
fn overlapping_ranges_are_refused_with_both_named() {
    let (key, line, why) = parse_err(&with(
        "[[extensions]]\nnumbers = \"1000-1999\"\n[[extensions]]\nnumbers = [\"3000\", \"1500-2500\"]\n",
    ));
    assert_eq!((key.as_str(), line), ("extensions[1].numbers", 8));
    assert!(
        why.contains("1500-2500 overlaps 1000-1999 in extensions[0]"),
        "{why}"
    );
    let (key, _, why) = parse_err(&with("[[extensions]]\nnumbers = [\"10-20\", \"15\"]\n"));
    assert_eq!(key, "extensions[0].numbers");
    assert!(why.contains("earlier in this list"), "{why}");
}

#[test]
fn trusted_peers_and_routes() {
    let config = parse_ok(&with(
        "[[trusted]]\ncidr = \"10.0.0.0/8\"\nname = \"core\"\n[[trusted]]\ncidr = \"2001:db8::/32\"\n\
         [[routes]]\nprefix = \"00\"\nnext_hop = \"sip:127.0.0.1:5080\"\n\
         [[routes]]\nprefix = \"0049\"\nnext_hop = \"sip:127.0.0.1:5081;lr\"\n\
         [[routes]]\nprefix = \"\"\nnext_hop = \"sip:[::1]:5082\"\n",
    ));
    assert!(config.is_trusted("10.9.8.7".parse().unwrap()));
    assert_eq!(
        config
            .trusted_peer("10.9.8.7".parse().unwrap())
            .and_then(|t| t.name.as_deref()),
        Some("core")
    );
    assert!(config.is_trusted("2001:db8::1".parse().unwrap()));
    assert!(!config.is_trusted("192.168.1.1".parse().unwrap()));
    assert_eq!(
        config.route_for(b"004930").unwrap().next_hop.addr.port(),
        5081
    );
    assert_eq!(
        config.route_for(b"0033").unwrap().next_hop.addr.port(),
        5080
    );
    assert_eq!(
        config.route_for(b"5551234").unwrap().next_hop.addr.port(),
        5082
    );
    let (key, line, _) = parse_err(&with(
        "[[routes]]\nprefix = \"00\"\nnext_hop = \"sip:127.0.0.1\"\n[[routes]]\nprefix = \"00\"\nnext_hop = \"sip:127.0.0.1:5070\"\n",
    ));
    assert_eq!((key.as_str(), line), ("routes[1].prefix", 9));
    let (key, _, _) = parse_err(&with(
        "[[routes]]\nprefix = \"+49\"\nnext_hop = \"sip:127.0.0.1\"\n",
    ));
    assert_eq!(key, "routes[0].prefix");
    let (key, _, _) = parse_err(&with("[[trusted]]\ncidr = \"10.0.0.0/8\"\nname = \" \"\n"));
    assert_eq!(key, "trusted[0].name");
}

#[test]
fn a_million_numbers_parse_and_look_up_fast() {
    let mut text = with("");
    for i in 0..1000u64 {
        let start = 10_000_000 + i * 1000;
        text.push_str(&format!(
            "[[extensions]]\nnumbers = \"{start}-{}\"\n",
            start + 999
        ));
    }
    let config = parse_ok(&text);
    assert_eq!(config.extension_count(), 1_000_000);
    assert_eq!(
        config.extension(b"10999999").map(|p| p.table_index()),
        Some(999)
    );
    assert_eq!(
        config.extension(b"10000000").map(|p| p.table_index()),
        Some(0)
    );
    assert!(config.extension(b"11000000").is_none());
    let summary = config.to_string();
    assert!(
        summary.contains("1000000 numbers in 1000 ranges") && summary.contains("and 992 more"),
        "{summary}"
    );
}

#[test]
fn admin_token_and_drain_seconds() {
    let base = "[server]\nlisten = \"127.0.0.1:5060\"\nadmin = \"127.0.0.1:8080\"\n";
    let cfg = parse_ok(base);
    assert_eq!(
        (cfg.server.admin_token.as_deref(), cfg.server.drain),
        (None, Duration::ZERO)
    );
    let cfg = parse_ok(&format!(
        "{base}admin_token = \"0123456789abcdef\"\ndrain_seconds = 30\n"
    ));
    assert_eq!(cfg.server.admin_token.as_deref(), Some("0123456789abcdef"));
    assert_eq!(cfg.server.drain, Duration::from_secs(30));
    for token in ["short", "0123456789 abcdef", "0123456789abcdé"] {
        let (key, line, why) = parse_err(&format!("{base}admin_token = \"{token}\"\n"));
        assert_eq!((key.as_str(), line), ("server.admin_token", 4), "{token}");
        assert!(why.contains("at least 16"), "{why}");
    }
    let (key, line, _) = parse_err(&format!("{base}drain_seconds = 3601\n"));
    assert_eq!((key.as_str(), line), ("server.drain_seconds", 4));
    // A token without a listener is allowed, with a warning.
    let cfg =
        parse_ok("[server]\nlisten = \"127.0.0.1:5060\"\nadmin_token = \"0123456789abcdef\"\n");
    assert!(cfg.warnings().iter().any(|w| w.contains("admin_token")));
}

#[test]
fn tenants_trunks_dids_and_emergency_numbers() {
    assert!(parse_ok(MINIMAL).tenancy.is_empty());
    let text = with(
        "[policy]\nrefuse_with = 486\nmax_call_seconds = 600\n\
         [[tenants]]\nname = \"sp\"\nmax_public_calls = 200\n\
         [[tenants]]\nname = \"org\"\nparent = \"sp\"\n\
         [[extensions]]\nnumbers = \"1000-1099\"\ntenant = \"org\"\n\
         [[extensions]]\nnumbers = \"3000\"\ntenant = \"org\"\ntrunk = [\"127.0.0.2:5060\", \"127.0.0.3:5060\"]\n\
         [[dids]]\nnumbers = \"+31201234000-+31201234999\"\nextension = \"3000\"\n\
         [[emergency]]\nnumbers = [\"112\", \"911\"]\n",
    );
    let c = parse_ok(&text);
    assert_eq!(c.policy.refuse_with, 486);
    assert_eq!(c.policy.max_call, Duration::from_secs(600));
    assert!(c.policy.is_emergency(b"112") && !c.policy.is_emergency(b"113"));
    let org = c.tenancy.find("org").unwrap();
    assert_eq!(c.extension(b"1000").unwrap().tenant(), org);
    assert_eq!(c.extension(b"3000").unwrap().trunk().len(), 2);
    assert_eq!(
        c.trunk_of(
            "127.0.0.3:5060".parse().unwrap(),
            crate::core::transport::Transport::Udp,
            None
        ),
        Some(&b"3000"[..])
    );
    assert_eq!(
        c.trunk_of(
            "127.0.0.3:5060".parse().unwrap(),
            crate::core::transport::Transport::Tcp,
            None
        ),
        Some(&b"3000"[..]),
        "a UDP trunk over TCP too"
    );
    assert_eq!(
        c.trunk_of(
            "127.0.0.3:5061".parse().unwrap(),
            crate::core::transport::Transport::Udp,
            None
        ),
        None
    );
    assert_eq!(c.did(b"+31201234567"), Some(&b"3000"[..]));
    assert_eq!(c.did(b"31201234567"), None, "the + is part of the number");
    assert_eq!(c.did(b"+3120123456"), None);
    assert_eq!(c.tenancy.licensing(), vec![("sp".to_owned(), Some(200))]);

    let bad = |extra: &str| parse_err(&with(extra));
    let (key, _, _) = bad("[[tenants]]\nname = \"a\"\nparent = \"nobody\"\n");
    assert_eq!(key, "tenants[0].parent");
    let (key, _, _) = bad("[[extensions]]\nnumbers = \"1000\"\ntenant = \"nobody\"\n");
    assert_eq!(key, "extensions[0].tenant");
    let (key, _, why) =
        bad("[[extensions]]\nnumbers = \"3000-3001\"\ntrunk = \"127.0.0.2:5060\"\n");
    assert_eq!(key, "extensions[0].trunk");
    assert!(why.contains("one extension"), "{why}");
    let (key, _, _) = bad(
        "[[extensions]]\nnumbers = \"1000\"\n[[dids]]\nnumbers = \"+1-2\"\nextension = \"1000\"\n",
    );
    assert_eq!(key, "dids[0].numbers");
    let (key, _, _) = bad("[[dids]]\nnumbers = \"+31\"\nextension = \"9999\"\n");
    assert_eq!(key, "dids[0].extension");
    let (key, _, _) = bad("[policy]\nrefuse_with = 500\n");
    assert_eq!(key, "policy.refuse_with");
    let (key, _, _) = bad("[[emergency]]\nnumbers = [\"11a\"]\n");
    assert_eq!(key, "emergency[0].numbers");
}

#[test]
fn io_xdp_needs_an_interface_and_a_specific_listen_address() {
    let ok = parse_ok(
        "[server]\nlisten = \"10.0.0.1:5060\"\nio = \"xdp\"\ninterface = \"veth0\"\n\
         xdp_mode = \"generic\"\n[auth]\nmode = \"none\"\n",
    );
    assert_eq!(ok.server.io, IoBackend::Xdp);
    assert_eq!(ok.server.interface.as_deref(), Some("veth0"));
    assert_eq!(ok.server.xdp_mode, crate::engine::io::xdp::XdpMode::Generic);
    let (key, _, why) = parse_err("[server]\nlisten = \"10.0.0.1:5060\"\nio = \"xdp\"\n");
    assert_eq!(key, "server.io");
    assert!(why.contains("needs server.interface"), "{why}");
    let (key, _, why) =
        parse_err("[server]\nlisten = \"0.0.0.0:5060\"\nio = \"xdp\"\ninterface = \"veth0\"\n");
    assert_eq!(key, "server.listen");
    assert!(why.contains("specific address"), "{why}");
    let (key, _, _) = parse_err(
        "[server]\nlisten = \"10.0.0.1:5060\"\nio = \"xdp\"\ninterface = \"veth0\"\nxdp_mode = \"fast\"\n",
    );
    assert_eq!(key, "server.xdp_mode");
    // auto never means xdp.
    assert_eq!(parse_ok(&with("")).server.io, IoBackend::Auto);
}

#[test]
fn steering_defaults_to_auto_and_can_be_turned_off() {
    assert_eq!(
        parse_ok(MINIMAL).server.steering,
        crate::config::Steering::Auto
    );
    let off = parse_ok(&MINIMAL.replace("[server]\n", "[server]\nsteering = \"off\"\n"));
    assert_eq!(off.server.steering, crate::config::Steering::Off);
    assert!(
        Config::from_toml(&MINIMAL.replace("[server]\n", "[server]\nsteering = \"ebpf\"\n"))
            .is_err()
    );
}
