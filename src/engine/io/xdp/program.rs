//! The XDP program, hand-assembled with `engine::bpf` (no BPF toolchain at build or run time),
//! and the calls that create its XSKMAP, load it and attach it through a `bpf_link`.
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
use std::os::fd::OwnedFd;

use crate::engine::bpf;
use crate::engine::bpf::asm::{Alu, Asm, Cond, Insn, Label, Reg, Size};

const XDP_PASS: i32 = 2;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
/// `XDP_FLAGS_SKB_MODE`: generic XDP.
pub const XDP_FLAGS_SKB_MODE: u32 = 2;
/// `XDP_FLAGS_DRV_MODE`: native (driver) XDP.
pub const XDP_FLAGS_DRV_MODE: u32 = 4;

// Registers: r1 the context (kept in r6), r2 data, r3 data_end, r4 scratch, r5 the field read.
const R0: Reg = 0;
const R1: Reg = 1;
const R2: Reg = 2;
const R3: Reg = 3;
const R4: Reg = 4;
const R5: Reg = 5;
const R6: Reg = 6;

/// Where the program goes once a frame is judged.
struct Exits {
    pass: Label,
    redirect: Label,
}

/// `r4 = r2 + len; if r4 > r3 (data_end) goto pass`: the bounds check the verifier needs.
fn need(a: &mut Asm, len: i32, to: &Exits) {
    a.alu(Alu::Mov, R4, R2);
    a.alu_imm(Alu::Add, R4, len);
    a.jmp(Cond::Gt, R4, R3, to.pass);
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
fn emit_l3(a: &mut Asm, l2: i16, listen: &SocketAddr, to: &Exits) {
    let port = le16(listen.port().to_be_bytes());
    match listen {
        SocketAddr::V4(v4) => {
            a.jmp_imm(Cond::Ne, R5, le16(0x0800u16.to_be_bytes()), to.pass);
            need(a, i32::from(l2) + 28, to);
            a.ldx(Size::B, R5, R2, l2);
            a.jmp_imm(Cond::Ne, R5, 0x45, to.pass); // IPv4, no options
            a.ldx(Size::B, R5, R2, l2 + 9);
            a.jmp_imm(Cond::Ne, R5, 17, to.pass); // UDP
            a.ldx(Size::H, R5, R2, l2 + 6);
            a.alu_imm(Alu::And, R5, le16(0x3fffu16.to_be_bytes())); // MF | offset
            a.jmp_imm(Cond::Ne, R5, 0, to.pass); // a fragment: the kernel reassembles
            a.ldx(Size::W, R5, R2, l2 + 16);
            a.jmp32_imm(Cond::Ne, R5, le32(v4.ip().octets()), to.pass);
            a.ldx(Size::H, R5, R2, l2 + 22);
            a.jmp_imm(Cond::Ne, R5, port, to.pass);
        }
        SocketAddr::V6(v6) => {
            a.jmp_imm(Cond::Ne, R5, le16(0x86ddu16.to_be_bytes()), to.pass);
            need(a, i32::from(l2) + 48, to);
            a.ldx(Size::B, R5, R2, l2 + 6);
            a.jmp_imm(Cond::Ne, R5, 17, to.pass); // UDP right after the fixed header
            let ip = v6.ip().octets();
            for k in 0..4 {
                a.ldx(Size::W, R5, R2, l2 + 24 + 4 * k as i16);
                let word = [ip[4 * k], ip[4 * k + 1], ip[4 * k + 2], ip[4 * k + 3]];
                a.jmp32_imm(Cond::Ne, R5, le32(word), to.pass);
            }
            a.ldx(Size::H, R5, R2, l2 + 42);
            a.jmp_imm(Cond::Ne, R5, port, to.pass);
        }
    }
    a.ja(to.redirect);
}

/// The program for `listen`, with the XSKMAP's file descriptor `map_fd` in its one map load.
pub fn program(listen: &SocketAddr, map_fd: i32) -> Vec<Insn> {
    let mut a = Asm::default();
    let to = Exits {
        pass: a.label(),
        redirect: a.label(),
    };
    let vlan = a.label();
    a.alu(Alu::Mov, R6, R1); // r6 = ctx
    a.ldx(Size::W, R2, R1, 0); // r2 = ctx->data
    a.ldx(Size::W, R3, R1, 4); // r3 = ctx->data_end
    need(&mut a, 14, &to);
    a.ldx(Size::H, R5, R2, 12); // ethertype
    a.jmp_imm(Cond::Eq, R5, le16(0x8100u16.to_be_bytes()), vlan);
    emit_l3(&mut a, 14, listen, &to);
    a.bind(vlan);
    need(&mut a, 18, &to);
    a.ldx(Size::H, R5, R2, 16); // ethertype behind one 802.1Q tag
    emit_l3(&mut a, 18, listen, &to);
    a.bind(to.pass);
    a.alu_imm(Alu::Mov, R0, XDP_PASS);
    a.exit();
    a.bind(to.redirect);
    a.ldx(Size::W, R2, R6, 16); // key = ctx->rx_queue_index
    a.ld_map_fd(R1, map_fd); // r1 = &xsks
    a.alu_imm(Alu::Mov, R3, XDP_PASS); // no socket on this queue: the kernel
    a.call(BPF_FUNC_REDIRECT_MAP);
    a.exit();
    a.finish()
}

/// Creates an XSKMAP of `entries` slots (one per receive queue).
pub fn create_xskmap(entries: u32) -> io::Result<OwnedFd> {
    // Key: the queue index; value: the socket's descriptor.
    bpf::map_create(bpf::MAP_XSKMAP, 4, 4, entries, "sipfork_xsks")
}

/// Stores socket `xsk_fd` in slot `queue` of `map`.
pub fn set_socket(map: &OwnedFd, queue: u32, xsk_fd: i32) -> io::Result<()> {
    bpf::map_update_u32(map, queue, xsk_fd as u32)
}

/// Loads `insns` as an XDP program; on failure the error carries the verifier's log.
pub fn load(insns: &[Insn]) -> Result<OwnedFd, String> {
    bpf::prog_load(bpf::PROG_XDP, insns, c"GPL", "sipfork_xdp").map_err(|e| {
        format!(
            "loading the XDP program: {}; verifier: {}",
            e.error, e.verifier
        )
    })
}

/// Attaches `prog` to interface `ifindex` with `flags` (native or generic mode) as a `bpf_link`;
/// dropping the returned descriptor detaches it.
pub fn attach(prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    bpf::link_create(prog, ifindex, bpf::ATTACH_XDP, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Opcodes as the kernel reads them.
    const LD_DW_IMM: u8 = 0x18;
    const JA: u8 = 0x05;
    const JEQ_IMM: u8 = 0x15;
    const JNE_IMM: u8 = 0x55;
    const JNE32_IMM: u8 = 0x56;
    const JGT_REG: u8 = 0x2d;
    const EXIT: u8 = 0x95;

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
            assert_eq!((p[ld].imm, p[ld].regs >> 4), (7, 1), "BPF_PSEUDO_MAP_FD");
            assert_eq!(p[ld + 1], Insn::default());
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
