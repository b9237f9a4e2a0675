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

pub mod asm;
pub mod program;

use std::fmt;
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::core::steer::WireParams;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// Ethernet header the kernel strips from test-run input of socket filters.
const ETH_HLEN: usize = 14;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
}

/// `bpf(cmd, attr)`; the new file descriptor or 0 on success.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed `repr(C)` prefix of `union bpf_attr` of the
    // size passed; the kernel reads it (and for test runs writes `retval`/`duration` into it).
    // Pointers inside it name buffers the caller keeps alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd(rc: libc::c_long) -> OwnedFd {
    // SAFETY: `rc` is a file descriptor the kernel just returned to us, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

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
        let mut map_attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
            key_size: 4,
            value_size: program::VALUE_SIZE,
            max_entries: 1,
            ..MapCreateAttr::default()
        };
        map_attr.map_name[..7].copy_from_slice(b"sf_scan");
        let map = fd(bpf(BPF_MAP_CREATE, &mut map_attr).map_err(|e| refused("bpf map", &e))?);
        let insns = program::program(shards, params, map.as_raw_fd());
        let license = c"MIT OR Apache-2.0";
        let load = |log: &mut [u8]| {
            let mut attr = ProgLoadAttr {
                prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
                insn_cnt: insns.len() as u32,
                insns: insns.as_ptr() as u64,
                license: license.as_ptr() as u64,
                log_level: u32::from(!log.is_empty()),
                log_size: log.len() as u32,
                // No buffer at all without a log (a buffer with size 0 is refused).
                log_buf: if log.is_empty() {
                    0
                } else {
                    log.as_mut_ptr() as u64
                },
                ..ProgLoadAttr::default()
            };
            attr.prog_name[..8].copy_from_slice(b"sf_steer");
            bpf(BPF_PROG_LOAD, &mut attr)
        };
        let prog = match load(&mut []) {
            Ok(rc) => fd(rc),
            Err(e) => {
                // Again with the verifier's log, for the reason.
                let mut log = vec![0u8; 1 << 20];
                let _ = load(&mut log);
                let text = String::from_utf8_lossy(&log);
                let text = text.trim_end_matches('\0');
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                let mut why = refused("bpf program", &e);
                if !tail.is_empty() {
                    why.0 += &format!(
                        "; verifier: {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                    );
                }
                return Err(why);
            }
        };
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
        let mut attr = TestRunAttr {
            prog_fd: self.prog.as_raw_fd() as u32,
            data_size_in: data.len() as u32,
            data_in: data.as_ptr() as u64,
            repeat: 1,
            ..TestRunAttr::default()
        };
        bpf(BPF_PROG_TEST_RUN, &mut attr)?;
        Ok(match attr.retval {
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
