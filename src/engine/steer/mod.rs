//! Kernel steering: a reuseport program that delivers each datagram to the socket of the shard
//! that owns it ([`core::steer::wire_owner`]), so the shard that reads a datagram is the one
//! that handles it and the mailbox hand-off (a letter and a wake-up of another thread) is left
//! for what the program cannot read.
//!
//! The program ([`program`]) is hand-assembled eBPF, built at start-up with the shard count and
//! the configuration's DID widths patched in: no BPF toolchain at build time. It is loaded with
//! raw `bpf(2)` calls and attached to each listen address's reuseport group with
//! `SO_ATTACH_REUSEPORT_EBPF` (Linux ≥ 4.6; bounded loops need ≥ 5.3). When the kernel refuses
//! (no `CAP_BPF`/root, an old kernel, the verifier), [`attach`] says why and the engine runs as
//! without it: correctness never depends on the program.
//!
//! [`core::steer::wire_owner`]: crate::core::steer::wire_owner

pub mod program;

use std::fmt;
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::core::steer::WireParams;
use crate::engine::bpf;

/// Ethernet header the kernel strips from test-run input of socket filters.
const ETH_HLEN: usize = 14;

/// A loaded steering program (and its scratch map).
#[derive(Debug)]
pub struct Program {
    prog: OwnedFd,
    _map: OwnedFd,
    /// Instructions loaded.
    pub len: usize,
}

/// Why the program is not in use.
#[derive(Debug)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn refused(step: &str, e: &io::Error) -> Refused {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) => " (needs root or CAP_BPF + CAP_NET_ADMIN)",
        Some(libc::ENOSYS) => " (kernel without bpf(2))",
        Some(libc::EINVAL) => " (kernel too old for this program?)",
        _ => "",
    };
    Refused(format!("{step}: {e}{hint}"))
}

impl Program {
    /// Creates the scratch map and loads the program for `shards` shards.
    pub fn load(shards: u16, params: &WireParams) -> Result<Program, Refused> {
        let map = bpf::map_create(bpf::MAP_PERCPU_ARRAY, 4, program::VALUE_SIZE, 1, "sf_scan")
            .map_err(|e| refused("bpf map", &e))?;
        let insns = program::program(shards, params, map.as_raw_fd());
        let prog = bpf::prog_load(
            bpf::PROG_SOCKET_FILTER,
            &insns,
            c"MIT OR Apache-2.0",
            "sf_steer",
        )
        .map_err(|e| {
            let mut why = refused("bpf program", &e.error);
            if !e.verifier.is_empty() {
                why.0 += &format!("; verifier: {}", e.verifier);
            }
            why
        })?;
        Ok(Program {
            prog,
            _map: map,
            len: insns.len(),
        })
    }

    /// Makes this program choose the socket for every datagram of `socket`'s reuseport group.
    pub fn attach(&self, socket: &UdpSocket) -> Result<(), Refused> {
        let prog = self.prog.as_raw_fd();
        // SAFETY: passes a pointer to a live c_int and its size to setsockopt on an open socket.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_REUSEPORT_EBPF,
                (&prog as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(refused(
                "SO_ATTACH_REUSEPORT_EBPF",
                &io::Error::last_os_error(),
            ))
        }
    }

    /// Runs the program in the kernel on `datagram` (`BPF_PROG_TEST_RUN`): the socket index it
    /// picks, or `None` for no choice.
    pub fn test_run(&self, datagram: &[u8]) -> io::Result<Option<u16>> {
        let mut data = vec![0u8; ETH_HLEN];
        // An experimental EtherType: the kernel then parses no IP header out of the datagram.
        data[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        data.extend_from_slice(datagram);
        let retval = bpf::test_run(&self.prog, &data)?;
        Ok(match retval {
            program::NO_CHOICE => None,
            i => Some(i as u16),
        })
    }
}

/// Whether datagrams are steered in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SteeringState {
    /// Not asked for (`steering = "off"`, or one shard).
    Off,
    /// The program chooses the shard for every listen address.
    Kernel,
    /// Asked for but refused by the kernel: why.
    Unavailable(String),
}

impl SteeringState {
    /// The label of `sipfork_steering`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Kernel => "kernel",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// Loads the program for `shards` shards and attaches it to each group (one socket of each
/// listen address's group). With `params` `None` or one shard, nothing is done.
pub fn attach(groups: &[&UdpSocket], shards: u16, params: Option<&WireParams>) -> SteeringState {
    let Some(params) = params else {
        return SteeringState::Off;
    };
    if shards < 2 {
        return SteeringState::Off;
    }
    let attached = Program::load(shards, params)
        .and_then(|prog| groups.iter().try_for_each(|s| prog.attach(s)));
    match attached {
        Ok(()) => SteeringState::Kernel,
        Err(why) => SteeringState::Unavailable(why.0),
    }
}

#[cfg(test)]
mod tests;
