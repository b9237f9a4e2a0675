//! Scale-out (issue 18): three sipfork nodes on 127.0.0.1/.2/.3 sharing one directory on a real
//! Redis Cluster (3 masters + 3 replicas on 127.0.0.1:7000-7005), all inside a network namespace
//! the test creates (only loopback). Skipped with a reason where `redis-server`/`redis-cli` are
//! missing or namespaces cannot be made.
//!
//! What it shows, in one run: devices of extension 1001 on two nodes both ring for a call at
//! either node, the first answer wins and the other is cancelled; a follow-me stage at one node
//! rings and, when it ends, cancels the device on another node; a registration on one node is
//! visible on another within 1 s; `/extensions/1001/devices` lists the devices of every node,
//! marked by node; `kill -9` of a node: calls still ring the remaining device at once (no 408),
//! and within `ttl` the dead node is gone from the directory; a Redis master killed: calls keep
//! working and a new registration still reaches the other nodes once the replica took over;
//! all of Redis gone: the directory is reported stale, and calls still ring local devices (and
//! the other nodes' devices from the last cache, until their records would have expired).

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sipfork::sip::build::{self, Reply, ViaFix};

use crate::harness::{Scratch, BIN};
use crate::netns;

const TTL: u64 = 6;
const SECRET: &str = "e2e-cluster-secret-0123456789";
const REDIS_PORTS: [u16; 6] = [7000, 7001, 7002, 7003, 7004, 7005];

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A child process killed (SIGKILL) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts six cluster-enabled redis-servers and joins them into 3 masters + 3 replicas.
fn start_redis_cluster(dir: &Path) -> Vec<Proc> {
    let mut procs = Vec::new();
    for port in REDIS_PORTS {
        let d = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&d).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--appendonly",
                "no",
                "--save",
                "",
                "--dir",
                d.to_str().unwrap(),
                "--daemonize",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        procs.push(Proc(child));
    }
    for port in REDIS_PORTS {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis_cli(&["-p", &port.to_string(), "ping"]).contains("PONG") {
            assert!(Instant::now() < deadline, "redis {port} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let addrs: Vec<String> = REDIS_PORTS
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let mut args = vec!["--cluster", "create"];
    args.extend(addrs.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
    let out = Command::new("redis-cli").args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "redis-cli --cluster create: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_cluster_ok(Duration::from_secs(20));
    procs
}

fn wait_cluster_ok(within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let ok = REDIS_PORTS.iter().all(|p| {
            let info = redis_cli(&["-p", &p.to_string(), "cluster", "info"]);
            info.contains("cluster_state:ok") || info.is_empty()
        });
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "the Redis Cluster is not ok");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One sipfork node.
struct Node {
    proc: Option<Proc>,
    sip: SocketAddr,
    admin: SocketAddr,
    log: std::path::PathBuf,
}

impl Node {
    fn start(dir: &Path, name: &str, ip: &str, peers: &[&str]) -> Node {
        let sip: SocketAddr = format!("{ip}:5060").parse().unwrap();
        let admin: SocketAddr = format!("{ip}:8080").parse().unwrap();
        let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}/32\"")).collect();
        let config = format!(
            "[server]\nlisten = \"{sip}\"\nadmin = \"{admin}\"\nshards = 2\nio = \"mmsg\"\npin_cores = false\n\
             socket_buffer = \"1MiB\"\n\n[auth]\nmode = \"none\"\n\n[[extensions]]\nnumbers = \"1000-1999\"\n\n\
             [cluster]\nnode = \"{name}\"\nadvertise = \"{sip}\"\n\
             redis = [\"redis://127.0.0.1:7000\", \"redis://127.0.0.1:7001\", \"redis://127.0.0.1:7002\"]\n\
             peers = [{}]\nsecret = \"{SECRET}\"\nttl = {TTL}\n\n\
             [[followme]]\nextension = \"1500\"\nstages = [{{ targets = [\"self\"], ring = 2 }}]\n",
            peers.join(", ")
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .env("SIPFORK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sipfork");
        let node = Node {
            proc: Some(Proc(child)),
            sip,
            admin,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !matches!(node.get("/health"), Some((200, _))) {
            assert!(
                Instant::now() < deadline,
                "{name} not healthy:\n{}",
                node.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        node
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        sipfork::app::cli::http_get(self.admin, path)
            .ok()
            .map(|(s, b)| (s, String::from_utf8_lossy(&b).into_owned()))
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).expect("admin answers");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metric(&self, name: &str) -> u64 {
        let (_, page) = self.get("/metrics").expect("metrics");
        crate::harness::metric_sum(&page, name)
    }

    fn kill9(&mut self) {
        self.proc.take();
    }
}

/// A scripted UDP endpoint (a phone, or the caller).
struct Ua {
    socket: UdpSocket,
    addr: SocketAddr,
}

impl Ua {
    fn new(ip: &str) -> Ua {
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        let addr = socket.local_addr().unwrap();
        Ua { socket, addr }
    }

    fn send(&self, to: SocketAddr, text: &[u8]) {
        self.socket.send_to(text, to).unwrap();
    }

    /// The next datagram whose first line starts with `start`, within `within`.
    fn recv(&self, start: &str, within: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 65_535];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let Ok((n, from)) = self.socket.recv_from(&mut buf) else {
                return None;
            };
            if buf[..n].starts_with(start.as_bytes()) {
                return Some((buf[..n].to_vec(), from));
            }
        }
    }

    fn register(&self, node: &Node, ext: &str) {
        let text = format!(
            "REGISTER sip:{ip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-r-{port};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{ext}@{ip}>;tag=r1\r\nTo: <sip:{ext}@{ip}>\r\n\
             Call-ID: reg-{port}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{ext}@{me}>\r\nExpires: 600\r\n\
             Content-Length: 0\r\n\r\n",
            ip = node.sip.ip(),
            me = self.addr,
            port = self.addr.port(),
        );
        self.send(node.sip, text.as_bytes());
        let (r, _) = self
            .recv("SIP/2.0 200", Duration::from_secs(3))
            .expect("200 to REGISTER");
        assert!(!r.is_empty());
    }

    fn reply(&self, req: &[u8], to: SocketAddr, status: u16, reason: &str) {
        let msg = sipfork::sip::parse(req).expect("request parses");
        let mut out = Vec::new();
        let contact = format!("Contact: <sip:dev@{}>\r\n", self.addr);
        let tag = format!("dev{}", self.addr.port());
        build::response(
            &msg,
            &Reply {
                status,
                reason,
                fix: ViaFix::default(),
                to_tag: Some(tag.as_bytes()),
                extra: contact.as_bytes(),
                body: None,
            },
            &mut out,
        );
        self.send(to, &out);
    }
}

fn invite(caller: &Ua, node: &Node, call_id: &str) -> String {
    invite_to(caller, node, call_id, "1001")
}

fn invite_to(caller: &Ua, node: &Node, call_id: &str, number: &str) -> String {
    format!(
        "INVITE sip:{number}@{node} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{ip}>;tag=c-{call_id}\r\nTo: <sip:{number}@{ip}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{me}>\r\nContent-Length: 0\r\n\r\n",
        node = node.sip,
        ip = node.sip.ip(),
        me = caller.addr,
    )
}

/// A call at `entry` that must ring every device in `ring` (each answers 180); `winner`
/// answers 200 and every other ringing device must get a CANCEL. Returns how long the caller
/// waited for its 200.
fn call(entry: &Node, caller: &Ua, ring: &[&Ua], winner: usize, call_id: &str) -> Duration {
    let started = Instant::now();
    caller.send(entry.sip, invite(caller, entry, call_id).as_bytes());
    let mut invites = Vec::new();
    for d in ring {
        let (inv, from) = d
            .recv("INVITE", Duration::from_secs(3))
            .unwrap_or_else(|| panic!("{call_id}: device {} did not ring", d.addr));
        d.reply(&inv, from, 180, "Ringing");
        invites.push((inv, from));
    }
    caller
        .recv("SIP/2.0 180", Duration::from_secs(3))
        .expect("180 reached the caller");
    let (inv, from) = &invites[winner];
    ring[winner].reply(inv, *from, 200, "OK");
    caller
        .recv("SIP/2.0 200", Duration::from_secs(3))
        .expect("200 reached the caller");
    let waited = started.elapsed();
    for (i, d) in ring.iter().enumerate() {
        if i == winner {
            continue;
        }
        let (cancel, from) = d
            .recv("CANCEL", Duration::from_secs(3))
            .unwrap_or_else(|| panic!("{call_id}: device {} not cancelled", d.addr));
        d.reply(&cancel, from, 200, "OK");
        d.reply(&invites[i].0, invites[i].1, 487, "Request Terminated");
    }
    waited
}

/// Polls `cond` every 20 ms up to `within`; returns how long it took.
fn within(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

fn remote_extensions(n: &Node) -> u64 {
    n.json("/cluster")["remote_extensions"].as_u64().unwrap()
}

#[test]
fn nodes_share_a_directory_on_redis_cluster_and_fork_across_nodes() {
    if !netns::inside() {
        for tool in ["redis-server", "redis-cli"] {
            if !have(tool) {
                eprintln!("skipping the cluster test: {tool} is missing (scripts/install-deps.sh installs it)");
                return;
            }
        }
        netns::run_inside(
            "cluster",
            "cluster::nodes_share_a_directory_on_redis_cluster_and_fork_across_nodes",
            &[],
        );
        return;
    }
    let scratch = Scratch::new("cluster");
    let dir = &scratch.0;
    let _redis = start_redis_cluster(dir);
    let n1 = Node::start(dir, "n1", "127.0.0.1", &["127.0.0.2", "127.0.0.3"]);
    let mut n2 = Node::start(dir, "n2", "127.0.0.2", &["127.0.0.1", "127.0.0.3"]);
    let n3 = Node::start(dir, "n3", "127.0.0.3", &["127.0.0.1", "127.0.0.2"]);
    within(Duration::from_secs(10), "three live nodes", || {
        n1.json("/cluster")["nodes"].as_array().unwrap().len() == 3
    });

    let d1 = Ua::new("127.0.0.1");
    let d2 = Ua::new("127.0.0.2");
    let caller = Ua::new("127.0.0.1");
    d1.register(&n1, "1001");
    let started = Instant::now();
    d2.register(&n2, "1001");
    within(
        Duration::from_secs(1),
        "n2's registration visible on n1",
        || remote_extensions(&n1) == 1,
    );
    eprintln!(
        "a registration on n2 was visible on n1 after {:?}",
        started.elapsed()
    );
    within(
        Duration::from_secs(1),
        "n1's registration visible on n2",
        || remote_extensions(&n2) == 1,
    );

    // A call at either node rings both devices; the first answer wins, the other is cancelled.
    call(&n1, &caller, &[&d1, &d2], 1, "call-at-n1");
    call(&n2, &caller, &[&d1, &d2], 0, "call-at-n2");
    assert_eq!(n1.metric("sipfork_cluster_branches_total"), 1);
    assert_eq!(n2.metric("sipfork_cluster_marks_accepted_total"), 1);
    assert_eq!(n1.metric("sipfork_cluster_marks_accepted_total"), 1);

    // Follow-me across nodes: 1500's only stage (`self`, 2 s) at n1 rings its device on n2,
    // and the stage's end cancels it there.
    let d5 = Ua::new("127.0.0.2");
    d5.register(&n2, "1500");
    within(Duration::from_secs(1), "1500 on n2 visible on n1", || {
        remote_extensions(&n1) == 2
    });
    let started = Instant::now();
    caller.send(
        n1.sip,
        invite_to(&caller, &n1, "followme", "1500").as_bytes(),
    );
    let (inv, from) = d5
        .recv("INVITE", Duration::from_secs(3))
        .expect("the follow-me stage rang the device on n2");
    assert_eq!(from, n2.sip, "rung by its own node");
    d5.reply(&inv, from, 180, "Ringing");
    let (cancel, from) = d5
        .recv("CANCEL", Duration::from_secs(4))
        .expect("the stage's end cancelled the device on n2");
    let stage = started.elapsed();
    assert!(stage >= Duration::from_millis(1900), "{stage:?}");
    d5.reply(&cancel, from, 200, "OK");
    d5.reply(&inv, from, 487, "Request Terminated");
    eprintln!("follow-me: the device on n2 was cancelled {stage:?} after the call (stage 2 s)");
    // Its 180 reached the caller, then the final answer of a sequence nobody took.
    caller
        .recv("SIP/2.0 4", Duration::from_secs(3))
        .expect("a final answer after the last stage");
    assert_eq!(n1.metric("sipfork_cluster_branches_total"), 2);

    // The devices of every node, marked by node; n3 holds none of them (asked at n3 once
    // both registrations reached its cache, which takes well under a second).
    let mut view = serde_json::Value::Null;
    within(
        Duration::from_secs(1),
        "both holders in n3's directory",
        || {
            view = n3.json("/extensions/1001/devices");
            view["devices"].as_array().unwrap().len() == 2
        },
    );
    let nodes: Vec<&str> = view["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["node"].as_str().unwrap())
        .collect();
    assert!(nodes.contains(&"n1") && nodes.contains(&"n2"), "{view}");

    // kill -9 of n2: a call at n1 still rings d1 at once and is answered (no 408 delay).
    n2.kill9();
    let waited = call(&n1, &caller, &[&d1], 0, "after-kill");
    assert!(waited < Duration::from_secs(1), "{waited:?}");
    let took = within(
        Duration::from_secs(TTL + 2),
        "n2 gone from the directory within ttl",
        || n1.json("/cluster")["nodes"].as_array().unwrap().len() == 2,
    );
    eprintln!("the dead node left n1's directory after {took:?} (ttl {TTL} s)");
    let branches = n1.metric("sipfork_cluster_branches_total");
    call(&n1, &caller, &[&d1], 0, "after-ttl");
    assert_eq!(
        n1.metric("sipfork_cluster_branches_total"),
        branches,
        "no branch to the dead node"
    );

    // Kill a Redis master: calls keep working, and once its replica took over a new
    // registration (d3 on n3) reaches n1 and rings there.
    let victim = REDIS_PORTS
        .iter()
        .copied()
        .find(|p| redis_cli(&["-p", &p.to_string(), "role"]).starts_with("master"))
        .expect("a master");
    let idx = REDIS_PORTS.iter().position(|p| *p == victim).unwrap();
    let mut redis = _redis;
    let killed = redis.remove(idx);
    drop(killed);
    call(&n1, &caller, &[&d1], 0, "master-killed");
    let d3 = Ua::new("127.0.0.3");
    d3.register(&n3, "1001");
    let took = within(
        Duration::from_secs(TTL + 10),
        "d3's registration visible on n1 after the failover",
        || remote_extensions(&n1) == 1,
    );
    eprintln!("after killing master {victim}: n3's registration visible on n1 after {took:?}");
    call(&n1, &caller, &[&d1, &d3], 1, "after-failover");
    // The replica took over (the cluster is whole again) and the directory still serves.
    wait_cluster_ok(Duration::from_secs(15));
    call(&n3, &caller, &[&d1, &d3], 0, "after-promotion");
    let status = n1.json("/cluster");
    assert_eq!(status["redis"]["up"], true, "{status}");

    // Redis gone altogether: the directory is reported stale, local devices still ring.
    drop(redis);
    let took = within(
        Duration::from_secs(8),
        "n1 reports a stale directory",
        || n1.json("/cluster")["directory"]["stale"] == true,
    );
    eprintln!("with Redis down, n1 reported its directory stale after {took:?}");
    assert_eq!(n1.metric("sipfork_cluster_directory_stale"), 1);
    call(&n1, &caller, &[&d1, &d3], 0, "redis-down");
    within(
        Duration::from_secs(5),
        "the stale directory in n1's log",
        || n1.log().contains("cluster directory stale"),
    );
}
