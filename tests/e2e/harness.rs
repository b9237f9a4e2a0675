//! Runs the real `sipfork` binary with a generated configuration on 127.0.0.1 and talks to it
//! over UDP (SIP) and TCP (admin API).
//!
//! Every appliance gets its own ports, probed free first (tests run in parallel, and several
//! test processes may run at once): a per-process base derived from the PID, then the next free
//! pair. Each gets a scratch directory under the target's temporary directory for its
//! configuration and journals. The child is killed when the handle drops, so a failing test never
//! leaves a process behind.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sipfork");

/// The UDP backend a run asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    Uring,
    Mmsg,
    /// AF_XDP (`tests/e2e/xdp.rs`; needs `interface` in `server_extra`).
    Xdp,
}

impl Io {
    pub const BOTH: [Io; 2] = [Io::Uring, Io::Mmsg];

    fn config_value(self) -> &'static str {
        match self {
            Io::Uring => "uring",
            Io::Mmsg => "mmsg",
            Io::Xdp => "xdp",
        }
    }

    /// The backend name `/metrics` reports.
    pub fn metric_name(self) -> &'static str {
        match self {
            Io::Uring => "io_uring",
            Io::Mmsg => "mmsg",
            Io::Xdp => "xdp",
        }
    }
}

/// A scratch directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(label: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("e2e-{}-{n}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free port on 127.0.0.1 for both UDP and TCP.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 20;
    loop {
        let port = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
        if !(20_000..32_000).contains(&port) {
            continue;
        }
        // Without SO_REUSEPORT these fail while anything, reuseport or not, holds the port.
        let udp = UdpSocket::bind(("127.0.0.1", port));
        let tcp = TcpListener::bind(("127.0.0.1", port));
        if udp.is_ok() && tcp.is_ok() {
            return port;
        }
    }
}

/// What a test wants in the generated configuration.
#[derive(Clone, Debug)]
pub struct Setup {
    pub io: Io,
    pub shards: u16,
    pub persist: bool,
    pub admin: bool,
    /// `[auth]` mode.
    pub auth: &'static str,
    /// Extra TOML appended to `[registrar]`.
    pub registrar: String,
    /// Extra TOML appended to `[auth]`.
    pub auth_extra: String,
    /// Extra TOML appended to `[server]`.
    pub server_extra: String,
    /// The `[[extensions]]` tables.
    pub extensions: String,
    /// Also listen on TCP, on the UDP port (`listen = ["udp:…", "tcp:…"]`).
    pub tcp: bool,
    /// Also listen on TLS (`"tls:…"` on [`Appliance::tls`]), with `[tls] cert = "cert.pem"`,
    /// `key = "key.pem"`: the test writes them into the appliance's directory before it starts.
    pub tls: bool,
    /// More `listen` entries, as written (`"ws:127.0.0.1:8080"`).
    pub extra_listen: Vec<String>,
    /// The address of the SIP and admin listeners (127.0.0.1 unless a test's namespace has
    /// another).
    pub ip: IpAddr,
    /// Run the process in this network namespace (`ip netns exec`; same PID).
    pub netns: Option<String>,
}

impl Setup {
    pub fn new(io: Io) -> Setup {
        Setup {
            io,
            shards: 2,
            persist: true,
            admin: true,
            auth: "none",
            registrar: String::new(),
            auth_extra: String::new(),
            server_extra: String::new(),
            extensions: "[[extensions]]\nnumbers = \"1000-1999\"\npassword = \"pw-{number}\"\n"
                .into(),
            tcp: false,
            tls: false,
            extra_listen: Vec::new(),
            ip: Ipv4Addr::LOCALHOST.into(),
            netns: None,
        }
    }
}

/// A running (or stopped) appliance.
pub struct Appliance {
    child: Option<Child>,
    pub setup: Setup,
    pub sip: SocketAddr,
    /// The TLS listener's address (used when `setup.tls`).
    pub tls: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    log: Arc<Mutex<String>>,
}

/// Why an appliance did not come up.
#[derive(Debug)]
pub enum StartError {
    /// io_uring is not available on this machine (the test skips that variant).
    UringUnavailable(String),
    /// Anything else: a test failure.
    Failed(String),
}

impl Appliance {
    /// Starts an appliance in `dir`, or explains why it did not come up.
    pub fn try_start(dir: &Path, setup: Setup) -> Result<Appliance, StartError> {
        let mut app = Appliance::prepare(dir, setup);
        app.write_config();
        app.spawn()?;
        Ok(app)
    }

    /// Free ports and paths in `dir`; nothing written or started yet.
    fn prepare(dir: &Path, setup: Setup) -> Appliance {
        Appliance {
            child: None,
            sip: (setup.ip, free_port()).into(),
            tls: (setup.ip, free_port()).into(),
            admin: (setup.ip, free_port()).into(),
            setup,
            config: dir.join("sipfork.toml"),
            data_dir: dir.join("data"),
            log: Arc::default(),
        }
    }

    /// Starts the shipped `examples/sipfork.toml` in `dir`, changed only where [`example_config`]
    /// says (listen address, data_dir, admin address); panics when it does not come up.
    pub fn start_example(dir: &Path) -> Appliance {
        // Only `admin: true` matters to `spawn` (it waits for `/health`); the example itself says
        // io = "auto", 2 shards, digest.
        let mut app = Appliance::prepare(dir, Setup::new(Io::Mmsg));
        let text = example_config(app.sip, app.admin, &app.data_dir);
        std::fs::write(&app.config, text).expect("write config");
        if let Err(e) = app.spawn() {
            panic!("the shipped example did not start: {e:?}");
        }
        app
    }

    /// Starts an appliance, or returns `None` after printing why io_uring is skipped here.
    pub fn start(dir: &Path, setup: Setup) -> Option<Appliance> {
        match Self::try_start(dir, setup) {
            Ok(app) => Some(app),
            Err(StartError::UringUnavailable(why)) => {
                eprintln!("skipping the io_uring variant: {why}");
                None
            }
            Err(StartError::Failed(why)) => panic!("appliance did not start:\n{why}"),
        }
    }

    fn write_config(&self) {
        let s = &self.setup;
        let extra: String = s
            .extra_listen
            .iter()
            .map(|l| format!(", \"{l}\""))
            .collect();
        let listen = match (s.tcp, s.tls) {
            (false, false) if extra.is_empty() => format!("\"{}\"", self.sip),
            (tcp, tls) => format!(
                "[\"udp:{0}\"{1}{2}{extra}]",
                self.sip,
                if tcp {
                    format!(", \"tcp:{}\"", self.sip)
                } else {
                    String::new()
                },
                if tls {
                    format!(", \"tls:{}\"", self.tls)
                } else {
                    String::new()
                },
            ),
        };
        let mut toml = format!(
            "[server]\nlisten = {}\nshards = {}\nio = \"{}\"\npin_cores = false\nsocket_buffer = \"1MiB\"\n",
            listen,
            s.shards,
            s.io.config_value()
        );
        if s.persist {
            toml += &format!("data_dir = \"{}\"\n", self.data_dir.display());
        }
        if s.admin {
            toml += &format!("admin = \"{}\"\n", self.admin);
        }
        toml += &s.server_extra;
        toml += &format!("\n[registrar]\n{}\n", s.registrar);
        toml += &format!(
            "\n[auth]\nmode = \"{}\"\nrealm = \"e2e\"\n{}\n",
            s.auth, s.auth_extra
        );
        if s.tls {
            toml += "\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n";
        }
        toml += &format!("\n{}", s.extensions);
        std::fs::write(&self.config, toml).expect("write config");
    }

    /// Starts the process on the current configuration and waits until `/health` answers.
    fn spawn(&mut self) -> Result<(), StartError> {
        let mut command = match &self.setup.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = command
            .arg("--config")
            .arg(&self.config)
            .env_remove("SIPFORK_IO")
            .env_remove("RUST_LOG")
            .env("SIPFORK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sipfork");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        self.log = log;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // let the reader drain stderr
                let log = self.log();
                self.child = None;
                if log.contains("io_uring unavailable") {
                    return Err(StartError::UringUnavailable(log));
                }
                return Err(StartError::Failed(format!("exited with {status}:\n{log}")));
            }
            if !self.setup.admin {
                // No health endpoint: wait for the start-up log line instead.
                if self.log().contains("sipfork running") {
                    return Ok(());
                }
            } else if matches!(self.get("/health"), Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StartError::Failed(format!(
                    "not healthy within 15 s:\n{}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `GET path` on the admin listener.
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let (status, body) = sipfork::app::cli::http_get(self.admin, path)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// `GET path`, which must answer 200.
    pub fn get_ok(&self, path: &str) -> String {
        match self.get(path) {
            Ok((200, body)) => body,
            other => panic!("GET {path}: {other:?}\nlog:\n{}", self.log()),
        }
    }

    /// Sends `signal` (a `kill` name such as TERM, INT, KILL) and waits for the exit.
    pub fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        self.signal(signal);
        self.wait_exit(Duration::from_secs(10), signal)
    }

    /// Waits up to `within` for the process to exit (after SIG`signal`).
    pub fn wait_exit(&mut self, within: Duration, signal: &str) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {within:?} of SIG{signal}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        self.child = None;
        std::thread::sleep(Duration::from_millis(50)); // let the reader drain stderr
        status
    }

    /// Rewrites the configuration file with `change` applied, leaving the process alone (for
    /// a reload).
    pub fn rewrite_config(&mut self, change: impl FnOnce(&mut Setup)) {
        change(&mut self.setup);
        self.write_config();
    }

    /// Sends `signal` (a `kill` name such as HUP) without waiting for anything.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Waits up to `within` for the log to contain `needle` `times` times; false if it did not.
    pub fn wait_log(&self, needle: &str, times: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.log().matches(needle).count() < times {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Starts the process again on the same data directory (after a stop or a kill), with the
    /// configuration changed by `change` (e.g. another shard count).
    pub fn restart(&mut self, change: impl FnOnce(&mut Setup)) {
        assert!(self.child.is_none(), "stop it first");
        change(&mut self.setup);
        self.write_config();
        if let Err(e) = self.spawn() {
            panic!("restart failed: {e:?}");
        }
    }

    /// The sum of a metric's samples (any labels) on `/metrics`.
    pub fn metric_sum(&self, name: &str) -> u64 {
        let page = self.get_ok("/metrics");
        metric_sum(&page, name)
    }
}

/// The shipped `examples/sipfork.toml`, byte for byte except three values of `[server]`: `listen`
/// (a free port instead of 5060), `data_dir` (a scratch directory instead of
/// /tmp/sipfork-example) and `admin` (a free port instead of 8080), so that tests run in parallel
/// and beside a running example. Every other line (auth algorithms, extensions, passwords,
/// shards, io, ...) is as shipped.
pub fn example_config(sip: SocketAddr, admin: SocketAddr, data_dir: &Path) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sipfork.toml");
    let text = std::fs::read_to_string(path).expect("read examples/sipfork.toml");
    set_server_values(
        &text,
        &[
            ("listen", format!("\"{sip}\"")),
            ("data_dir", format!("\"{}\"", data_dir.display())),
            ("admin", format!("\"{admin}\"")),
        ],
    )
}

/// `text` with the value of each `key = value  # comment` line of `[server]` replaced (the
/// comment kept); panics unless each key is there exactly once.
pub fn set_server_values(text: &str, values: &[(&str, String)]) -> String {
    let mut section = "";
    let mut seen = vec![0; values.len()];
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            section = trimmed;
        }
        let replaced = (section.starts_with("[server]"))
            .then(|| {
                values.iter().enumerate().find_map(|(i, (key, value))| {
                    let rest = trimmed.strip_prefix(key)?.trim_start().strip_prefix('=')?;
                    seen[i] += 1;
                    let comment = rest.find(" #").map_or("", |at| &rest[at..]);
                    Some(format!("{key} = {value}{comment}"))
                })
            })
            .flatten();
        out += replaced.as_deref().unwrap_or(line);
        out.push('\n');
    }
    for ((key, _), n) in values.iter().zip(seen) {
        assert_eq!(n, 1, "[server] {key} appears {n} times");
    }
    out
}

/// Runs `sipfork --config CONFIG` expecting it to refuse to start: bounded by `timeout 15` (a
/// process that does start is killed then, and the test fails); returns its exit code and stderr.
pub fn run_expecting_refusal(config: &Path) -> (i32, String) {
    let out = Command::new("timeout")
        .args(["15", BIN, "--config"])
        .arg(config)
        .env_remove("SIPFORK_IO")
        .env_remove("RUST_LOG")
        .env("SIPFORK_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run sipfork");
    let code = out.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(
        code, 124,
        "it started instead of refusing (killed after 15 s):\n{stderr}"
    );
    (code, stderr)
}

/// Sum of every sample of `name` in a Prometheus page.
pub fn metric_sum(page: &str, name: &str) -> u64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Sum of the samples of `name` that carry `label` (such as `reason="call"`) in a Prometheus page.
pub fn metric_sum_where(page: &str, name: &str, label: &str) -> u64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('{'))
                .is_some_and(|labels| labels.split([',', '}']).any(|l| l == label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `sipfork_proxy_events_total` for one reason, summed over the shards.
pub fn proxy_event(page: &str, reason: &str) -> u64 {
    metric_sum_where(
        page,
        "sipfork_proxy_events_total",
        &format!("reason=\"{reason}\""),
    )
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `sipfork ARGS` to completion; returns exit code, stdout and stderr.
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("SIPFORK_IO")
        .output()
        .expect("run sipfork");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `test` once per I/O backend, each in its own scratch directory; the io_uring variant is
/// skipped with a printed reason where this machine has no io_uring.
pub fn each_backend(label: &str, setup: impl Fn(Io) -> Setup, test: impl Fn(&mut Appliance)) {
    for io in Io::BOTH {
        let dir = Scratch::new(&format!("{label}-{io:?}"));
        let Some(mut app) = Appliance::start(&dir.0, setup(io)) else {
            continue;
        };
        test(&mut app);
    }
}
