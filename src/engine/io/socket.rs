//! Listen sockets: one `SO_REUSEPORT` UDP socket per shard and listen address, so the kernel
//! spreads peers over the shards (a peer's 4-tuple always hashes to the same shard).
//!
//! Buffers are made large (the kernel drops on a full receive queue, and those drops are then
//! reported through `SO_RXQ_OVFL`, which is switched on here). As root, `SO_RCVBUFFORCE` /
//! `SO_SNDBUFFORCE` pass `net.core.rmem_max`; otherwise the plain options are capped by it.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Default socket buffer size asked for (each direction).
pub const SOCKET_BUFFER: usize = 8 << 20;

/// Binds a non-blocking, `SO_REUSEPORT` UDP socket on `addr` with [`SOCKET_BUFFER`] buffers and
/// `SO_RXQ_OVFL`. IPv6 sockets are v6-only so a v4 and a v6 listener can share a port.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<UdpSocket> {
    bind_reuseport_with(addr, SOCKET_BUFFER)
}

/// [`bind_reuseport`] with `buffer` bytes of receive and send buffer.
pub fn bind_reuseport_with(addr: SocketAddr, buffer: usize) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    set_buffer(&socket, libc::SO_RCVBUFFORCE, buffer)
        .or_else(|_| socket.set_recv_buffer_size(buffer))?;
    set_buffer(&socket, libc::SO_SNDBUFFORCE, buffer)
        .or_else(|_| socket.set_send_buffer_size(buffer))?;
    set_int(&socket, libc::SO_RXQ_OVFL, 1)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Why the listen sockets could not be bound: the address, the OS error, and what to do.
#[derive(Debug)]
pub struct BindError {
    /// The address that could not be bound.
    pub addr: SocketAddr,
    /// The OS error.
    pub error: io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot listen on UDP {}: {}{}",
            self.addr,
            self.error,
            bind_advice(&self.error, self.addr.port())
        )
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// What an operator can do about a failed `bind(2)` on a port (for start-up errors); empty when
/// there is nothing specific to say.
pub fn bind_advice(error: &io::Error, port: u16) -> String {
    match error.kind() {
        io::ErrorKind::AddrInUse => format!(
            " (another process holds this address, perhaps another sipfork: `ss -ulpn 'sport = :{port}'` \
             names it; stop it or choose another port)"
        ),
        io::ErrorKind::PermissionDenied if port >= 1024 => {
            " (refused by this host's security policy: check SELinux/AppArmor and the \
             unit's sandboxing, or choose another port)"
                .to_owned()
        }
        io::ErrorKind::PermissionDenied => format!(
            " (port {port} is below 1024: run as root or with the CAP_NET_BIND_SERVICE capability, \
             e.g. `setcap cap_net_bind_service=+ep` on the binary or AmbientCapabilities= in the \
             systemd unit, or choose a port of 1024 or more)"
        ),
        io::ErrorKind::AddrNotAvailable => {
            " (no interface of this host has that IP address; listen on one of its addresses)"
                .to_owned()
        }
        _ => String::new(),
    }
}

/// Refuses to join a `SO_REUSEPORT` group that another process already owns: binds a plain
/// socket (no `SO_REUSEPORT`) on `addr` and closes it again. That bind fails with `EADDRINUSE`
/// while anything holds the address, reuseport or not, whereas a reuseport socket of the same
/// user would silently join the group and take a share of its traffic. Port 0 needs no probe.
pub fn probe_unshared(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())
}

/// Binds `shards` sockets on each address in `listen`, all sharing the port, with `buffer` bytes
/// of socket buffer: when an address has port 0 the first socket picks the port and the others
/// join it. Each address is first probed ([`probe_unshared`]), so a second process asking for a
/// port already served is refused instead of joining its group. Returns one `Vec` per shard, in
/// the order of `listen`.
pub fn bind_shard_sockets(
    listen: &[SocketAddr],
    shards: usize,
    buffer: usize,
) -> Result<Vec<Vec<UdpSocket>>, BindError> {
    let mut per_shard: Vec<Vec<UdpSocket>> = (0..shards).map(|_| Vec::new()).collect();
    for &addr in listen {
        let failed = |error| BindError { addr, error };
        probe_unshared(addr).map_err(failed)?;
        let mut bound = addr;
        for sockets in per_shard.iter_mut() {
            let socket = bind_reuseport_with(bound, buffer).map_err(failed)?;
            bound = socket.local_addr().map_err(failed)?;
            sockets.push(socket);
        }
    }
    Ok(per_shard)
}

fn set_buffer(socket: &Socket, option: libc::c_int, size: usize) -> io::Result<()> {
    set_int(socket, option, i32::try_from(size).unwrap_or(i32::MAX))
}

fn set_int(socket: &Socket, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size to setsockopt on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_share_one_port_and_get_large_buffers() {
        let listen = ["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
        let per_shard = match bind_shard_sockets(&listen, 3, SOCKET_BUFFER) {
            Ok(s) => s,
            Err(e) if e.error.kind() == io::ErrorKind::AddrNotAvailable => {
                eprintln!("skipping: no ::1 here ({e})");
                return;
            }
            Err(e) => panic!("bind: {e}"),
        };
        assert_eq!(per_shard.len(), 3);
        for (i, addr) in listen.iter().enumerate() {
            let ports: Vec<u16> = per_shard
                .iter()
                .map(|s| s[i].local_addr().unwrap().port())
                .collect();
            assert_ne!(ports[0], 0);
            assert!(ports.iter().all(|&p| p == ports[0]), "{addr}: {ports:?}");
        }
        let socket = Socket::from(per_shard[0][0].try_clone().unwrap());
        // The kernel doubles the value; without root the cap is rmem_max, so only ask for "large".
        assert!(socket.recv_buffer_size().unwrap() >= 200_000);
    }

    #[test]
    fn a_second_group_on_a_served_port_is_refused_naming_the_address() {
        let first = bind_shard_sockets(&["127.0.0.1:0".parse().unwrap()], 2, 1 << 16).unwrap();
        let addr = first[0][0].local_addr().unwrap();
        // Without the probe this would join the group and take half of the traffic.
        let err = bind_shard_sockets(&[addr], 2, 1 << 16).unwrap_err();
        assert_eq!(err.addr, addr);
        assert_eq!(err.error.kind(), io::ErrorKind::AddrInUse, "{err}");
        let text = err.to_string();
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(text.contains("another port"), "{text}");
        // Once the first group is gone the port is free again.
        drop(first);
        bind_shard_sockets(&[addr], 2, 1 << 16).expect("the port is free again");
    }

    #[test]
    fn advice_names_the_capability_for_low_ports() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let text = bind_advice(&denied, 80);
        assert!(text.contains("CAP_NET_BIND_SERVICE"), "{text}");
        assert!(text.contains("1024"), "{text}");
        assert_eq!(
            bind_advice(&io::Error::from(io::ErrorKind::Other), 5060),
            ""
        );
    }
}
