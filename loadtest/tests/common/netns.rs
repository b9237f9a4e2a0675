//! Two network namespaces joined by a veth pair, made by the test and removed on drop: the proxy
//! in one, the harness in the other (the network rules: no traffic leaves them).

use std::os::fd::AsRawFd;
use std::process::Command;

/// Runs ip(8) with `args`; its stderr on failure.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The namespaces `{tag}p` (proxy, veth end `dev`) and `{tag}h` (harness).
pub struct Namespaces {
    pub proxy: String,
    pub harness: String,
    /// The proxy's end of the veth pair.
    pub dev: String,
}

impl Namespaces {
    /// Creates both namespaces and the pair (`queues` rx/tx queues per end when given), with
    /// `{v4}.1/24` and `{v6}::1/64` on the proxy's end, `.2` and `::2` on the harness's.
    pub fn create(
        tag: &str,
        queues: Option<u16>,
        v4: &str,
        v6: &str,
    ) -> Result<Namespaces, String> {
        let ns = Namespaces {
            proxy: format!("{tag}p"),
            harness: format!("{tag}h"),
            dev: format!("{tag}a"),
        };
        let b = format!("{tag}b");
        ip(&["netns", "add", &ns.proxy])?;
        ip(&["netns", "add", &ns.harness])?;
        let q = queues.map(|q| q.to_string());
        let mut link = vec!["link", "add", &ns.dev];
        if let Some(q) = &q {
            link.extend(["numtxqueues", q, "numrxqueues", q]);
        }
        link.extend(["type", "veth", "peer", "name", &b]);
        if let Some(q) = &q {
            link.extend(["numtxqueues", q, "numrxqueues", q]);
        }
        ip(&link)?;
        ip(&["link", "set", &ns.dev, "netns", &ns.proxy])?;
        ip(&["link", "set", &b, "netns", &ns.harness])?;
        for (n, dev, end) in [(&ns.proxy, &ns.dev, 1), (&ns.harness, &b, 2)] {
            ip(&["-n", n, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                n,
                "addr",
                "add",
                &format!("{v4}.{end}/24"),
                "dev",
                dev,
            ])?;
            let v6addr = format!("{v6}::{end}/64");
            ip(&["-n", n, "-6", "addr", "add", &v6addr, "dev", dev, "nodad"])?;
            ip(&["-n", n, "link", "set", dev, "up"])?;
        }
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the pair.
        let _ = ip(&["netns", "del", &self.proxy]);
        let _ = ip(&["netns", "del", &self.harness]);
    }
}

/// Moves the calling thread into network namespace `name` (threads it starts inherit it).
pub fn enter(name: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{name}"))?;
    // SAFETY: setns on an open namespace file descriptor; affects only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The `sipfork-load` binary in the harness's namespace: 30 fork3 calls with digest at 100/s to
/// `target`, its sockets on `local`, result files in `dir` as `label`.
pub fn run_fork3_from_harness(
    ns: &Namespaces,
    target: std::net::SocketAddr,
    local: &str,
    label: &str,
    dir: &std::path::Path,
) -> std::process::Output {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.harness,
            env!("CARGO_BIN_EXE_sipfork-load"),
        ])
        .args(["run", "--preset", "fork3", "--extensions", "10"])
        .args([
            "--rate",
            "100",
            "--duration",
            "0.3",
            "--max",
            "30",
            "--digest",
        ])
        .args(["--target", &target.to_string(), "--local-ip", local])
        .args(["--proxy-pid", "none", "--quiet", "--label", label])
        .arg("--out")
        .arg(dir)
        .output()
        .expect("sipfork-load runs")
}
