//! Start-up checks for `io = "xdp"`: privileges, locked-memory limit, the interface and its queue
//! count. Each failure names exactly what is missing (the messages are documented in
//! `docs/xdp.md`).

use std::io;

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process (`CapEff` of `/proc/thread-self/status`: capabilities are per thread).
pub fn effective_caps() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| io::Error::other("no CapEff line in /proc/self/status"))
}

/// The capabilities AF_XDP needs that `caps` lacks, by name.
pub fn missing_caps(caps: u64) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_NET_RAW) {
        missing.push("CAP_NET_RAW");
    }
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    missing
}

/// Whether `caps` lets the process lock memory beyond RLIMIT_MEMLOCK.
pub fn can_lock_memory(caps: u64) -> bool {
    caps & (1u64 << CAP_IPC_LOCK) != 0
}

/// The soft RLIMIT_MEMLOCK in bytes (`u64::MAX` for unlimited).
pub fn memlock_limit() -> u64 {
    // SAFETY: all-zero is a valid rlimit, filled by getrlimit.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `r` is a live rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return 0;
    }
    if r.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        r.rlim_cur
    }
}

/// Checks privileges and the locked-memory budget for `umem_bytes` of UMEM in all.
pub fn privileges(caps: u64, memlock: u64, umem_bytes: u64) -> Result<(), String> {
    let missing = missing_caps(caps);
    if !missing.is_empty() {
        return Err(format!(
            "io = \"xdp\" needs CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF (or root); missing: {}",
            missing.join(", ")
        ));
    }
    if !can_lock_memory(caps) && memlock < umem_bytes {
        return Err(format!(
            "io = \"xdp\" locks {umem_bytes} bytes of UMEM but RLIMIT_MEMLOCK is {memlock} bytes \
             and CAP_IPC_LOCK is missing (raise it, e.g. systemd LimitMEMLOCK=infinity)"
        ));
    }
    Ok(())
}

/// The interface's index, or why it cannot be used.
pub fn ifindex(name: &str) -> Result<u32, String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("bad interface name {name:?}"))?;
    // SAFETY: a NUL-terminated string that lives across the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(format!(
            "interface {name:?} not found: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(i)
}

/// `struct ifreq`: the name and a 24-byte union (an address, an int, or a pointer).
#[repr(C, align(8))]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

/// Runs interface ioctl `req` on `name` with `fill` preparing the union; returns the union.
/// Through a socket of the calling thread's network namespace (so it sees the interfaces a
/// `setns` thread sees, unlike `/sys/class/net`, which shows the mounting namespace's).
fn ifreq(name: &str, req: libc::c_ulong, fill: impl FnOnce(&mut [u8; 24])) -> io::Result<[u8; 24]> {
    if name.len() >= 16 {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    let mut r = IfReq {
        name: [0; 16],
        data: [0; 24],
    };
    r.name[..name.len()].copy_from_slice(name.as_bytes());
    fill(&mut r.data);
    // SAFETY: socket() takes no pointers; the result is checked and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `r` is a live ifreq; for SIOCETHTOOL its pointer names a buffer the caller keeps
    // alive across this call.
    let rc = unsafe { libc::ioctl(fd, req as _, &mut r as *mut IfReq) };
    let e = io::Error::last_os_error();
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(e);
    }
    Ok(r.data)
}

const SIOCGIFHWADDR: libc::c_ulong = 0x8927;
const SIOCGIFMTU: libc::c_ulong = 0x8921;
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// Receive and transmit queue counts of the interface (ethtool channels: combined plus
/// dedicated). A driver without channel reporting has one queue each way.
pub fn queues(name: &str) -> Result<(usize, usize), String> {
    // struct ethtool_channels: cmd, max_rx, max_tx, max_other, max_combined, rx_count,
    // tx_count, other_count, combined_count.
    let mut ch = [0u32; 9];
    ch[0] = ETHTOOL_GCHANNELS;
    let ptr = ch.as_mut_ptr() as u64;
    match ifreq(name, SIOCETHTOOL, |d| {
        d[..8].copy_from_slice(&ptr.to_ne_bytes())
    }) {
        Ok(_) => Ok(((ch[5] + ch[8]) as usize, (ch[6] + ch[8]) as usize)),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok((1, 1)),
        Err(e) => Err(format!("reading the queue count of {name}: {e}")),
    }
}

/// Each shard binds its own queue: fewer queues than shards is an error naming both numbers.
pub fn enough_queues(name: &str, rx: usize, tx: usize, shards: usize) -> Result<(), String> {
    let q = rx.min(tx);
    if q < shards {
        return Err(format!(
            "interface {name} has {q} queue(s) ({rx} receive, {tx} transmit) but shards = \
             {shards}: each shard binds its own queue (raise the queue count, e.g. \
             `ethtool -L {name} combined {shards}`, or lower shards)"
        ));
    }
    Ok(())
}

/// The interface's MAC address.
pub fn mac(name: &str) -> Result<[u8; 6], String> {
    let d = ifreq(name, SIOCGIFHWADDR, |_| {})
        .map_err(|e| format!("reading the address of {name}: {e}"))?;
    // struct sockaddr: family (u16), then the address bytes.
    if u16::from_ne_bytes([d[0], d[1]]) != 1 {
        return Err(format!(
            "interface {name} is not Ethernet (ARPHRD {})",
            u16::from_ne_bytes([d[0], d[1]])
        ));
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&d[2..8]);
    Ok(mac)
}

/// The interface's MTU.
pub fn mtu(name: &str) -> Result<usize, String> {
    let d =
        ifreq(name, SIOCGIFMTU, |_| {}).map_err(|e| format!("reading the MTU of {name}: {e}"))?;
    Ok(i32::from_ne_bytes([d[0], d[1], d[2], d[3]]).max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_capabilities_are_named() {
        let all =
            (1u64 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW) | (1 << CAP_BPF) | (1 << CAP_IPC_LOCK);
        assert!(missing_caps(all).is_empty());
        assert!(missing_caps(u64::MAX).is_empty());
        assert_eq!(missing_caps(all & !(1 << CAP_NET_RAW)), ["CAP_NET_RAW"]);
        let sys_admin_instead = (all & !(1 << CAP_BPF)) | (1 << CAP_SYS_ADMIN);
        assert!(missing_caps(sys_admin_instead).is_empty());
        assert_eq!(missing_caps(0), ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF"]);
        let e = privileges(all & !(1 << CAP_NET_ADMIN), u64::MAX, 1).unwrap_err();
        assert!(e.ends_with("missing: CAP_NET_ADMIN"), "{e}");
    }

    #[test]
    fn memlock_is_checked_only_without_cap_ipc_lock() {
        let base = (1u64 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW) | (1 << CAP_BPF);
        let e = privileges(base, 8 << 20, 16 << 20).unwrap_err();
        assert!(e.contains("RLIMIT_MEMLOCK is 8388608 bytes"), "{e}");
        assert!(privileges(base, 32 << 20, 16 << 20).is_ok());
        assert!(privileges(base | (1 << CAP_IPC_LOCK), 0, 16 << 20).is_ok());
    }

    #[test]
    fn too_few_queues_names_both_numbers() {
        let e = enough_queues("veth0", 1, 1, 2).unwrap_err();
        assert!(
            e.contains("has 1 queue(s)") && e.contains("shards = 2"),
            "{e}"
        );
        assert!(enough_queues("veth0", 4, 2, 2).is_ok());
    }
}
