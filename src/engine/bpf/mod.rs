//! eBPF without a toolchain: the assembler both of sipfork's programs are written with
//! ([`asm`]), and the raw `bpf(2)` calls that create their maps, load them, attach them and
//! run them on test input. The programs themselves live with what uses them: the reuseport
//! steering program in `engine::steer`, the AF_XDP redirect in `engine::io::xdp`.

pub mod asm;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use asm::Insn;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;

/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
pub const MAP_PERCPU_ARRAY: u32 = 6;
/// `BPF_MAP_TYPE_XSKMAP`.
pub const MAP_XSKMAP: u32 = 17;
/// `BPF_PROG_TYPE_SOCKET_FILTER` (also what `SO_ATTACH_REUSEPORT_EBPF` takes).
pub const PROG_SOCKET_FILTER: u32 = 1;
/// `BPF_PROG_TYPE_XDP`.
pub const PROG_XDP: u32 = 6;
/// `BPF_XDP`, the attach type of an XDP link.
pub const ATTACH_XDP: u32 = 37;

// The `repr(C)` prefixes of `union bpf_attr` each command reads.

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
struct MapUpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
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

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `bpf(cmd, attr)`: the new file descriptor, or 0 for commands that make none.
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

fn new_fd(rc: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(rc).map_err(|_| io::Error::other("bpf() result out of range"))?;
    // SAFETY: `fd` is a file descriptor the kernel just returned to us, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An object name as the kernel takes it: at most 15 bytes and a NUL.
fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = name.len().min(15);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// Creates a map of `map_type` with `max_entries` entries of `key_size`/`value_size` bytes.
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_name: name16(name),
        ..MapCreateAttr::default()
    };
    new_fd(bpf(BPF_MAP_CREATE, &mut attr)?)
}

/// `map[key] = value` for a map of 4-byte keys and values.
pub fn map_update_u32(map: &OwnedFd, key: u32, value: u32) -> io::Result<()> {
    let mut attr = MapUpdateAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        ..MapUpdateAttr::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

/// Why the kernel refused a program: the error of the load, and the end of the verifier's log
/// from a second load that asked for it.
#[derive(Debug)]
pub struct LoadError {
    /// What `BPF_PROG_LOAD` returned.
    pub error: io::Error,
    /// The verifier log's last lines (where it names the instruction it stopped at), joined
    /// with " / "; empty when it said nothing.
    pub verifier: String,
}

/// Loads `insns` as a program of `prog_type` under `license`.
pub fn prog_load(
    prog_type: u32,
    insns: &[Insn],
    license: &std::ffi::CStr,
    name: &str,
) -> Result<OwnedFd, LoadError> {
    let load = |log: &mut [u8]| {
        let mut attr = ProgLoadAttr {
            prog_type,
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
            prog_name: name16(name),
            ..ProgLoadAttr::default()
        };
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    let error = match load(&mut []).and_then(new_fd) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    // Again with the verifier's log, for the reason.
    let mut log = vec![0u8; 1 << 20];
    let _ = load(&mut log);
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let tail: Vec<&str> = text.trim_end().lines().rev().take(3).collect();
    let verifier = tail.into_iter().rev().collect::<Vec<_>>().join(" / ");
    Err(LoadError { error, verifier })
}

/// Runs `prog` once in the kernel on `data` (`BPF_PROG_TEST_RUN`): its return value.
pub fn test_run(prog: &OwnedFd, data: &[u8]) -> io::Result<u32> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_in: data.as_ptr() as u64,
        repeat: 1,
        ..TestRunAttr::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(attr.retval)
}

/// Attaches `prog` to interface `ifindex` as a `bpf_link` of `attach_type` with `flags`;
/// dropping the returned descriptor detaches it.
pub fn link_create(
    prog: &OwnedFd,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        flags,
    };
    new_fd(bpf(BPF_LINK_CREATE, &mut attr)?)
}
