//! The XDP program, hand-assembled (no BPF toolchain at build or run time), and the raw `bpf()`
//! calls that create its XSKMAP, load it and attach it through a `bpf_link`.
//!
//! The program steers exactly the frames the shards serve to the AF_XDP socket of the frame's
//! receive queue: IPv4 without options and not fragmented, or IPv6 whose next header is UDP (an
//! extension header, fragments included, goes to the kernel), to the listen address and SIP port,
//! optionally behind one 802.1Q tag. Everything else — ARP, ICMP, TCP, other ports, fragments,
//! other addresses — is `XDP_PASS`ed to the kernel stack, and so is a frame whose queue has no
//! socket in the map (`bpf_redirect_map`'s fallback action).
//!
//! A `bpf_link` detaches when its last file descriptor closes: on clean shutdown and equally when
//! the process dies, so a crash never leaves the program attached; the next start attaches anew.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `struct bpf_insn`, packed into its 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const BPF_PSEUDO_MAP_FD: u8 = 1;
const XDP_PASS: i32 = 2;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;

// Registers.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;

// Opcodes (class | op | source).
const MOV64_REG: u8 = 0xbf;
const MOV64_IMM: u8 = 0xb7;
const ADD64_IMM: u8 = 0x07;
const AND64_IMM: u8 = 0x57;
const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
const LDX_B: u8 = 0x71;
const LD_DW_IMM: u8 = 0x18;
const JA: u8 = 0x05;
const JEQ_IMM: u8 = 0x15;
const JNE_IMM: u8 = 0x55;
const JNE32_IMM: u8 = 0x56;
const JGT_REG: u8 = 0x2d;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Pass,
    Redirect,
    Vlan,
}

/// A tiny assembler: jumps name a label, resolved once the program is complete.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    jumps: Vec<(usize, Label)>,
    labels: Vec<(Label, usize)>,
}

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(insn(code, dst, src, off, imm));
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.jumps.push((self.insns.len(), to));
        self.op(code, dst, src, 0, imm);
    }
    fn label(&mut self, l: Label) {
        self.labels.push((l, self.insns.len()));
    }
    /// `if r4 = r2 + len; r4 > r3 (data_end) goto pass`: the bounds check the verifier needs.
    fn need(&mut self, len: i32) {
        self.op(MOV64_REG, R4, R2, 0, 0);
        self.op(ADD64_IMM, R4, 0, 0, len);
        self.jump(JGT_REG, R4, R3, 0, Label::Pass);
    }
    fn finish(mut self) -> Vec<Insn> {
        for &(at, to) in &self.jumps {
            let target = self
                .labels
                .iter()
                .find(|(l, _)| *l == to)
                .map(|&(_, i)| i)
                .expect("invariant: every label is placed");
            let off = target as i64 - (at as i64 + 1);
            self.insns[at].off = i16::try_from(off).expect("invariant: short program");
        }
        self.insns
    }
}

/// The value a little-endian load of these network-order bytes yields (what the program compares).
fn le16(be: [u8; 2]) -> i32 {
    i32::from(u16::from_le_bytes(be))
}
fn le32(be: [u8; 4]) -> i32 {
    i32::from_le_bytes(be)
}

/// Steers frames to `listen` (after an Ethernet header at `l2` bytes, `r5` holding the
/// ethertype as loaded) to the redirect, else to pass.
fn emit_l3(a: &mut Asm, l2: i16, listen: &SocketAddr) {
    let port = le16(listen.port().to_be_bytes());
    match listen {
        SocketAddr::V4(v4) => {
            a.jump(JNE_IMM, R5, 0, le16(0x0800u16.to_be_bytes()), Label::Pass);
            a.need(i32::from(l2) + 28);
            a.op(LDX_B, R5, R2, l2, 0);
            a.jump(JNE_IMM, R5, 0, 0x45, Label::Pass); // IPv4, no options
            a.op(LDX_B, R5, R2, l2 + 9, 0);
            a.jump(JNE_IMM, R5, 0, 17, Label::Pass); // UDP
            a.op(LDX_H, R5, R2, l2 + 6, 0);
            a.op(AND64_IMM, R5, 0, 0, le16(0x3fffu16.to_be_bytes())); // MF | offset
            a.jump(JNE_IMM, R5, 0, 0, Label::Pass); // a fragment: the kernel reassembles
            a.op(LDX_W, R5, R2, l2 + 16, 0);
            a.jump(JNE32_IMM, R5, 0, le32(v4.ip().octets()), Label::Pass);
            a.op(LDX_H, R5, R2, l2 + 22, 0);
            a.jump(JNE_IMM, R5, 0, port, Label::Pass);
        }
        SocketAddr::V6(v6) => {
            a.jump(JNE_IMM, R5, 0, le16(0x86ddu16.to_be_bytes()), Label::Pass);
            a.need(i32::from(l2) + 48);
            a.op(LDX_B, R5, R2, l2 + 6, 0);
            a.jump(JNE_IMM, R5, 0, 17, Label::Pass); // UDP right after the fixed header
            let ip = v6.ip().octets();
            for k in 0..4 {
                a.op(LDX_W, R5, R2, l2 + 24 + 4 * k as i16, 0);
                let word = [ip[4 * k], ip[4 * k + 1], ip[4 * k + 2], ip[4 * k + 3]];
                a.jump(JNE32_IMM, R5, 0, le32(word), Label::Pass);
            }
            a.op(LDX_H, R5, R2, l2 + 42, 0);
            a.jump(JNE_IMM, R5, 0, port, Label::Pass);
        }
    }
    a.jump(JA, 0, 0, 0, Label::Redirect);
}

/// The program for `listen`, with the XSKMAP's file descriptor `map_fd` in its one map load.
pub fn program(listen: &SocketAddr, map_fd: i32) -> Vec<Insn> {
    let mut a = Asm::default();
    a.op(MOV64_REG, R6, R1, 0, 0); // r6 = ctx
    a.op(LDX_W, R2, R1, 0, 0); // r2 = ctx->data
    a.op(LDX_W, R3, R1, 4, 0); // r3 = ctx->data_end
    a.need(14);
    a.op(LDX_H, R5, R2, 12, 0); // ethertype
    a.jump(JEQ_IMM, R5, 0, le16(0x8100u16.to_be_bytes()), Label::Vlan);
    emit_l3(&mut a, 14, listen);
    a.label(Label::Vlan);
    a.need(18);
    a.op(LDX_H, R5, R2, 16, 0); // ethertype behind one 802.1Q tag
    emit_l3(&mut a, 18, listen);
    a.label(Label::Pass);
    a.op(MOV64_IMM, R0, 0, 0, XDP_PASS);
    a.op(EXIT, 0, 0, 0, 0);
    a.label(Label::Redirect);
    a.op(LDX_W, R2, R6, 16, 0); // key = ctx->rx_queue_index
    a.op(LD_DW_IMM, R1, BPF_PSEUDO_MAP_FD, 0, map_fd); // r1 = &xsks (two slots)
    a.op(0, 0, 0, 0, 0);
    a.op(MOV64_IMM, R3, 0, 0, XDP_PASS); // no socket on this queue: the kernel
    a.op(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP);
    a.op(EXIT, 0, 0, 0, 0);
    a.finish()
}

// bpf(2) commands and constants.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
/// `XDP_FLAGS_SKB_MODE`: generic XDP.
pub const XDP_FLAGS_SKB_MODE: u32 = 2;
/// `XDP_FLAGS_DRV_MODE`: native (driver) XDP.
pub const XDP_FLAGS_DRV_MODE: u32 = 4;

/// `union bpf_attr`, as zeroed words large enough for every command used here.
#[repr(C, align(8))]
struct Attr([u32; 32]);

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<i32> {
    // SAFETY: `attr` is a live, zero-initialised buffer of the size passed; every pointer stored
    // in it (instructions, license, log, key, value) outlives this call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(r).map_err(|_| io::Error::other("bpf() result out of range"))?;
    Ok(fd)
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by bpf() as a new descriptor this process owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn put_u64(attr: &mut Attr, word: usize, v: u64) {
    attr.0[word] = v as u32;
    attr.0[word + 1] = (v >> 32) as u32;
}

/// Creates an XSKMAP of `entries` slots (one per receive queue).
pub fn create_xskmap(entries: u32) -> io::Result<OwnedFd> {
    let mut a = Attr([0; 32]);
    a.0[0] = BPF_MAP_TYPE_XSKMAP;
    a.0[1] = 4; // key: queue index
    a.0[2] = 4; // value: socket fd
    a.0[3] = entries;
    let name = b"sipfork_xsks";
    let mut words = [0u8; 16];
    words[..name.len()].copy_from_slice(name);
    for (k, c) in words.chunks_exact(4).enumerate() {
        a.0[7 + k] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
    }
    bpf(BPF_MAP_CREATE, &mut a).map(owned)
}

/// Stores socket `xsk_fd` in slot `queue` of `map`.
pub fn set_socket(map: &OwnedFd, queue: u32, xsk_fd: i32) -> io::Result<()> {
    let key = queue;
    let value = xsk_fd as u32;
    let mut a = Attr([0; 32]);
    a.0[0] = map.as_raw_fd() as u32;
    put_u64(&mut a, 2, &key as *const u32 as u64);
    put_u64(&mut a, 4, &value as *const u32 as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
}

/// Loads `insns` as an XDP program; on failure the error carries the verifier's log.
pub fn load(insns: &[Insn]) -> Result<OwnedFd, String> {
    let license = b"GPL\0";
    let mut log = vec![0u8; 64 * 1024];
    let attempt = |log_level: u32, log: &mut Vec<u8>| {
        let mut a = Attr([0; 32]);
        a.0[0] = BPF_PROG_TYPE_XDP;
        a.0[1] = insns.len() as u32;
        put_u64(&mut a, 2, insns.as_ptr() as u64);
        put_u64(&mut a, 4, license.as_ptr() as u64);
        a.0[6] = log_level;
        a.0[7] = if log_level > 0 { log.len() as u32 } else { 0 };
        put_u64(
            &mut a,
            8,
            if log_level > 0 {
                log.as_mut_ptr() as u64
            } else {
                0
            },
        );
        let name = b"sipfork_xdp";
        let mut bytes = [0u8; 16];
        bytes[..name.len()].copy_from_slice(name);
        for (k, c) in bytes.chunks_exact(4).enumerate() {
            a.0[12 + k] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
        }
        bpf(BPF_PROG_LOAD, &mut a)
    };
    match attempt(0, &mut log) {
        Ok(fd) => Ok(owned(fd)),
        Err(first) => {
            let _ = attempt(1, &mut log);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(format!(
                "loading the XDP program: {first}; verifier: {}",
                String::from_utf8_lossy(&log[..end]).trim()
            ))
        }
    }
}

/// Attaches `prog` to interface `ifindex` with `flags` (native or generic mode) as a `bpf_link`;
/// dropping the returned descriptor detaches it.
pub fn attach(prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut a = Attr([0; 32]);
    a.0[0] = prog.as_raw_fd() as u32;
    a.0[1] = ifindex;
    a.0[2] = BPF_XDP;
    a.0[3] = flags;
    bpf(BPF_LINK_CREATE, &mut a).map(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program_and_the_map_load_is_patched() {
        for listen in [
            "10.99.0.2:5060",
            "[fd00:5f::1]:5060",
            "192.168.200.250:5080",
        ] {
            let listen: SocketAddr = listen.parse().unwrap();
            let p = program(&listen, 7);
            for (i, x) in p.iter().enumerate() {
                if matches!(x.code, JA | JEQ_IMM | JNE_IMM | JNE32_IMM | JGT_REG) {
                    let to = i as i64 + 1 + i64::from(x.off);
                    assert!(
                        (0..p.len() as i64).contains(&to),
                        "{listen}: jump {i} → {to}"
                    );
                    assert!(x.off >= 0, "forward jumps only (no loops)");
                }
            }
            let ld = p.iter().position(|x| x.code == LD_DW_IMM).unwrap();
            assert_eq!((p[ld].imm, p[ld].regs >> 4), (7, BPF_PSEUDO_MAP_FD));
            assert_eq!(p[ld + 1], insn(0, 0, 0, 0, 0));
            assert_eq!(p.last().unwrap().code, EXIT);
        }
    }

    #[test]
    fn the_program_compares_the_port_and_address_as_loaded_from_the_wire() {
        let p = program(&"10.99.0.2:5060".parse().unwrap(), 3);
        // 5060 = 0x13c4 on the wire; a little-endian 16-bit load reads 0xc413.
        assert!(p.iter().any(|x| x.code == JNE_IMM && x.imm == 0xc413));
        // 10.99.0.2 → bytes 0a 63 00 02 → little-endian word 0x0200630a.
        assert!(p
            .iter()
            .any(|x| x.code == JNE32_IMM && x.imm == 0x0200_630a));
        // IPv4 without options, UDP, not a fragment, both with and without a VLAN tag.
        assert_eq!(
            p.iter()
                .filter(|x| x.code == JNE_IMM && x.imm == 0x45)
                .count(),
            2
        );
    }
}
