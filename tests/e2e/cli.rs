//! The command line: `check-config`, a configuration that must not start, `devices`.

use crate::harness::{run_cli, Appliance, Io, Scratch, Setup};

#[test]
fn check_config_accepts_the_bundled_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sipfork.toml");
    let (code, out, err) = run_cli(&["check-config", example]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("sipfork would run:"), "{out}");
    assert!(out.contains("listen        udp 127.0.0.1:5060"), "{out}");
    assert!(out.trim_end().ends_with("sipfork.toml: OK"), "{out}");
}

#[test]
fn wrong_configs_name_the_key_and_line_and_do_not_start() {
    let dir = Scratch::new("bad-config");
    let cases = [
        (
            "[server]\nlisten = \"127.0.0.1:5060\"\n\n[registrar]\non_limit = \"rejct\"\n",
            "registrar.on_limit",
            ":5:",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:5060\"\nshards = 0\n",
            "server.shards",
            ":3:",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:5060\"\nlisen = \"x\"\n",
            "lisen",
            ":3:",
        ),
        ("[server]\nshards = 2\n", "server.listen", ":1:"),
    ];
    for (i, (text, key, line)) in cases.iter().enumerate() {
        let file = dir.0.join(format!("bad-{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let file = file.to_str().unwrap();
        let (code, out, err) = run_cli(&["check-config", file]);
        assert_eq!(code, 2, "case {i}: {out}{err}");
        assert!(err.contains(key) && err.contains(line), "case {i}: {err}");
        // The appliance itself refuses it the same way, without binding anything.
        let t0 = std::time::Instant::now();
        let (code, _, err) = run_cli(&["--config", file]);
        assert_eq!(code, 2, "case {i}: {err}");
        assert!(err.contains(key) && err.contains(line), "case {i}: {err}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    }
    let (code, _, err) = run_cli(&["--config", "/nonexistent/sipfork.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read the configuration"), "{err}");
    let (code, _, err) = run_cli(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("Usage:"), "{err}");
    // --help per subcommand and --version answer on stdout with 0.
    for args in [
        &["--help"][..],
        &["check-config", "--help"],
        &["devices", "--help"],
        &["metrics-doc", "--help"],
    ] {
        let (code, out, err) = run_cli(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains("Usage: sipfork"), "{args:?}: {out}");
    }
    let (code, out, _) = run_cli(&["--version"]);
    assert_eq!(
        (code, out.trim()),
        (0, concat!("sipfork ", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn devices_command_reports_unknown_extensions_and_unreachable_instances() {
    for io in Io::BOTH {
        let dir = Scratch::new(&format!("devices-cli-{io:?}"));
        let Some(app) = Appliance::start(&dir.0, Setup::new(io)) else {
            continue;
        };
        let admin = app.admin.to_string();
        let config = app.config.to_str().unwrap().to_owned();
        for target in [["--admin", admin.as_str()], ["--config", config.as_str()]] {
            let (code, _, err) = run_cli(&["devices", "5000", target[0], target[1]]);
            assert_eq!(code, 1, "{err}");
            assert!(err.contains("5000 is not an extension"), "{err}");
            let (code, out, err) = run_cli(&["devices", "1999", target[0], target[1]]);
            assert_eq!(
                (code, out.as_str()),
                (0, "extension 1999: 0 devices\n"),
                "{err}"
            );
        }
        drop(app);
        let (code, _, err) = run_cli(&["devices", "1000", "--admin", &admin]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("cannot reach the admin listener"), "{err}");
        // A configuration without an admin listener says so.
        let no_admin = dir.0.join("no-admin.toml");
        std::fs::write(&no_admin, "[server]\nlisten = \"127.0.0.1:5060\"\n").unwrap();
        let (code, _, err) = run_cli(&["devices", "1000", "--config", no_admin.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("admin is not set"), "{err}");
    }
}

/// Call policy's operator views: `sipfork licensing --config FILE` and, from a running
/// instance, `GET /licensing`, `GET /tenants` and `GET /tenants/{name}`.
#[test]
fn licensing_and_tenant_views() {
    let tenants = "[[tenants]]\nname = \"acme\"\nmax_public_calls = 200\n\
                   [[tenants]]\nname = \"user-1\"\nparent = \"acme\"\nmax_public_calls = 100\n\
                   [[tenants]]\nname = \"free\"\n\
                   [[extensions]]\nnumbers = \"1000-1999\"\npassword = \"pw-{number}\"\ntenant = \"user-1\"\n";
    let scratch = Scratch::new("tenants");
    let setup = Setup {
        extensions: tenants.into(),
        ..Setup::new(Io::Mmsg)
    };
    let app = Appliance::start(&scratch.0, setup).expect("mmsg always starts");
    let expected = serde_json::json!({ "providers": [
        { "name": "acme", "channels": 200 },
        { "name": "free", "channels": null },
    ] });
    let (code, out, err) = run_cli(&["licensing", "--config", app.config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let cli: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(cli, expected);
    let http: serde_json::Value = serde_json::from_str(&app.get_ok("/licensing")).unwrap();
    assert_eq!(http, expected);
    let all: serde_json::Value = serde_json::from_str(&app.get_ok("/tenants")).unwrap();
    assert_eq!(all["tenants"].as_array().unwrap().len(), 3, "{all}");
    assert_eq!(all["server"]["public_calls"], 0);
    let one: serde_json::Value = serde_json::from_str(&app.get_ok("/tenants/acme")).unwrap();
    assert_eq!(one["max_public_calls"], 200);
    assert_eq!(one["children"], serde_json::json!(["user-1"]));
    assert_eq!(one["public_calls"], 0);
    assert_eq!(app.get("/tenants/nobody").unwrap().0, 404);
}

/// A next hop or trunk may be written with a host name, resolved when the configuration is
/// loaded: `localhost` (from /etc/hosts) passes; a name that does not resolve is refused with the
/// key and the reason. Inside a fresh namespace with only loopback, so the resolver's query for
/// the unknown name cannot leave the box.
#[test]
fn next_hop_host_names_resolve_at_load_or_the_config_is_refused() {
    if !crate::netns::inside() {
        crate::netns::run_inside(
            "dns",
            "cli::next_hop_host_names_resolve_at_load_or_the_config_is_refused",
            &[],
        );
        return;
    }
    let dir = Scratch::new("host-names");
    let config = |host: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:5060\"\n[auth]\nmode = \"none\"\n\
             [[routes]]\nprefix = \"00\"\nnext_hop = \"sip:{host}:5080\"\n\
             [[extensions]]\nnumbers = \"2000\"\ntrunk = [\"sip:{host}:5090\"]\n"
        )
    };
    let good = dir.0.join("localhost.toml");
    std::fs::write(&good, config("localhost")).unwrap();
    let (code, out, err) = run_cli(&["check-config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let bad = dir.0.join("unknown.toml");
    std::fs::write(&bad, config("sbc.sipfork-test.invalid")).unwrap();
    let (code, out, err) = run_cli(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("routes[0].next_hop"), "{err}");
    assert!(err.contains("does not resolve"), "{err}");
}
