//! Two network namespaces joined by a veth pair, made by the test and removed on drop: the proxy
//! in one, the harness in the other (the network rules: no traffic leaves them). Also included by
//! the root crate's `tests/e2e.rs` (the SIPp forking test on `io = "xdp"`), so nothing here may
//! name this crate.

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

/// Runs `f` on a thread of its own inside namespace `ns` (threads and processes it starts are
/// there too) and returns its result.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter(&ns).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

/// Why AF_XDP cannot be tested here (not root, no ip(8), no `socket(AF_XDP)`), if it cannot.
pub fn xdp_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("creating namespaces and attaching XDP needs root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("ip(8) (iproute2) is not installed".into());
    }
    // SAFETY: socket() takes no pointers; the descriptor is closed at once.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Some(format!(
            "socket(AF_XDP): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: closing the descriptor just opened.
    unsafe { libc::close(fd) };
    None
}
