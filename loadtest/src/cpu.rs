//! CPU time of processes, the way DECISIONS.md measures it: the sum of every thread's
//! `sum_exec_runtime` from `/proc/PID/task/*/schedstat` (tick-based `/proc/stat` accounting is
//! wrong on these VMs), and finding the processes of a proxy from the UDP port it holds (every
//! PID with the socket open, plus their descendants, as the anchors' scripts do).

use std::fs;
use std::net::{IpAddr, SocketAddr};

/// Nanoseconds of CPU used so far by every thread of `pid` (0 if it is gone).
pub fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU of a set of processes.
pub fn cpu_ns(pids: &[u32]) -> u64 {
    pids.iter().map(|&p| process_cpu_ns(p)).sum()
}

/// The `/proc/net/udp` spelling of an IPv4 socket address (`0100007F:13C4`).
fn proc_net_udp_key(addr: SocketAddr) -> Option<String> {
    match addr.ip() {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            let le = u32::from_le_bytes(o);
            Some(format!("{le:08X}:{:04X}", addr.port()))
        }
        IpAddr::V6(_) => None,
    }
}

/// Socket inodes bound to `addr` (several with `SO_REUSEPORT`).
pub fn udp_inodes(addr: SocketAddr) -> Vec<u64> {
    let Some(key) = proc_net_udp_key(addr) else {
        return Vec::new();
    };
    let Ok(table) = fs::read_to_string("/proc/net/udp") else {
        return Vec::new();
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.get(1) == Some(&key.as_str())).then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every process holding a UDP socket bound to `addr`, plus their descendants, sorted.
pub fn pids_holding(addr: SocketAddr) -> Vec<u32> {
    let inodes = udp_inodes(addr);
    if inodes.is_empty() {
        return Vec::new();
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let pids = all_pids();
    let mut holders: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|pid| {
            fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    fs::read_link(fd.path())
                        .is_ok_and(|l| wanted.iter().any(|w| l.as_os_str() == w.as_str()))
                })
            })
        })
        .collect();
    with_descendants(&mut holders, &pids);
    holders
}

/// Adds every descendant of the PIDs in `set` (among `all`), sorted and deduplicated.
pub fn with_descendants(set: &mut Vec<u32>, all: &[u32]) {
    let parents: Vec<(u32, u32)> = all
        .iter()
        .filter_map(|&p| Some((p, parent_of(p)?)))
        .collect();
    loop {
        let before = set.len();
        for &(child, parent) in &parents {
            if set.contains(&parent) && !set.contains(&child) {
                set.push(child);
            }
        }
        if set.len() == before {
            break;
        }
    }
    set.sort_unstable();
    set.dedup();
}

/// Idle time of the whole machine so far, seconds (`/proc/stat` idle + iowait: exact on these
/// VMs, unlike the busy counters), and the number of CPUs.
pub fn machine_idle_s() -> Option<(f64, usize)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let mut lines = stat.lines();
    let total: Vec<u64> = lines
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let cpus = lines.filter(|l| l.starts_with("cpu")).count().max(1);
    let idle = total.get(3)? + total.get(4).copied().unwrap_or(0);
    // SAFETY: sysconf with a valid name takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((idle as f64 / hz, cpus))
}

/// System-wide UDP receive-buffer drops so far (`/proc/net/snmp` `Udp: RcvbufErrors`).
pub fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let i = names.iter().position(|&n| n == "RcvbufErrors")?;
    values.get(i)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn our_own_socket_and_cpu_are_found() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        assert_eq!(
            proc_net_udp_key("127.0.0.1:5060".parse().unwrap()).unwrap(),
            "0100007F:13C4"
        );
        let pids = pids_holding(addr);
        assert!(pids.contains(&std::process::id()), "{pids:?}");
        // The kernel folds a running thread's time into schedstat at ticks and switches, so
        // burn CPU until it shows (bounded: a reading that never moves fails the test).
        let before = process_cpu_ns(std::process::id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut x = 0u64;
        while process_cpu_ns(std::process::id()) <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "schedstat never moved"
            );
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
        assert_eq!(process_cpu_ns(u32::MAX), 0);
        assert!(udp_rcvbuf_errors().is_some());
    }
}
