//! The steering program, hand-assembled: [`core::steer::wire_owner`] as eBPF instructions for a
//! `BPF_PROG_TYPE_SOCKET_FILTER` program attached with `SO_ATTACH_REUSEPORT_EBPF`. The kernel
//! runs it with the datagram's UDP payload as the packet; its return value is the index of the
//! socket in the reuseport group (bind order = shard order), and an index past the group
//! (`u32::MAX` here) lets the kernel's hash choose, as without a program.
//!
//! The datagram's first [`WINDOW`] bytes are copied into a per-CPU array map value (a bounded
//! scratch buffer; the stack is too small and forbids unaligned reads) followed by 64 zero bytes,
//! so fixed-offset reads just past the end see bytes no rule matches. Every variable offset is
//! masked to the buffer, which is what lets the verifier accept it; scans are bounded loops
//! (kernel ≥ 5.3). Each rule below mirrors a function of `core::steer`, and
//! `engine::steer::tests` runs the loaded program against the model on the same datagrams.
//!
//! Registers: r7 the buffer, r8 its length `n`, r9 the position; r0–r6 as each part says.
//! Loop counters are exact and bounded; positions are laundered (see `Gen::launder`).
//!
//! [`core::steer::wire_owner`]: crate::core::steer::wire_owner

use crate::core::steer::{WireParams, MAX_ROWS, MAX_ROW_SCAN, MAX_USER, STOP, WINDOW};
use crate::engine::bpf::asm::{Alu, Asm, Cond, Insn, Label, Reg, Size, FP};

/// Bytes of the scratch map value: masked offsets (< 2048) plus the widest fixed offset.
pub const VALUE_SIZE: u32 = 2048 + 64 + 24;
const MASK: i32 = 2047;
/// Slots of the map value past everything the rules read: [`Gen::launder`] goes through them.
const SCRATCH: i16 = 2112;
/// What the program returns for "no choice".
pub const NO_CHOICE: u32 = u32::MAX;

const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_SKB_LOAD_BYTES: i32 = 26;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn le64(s: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*s)
}

fn le32(s: &[u8; 4]) -> i32 {
    let v = u32::from_le_bytes(*s);
    // Compared with a sign-extended immediate against a zero-extended 32-bit load.
    assert!(v < 1 << 31);
    v as i32
}

struct Gen {
    a: Asm,
    none: Label,
    shards: u16,
}

impl Gen {
    /// `r1` = buffer + (`pos` + 0) masked; `dst` = the `size` bytes at `k` past it.
    fn load(&mut self, size: Size, dst: Reg, pos: Reg, k: i16) {
        self.a.alu(Alu::Mov, 1, pos);
        self.a.alu_imm(Alu::And, 1, MASK);
        self.a.alu(Alu::Add, 1, 7);
        self.a.ldx(size, dst, 1, k);
    }

    /// `if dst cond imm goto target`, emitted so that staying is the jump and leaving falls
    /// through: the verifier then explores where a loop leads before its next turn, and keeps
    /// one pending state per loop instead of one per turn (its stack of pending branches is
    /// bounded at 8192).
    fn leave_imm(&mut self, cond: Cond, dst: Reg, imm: i32, target: Label) {
        let stay = self.a.label();
        self.a.jmp_imm(cond.inverse(), dst, imm, stay);
        self.a.ja(target);
        self.a.bind(stay);
    }

    /// [`Gen::leave_imm`] against a register.
    fn leave(&mut self, cond: Cond, dst: Reg, src: Reg, target: Label) {
        let stay = self.a.label();
        self.a.jmp(cond.inverse(), dst, src, stay);
        self.a.ja(target);
        self.a.bind(stay);
    }

    /// Stores `r` into the map value and reads it back: the verifier then knows nothing of its
    /// value. Positions are laundered so that it does not walk every exact position of every
    /// loop (its state count would explode); every use of a position is masked, and every loop
    /// has its own exact, bounded counter.
    fn launder(&mut self, r: Reg) {
        let slot = SCRATCH + 8 * i16::from(r % 3);
        self.a.stx(Size::Dw, 7, r, slot);
        self.a.ldx(Size::Dw, r, 7, slot);
    }

    fn byte(&mut self, dst: Reg, pos: Reg, k: i16) {
        self.load(Size::B, dst, pos, k);
    }

    /// `r2` = the byte at `r9 + k`, lower-cased the way the model does (`| 0x20`).
    fn lower(&mut self, k: i16) {
        self.byte(2, 9, k);
        self.a.alu_imm(Alu::Or, 2, 0x20);
    }

    /// `colon_after(i)` of the model for the row at r9: blanks up to offset 8, then `:`.
    fn colon_after(&mut self, i: i16, yes: Label, no: Label) {
        for k in i..=8 {
            self.byte(2, 9, k);
            self.a.jmp_imm(Cond::Eq, 2, i32::from(b':'), yes);
            if k == 8 {
                self.a.ja(no);
            } else {
                let blank = self.a.label();
                self.a.jmp_imm(Cond::Eq, 2, i32::from(b' '), blank);
                self.a.jmp_imm(Cond::Ne, 2, i32::from(b'\t'), no);
                self.a.bind(blank);
            }
        }
    }

    /// `row_name` of the model for the row at r9.
    fn classify(&mut self, via: Label, to: Label, route: Label, other: Label) {
        let (v, t, r) = (self.a.label(), self.a.label(), self.a.label());
        self.lower(0);
        self.a.jmp_imm(Cond::Eq, 2, i32::from(b'v'), v);
        self.a.jmp_imm(Cond::Eq, 2, i32::from(b't'), t);
        self.a.jmp_imm(Cond::Eq, 2, i32::from(b'r'), r);
        self.a.ja(other);

        self.a.bind(v);
        let long = self.a.label();
        self.colon_after(1, via, long);
        self.a.bind(long);
        self.lower(1);
        self.a.jmp_imm(Cond::Ne, 2, i32::from(b'i'), other);
        self.lower(2);
        self.a.jmp_imm(Cond::Ne, 2, i32::from(b'a'), other);
        self.colon_after(3, via, other);

        self.a.bind(t);
        let long = self.a.label();
        self.colon_after(1, to, long);
        self.a.bind(long);
        self.lower(1);
        self.a.jmp_imm(Cond::Ne, 2, i32::from(b'o'), other);
        self.colon_after(2, to, other);

        self.a.bind(r);
        for (k, c) in (1..).zip(b"oute") {
            self.lower(k);
            self.a.jmp_imm(Cond::Ne, 2, i32::from(*c), other);
        }
        self.colon_after(5, route, other);
    }

    /// `r3` = min(n, `start` + MAX_ROW_SCAN): where a row's scan ends.
    fn row_limit(&mut self, start: Reg) {
        let ok = self.a.label();
        self.a.alu(Alu::Mov, 3, start);
        self.a.alu_imm(Alu::Add, 3, MAX_ROW_SCAN as i32);
        self.a.jmp(Cond::Le, 3, 8, ok);
        self.a.alu(Alu::Mov, 3, 8);
        self.a.bind(ok);
    }

    /// `find_in_row` of the model for the row at r9: on `found`, r0 is just past the needle.
    /// Uses r0–r4 (r4 counts the positions tried).
    fn find_in_row(&mut self, needle: &[u8], found: Label, not_found: Label) {
        let (top, hit) = (self.a.label(), self.a.label());
        self.row_limit(9);
        self.a.alu(Alu::Mov, 0, 9);
        self.a.bind(top);
        self.a.may_goto(not_found);
        self.a.alu(Alu::Mov, 2, 0);
        self.a.alu_imm(Alu::Add, 2, needle.len() as i32);
        self.leave(Cond::Gt, 2, 3, not_found);
        self.byte(2, 0, 0);
        self.leave_imm(Cond::Eq, 2, i32::from(b'\n'), not_found);
        match needle.len() {
            8 => {
                self.load(Size::Dw, 2, 0, 0);
                self.a.ld_imm64(1, le64(needle.try_into().unwrap()));
                self.leave(Cond::Eq, 2, 1, hit);
            }
            4 => {
                self.load(Size::W, 2, 0, 0);
                self.leave_imm(Cond::Eq, 2, le32(needle.try_into().unwrap()), hit);
            }
            _ => unreachable!("needles are 4 or 8 bytes"),
        }
        self.a.alu_imm(Alu::Add, 0, 1);
        self.a.ja(top);
        self.a.bind(hit);
        self.a.alu_imm(Alu::Add, 0, needle.len() as i32);
        self.a.ja(found);
    }

    /// `hex_shard` of the model at r0: returns the shard or no choice.
    fn hex_shard(&mut self) {
        self.a.mov32_imm(3, 0);
        for k in 0..4 {
            let (digit, shift) = (self.a.label(), self.a.label());
            self.byte(2, 0, k);
            self.a.jmp_imm(Cond::Lt, 2, i32::from(b'0'), self.none);
            self.a.jmp_imm(Cond::Le, 2, i32::from(b'9'), digit);
            self.a.jmp_imm(Cond::Lt, 2, i32::from(b'a'), self.none);
            self.a.jmp_imm(Cond::Gt, 2, i32::from(b'f'), self.none);
            self.a.alu_imm(Alu::Sub, 2, i32::from(b'a') - 10);
            self.a.ja(shift);
            self.a.bind(digit);
            self.a.alu_imm(Alu::Sub, 2, i32::from(b'0'));
            self.a.bind(shift);
            self.a.alu_imm(Alu::Lsh, 3, 4);
            self.a.alu(Alu::Or, 3, 2);
        }
        self.byte(2, 0, 4);
        self.a.jmp_imm(Cond::Ne, 2, i32::from(b'.'), self.none);
        self.a
            .jmp_imm(Cond::Ge, 3, i32::from(self.shards), self.none);
        self.a.alu(Alu::Mov, 0, 3);
        self.a.exit();
    }

    /// The header rows (`rows` of the model): r9 walks line starts, r4 counts rows (r3 the
    /// steps of the scan for the line end). For each row, `classify` jumps to the handlers,
    /// which jump back to `next` with r4 intact; `end` when the rows are over. Uses r0–r4.
    fn rows(&mut self, next: Label, end: Label, classify: impl FnOnce(&mut Gen)) {
        let (scan, bytes, found) = (self.a.label(), self.a.label(), self.a.label());
        self.a.mov32_imm(9, 0);
        self.a.mov32_imm(4, 0);
        self.a.bind(next);
        self.a.may_goto(end);
        // Nothing exact is left for the verifier to tell the turns apart.
        for r in [4, 5, 6, 8, 9] {
            self.launder(r);
        }
        self.leave_imm(Cond::Ge, 4, MAX_ROWS as i32, end);
        // Eight bytes at a time: is there a '\n' in the word (the classic has-zero-byte test)?
        self.a.bind(scan);
        self.a.may_goto(end);
        self.leave(Cond::Ge, 9, 8, end);
        self.load(Size::Dw, 2, 9, 0);
        self.a.ld_imm64(1, 0x0a0a_0a0a_0a0a_0a0a);
        self.a.alu(Alu::Xor, 2, 1);
        self.a.ld_imm64(1, 0x0101_0101_0101_0101);
        self.a.alu(Alu::Mov, 0, 2);
        self.a.alu(Alu::Sub, 0, 1);
        self.a.alu_imm(Alu::Xor, 2, -1);
        self.a.alu(Alu::And, 0, 2);
        self.a.ld_imm64(1, 0x8080_8080_8080_8080);
        self.a.alu(Alu::And, 0, 1);
        self.leave_imm(Cond::Ne, 0, 0, bytes);
        self.a.alu_imm(Alu::Add, 9, 8);
        self.a.ja(scan);
        // The word holds one (its lowest flagged byte is a real '\n'): find it byte by byte.
        self.a.bind(bytes);
        let byte = self.a.label();
        self.a.bind(byte);
        self.a.may_goto(end);
        self.leave(Cond::Ge, 9, 8, end);
        self.byte(2, 9, 0);
        self.leave_imm(Cond::Eq, 2, i32::from(b'\n'), found);
        self.a.alu_imm(Alu::Add, 9, 1);
        self.a.ja(byte);
        self.a.bind(found);
        self.a.alu_imm(Alu::Add, 9, 1);
        self.a.alu_imm(Alu::Add, 4, 1);
        self.leave(Cond::Ge, 9, 8, end);
        self.byte(2, 9, 0);
        self.leave_imm(Cond::Eq, 2, i32::from(b'\r'), end);
        self.leave_imm(Cond::Eq, 2, i32::from(b'\n'), end);
        classify(self);
    }

    /// `user_at` of the model from r9, then the DID check and the hash: returns.
    fn user_and_hash(&mut self, did_widths: u64) {
        let (top, next, colon) = (self.a.label(), self.a.label(), self.a.label());
        self.launder(8);
        self.launder(9);
        self.row_limit(9);
        self.a.alu(Alu::Mov, 0, 9);
        self.a.bind(top);
        self.a.may_goto(self.none);
        self.leave(Cond::Ge, 0, 3, self.none);
        self.byte(2, 0, 0);
        self.leave_imm(Cond::Eq, 2, i32::from(b'\n'), self.none);
        self.leave_imm(Cond::Ne, 2, i32::from(b':'), next);
        for (scheme, back) in [(b"sip:", 3), (b"sips", 4)] {
            // Only within the line: start + back <= q.
            self.a.alu(Alu::Mov, 2, 9);
            self.a.alu_imm(Alu::Add, 2, back);
            self.leave(Cond::Gt, 2, 0, next);
            self.a.alu(Alu::Mov, 4, 0);
            self.a.alu_imm(Alu::Sub, 4, back);
            self.load(Size::W, 2, 4, 0);
            self.leave_imm(Cond::Eq, 2, le32(scheme), colon);
        }
        self.a.bind(next);
        self.a.alu_imm(Alu::Add, 0, 1);
        self.a.ja(top);

        // The user: r6 its start, r0 the position, r4 its length so far, r5 the hash.
        let (user, done, hash) = (self.a.label(), self.a.label(), self.a.label());
        self.a.bind(colon);
        self.a.alu_imm(Alu::Add, 0, 1);
        // Unlinked from r3, or the verifier walks every (colon, user length) pair.
        self.launder(0);
        self.launder(3);
        self.a.alu(Alu::Mov, 6, 0);
        self.a.ld_imm64(5, FNV_OFFSET);
        self.a.bind(user);
        self.a.may_goto(self.none);
        self.a.alu(Alu::Mov, 4, 0);
        self.a.alu(Alu::Sub, 4, 6);
        self.leave_imm(Cond::Gt, 4, MAX_USER as i32, self.none);
        self.leave(Cond::Ge, 0, 3, self.none);
        self.byte(2, 0, 0);
        self.leave_imm(Cond::Eq, 2, i32::from(b'@'), done);
        for &c in STOP.iter().chain(b"\n") {
            self.leave_imm(Cond::Eq, 2, i32::from(c), self.none);
        }
        self.a.alu(Alu::Xor, 5, 2);
        self.a.ld_imm64(1, FNV_PRIME);
        self.a.alu(Alu::Mul, 5, 1);
        self.a.alu_imm(Alu::Add, 0, 1);
        self.a.ja(user);

        self.a.bind(done);
        self.leave_imm(Cond::Eq, 4, 0, self.none);
        self.leave_imm(Cond::Ge, 4, 64, hash);
        self.a.ld_imm64(3, did_widths);
        self.a.alu(Alu::Rsh, 3, 4);
        self.a.alu_imm(Alu::And, 3, 1);
        self.leave_imm(Cond::Ne, 3, 0, self.none);
        self.a.bind(hash);
        self.a.alu(Alu::Mov, 2, 5);
        self.a.alu_imm(Alu::Rsh, 2, 32);
        self.a.alu(Alu::Xor, 5, 2);
        self.a.alu_imm(Alu::Mod, 5, i32::from(self.shards));
        self.a.alu(Alu::Mov, 0, 5);
        self.a.exit();
    }
}

/// The program for `shards` shards (≥ 2) with the configuration's `params`, its scratch map
/// being `map_fd` (a per-CPU array of one [`VALUE_SIZE`]-byte value).
pub fn program(shards: u16, params: &WireParams, map_fd: i32) -> Vec<Insn> {
    assert!(shards >= 2, "steering needs two shards");
    let mut a = Asm::default();
    let none = a.label();
    let mut g = Gen { a, none, shards };

    // The scratch buffer.
    g.a.alu(Alu::Mov, 6, 1);
    g.a.st(Size::W, FP, -4, 0);
    g.a.ld_map_fd(1, map_fd);
    g.a.alu(Alu::Mov, 2, FP);
    g.a.alu_imm(Alu::Add, 2, -4);
    g.a.call(HELPER_MAP_LOOKUP_ELEM);
    g.a.jmp_imm(Cond::Eq, 0, 0, none);
    g.a.alu(Alu::Mov, 7, 0);
    // n = min(len, WINDOW), at least 16; the bytes, then 64 zero bytes.
    let short_enough = g.a.label();
    g.a.ldx(Size::W, 8, 6, 0); // __sk_buff.len
    g.a.jmp_imm(Cond::Le, 8, WINDOW as i32, short_enough);
    g.a.mov32_imm(8, WINDOW as u32);
    g.a.bind(short_enough);
    g.a.jmp_imm(Cond::Lt, 8, 16, none);
    g.a.alu(Alu::Mov, 1, 6);
    g.a.mov32_imm(2, 0);
    g.a.alu(Alu::Mov, 3, 7);
    g.a.alu(Alu::Mov, 4, 8);
    g.a.call(HELPER_SKB_LOAD_BYTES);
    g.a.jmp_imm(Cond::Ne, 0, 0, none);
    g.a.alu(Alu::Mov, 1, 8);
    g.a.alu(Alu::Add, 1, 7);
    for k in 0..8 {
        g.a.st(Size::Dw, 1, k * 8, 0);
    }
    g.launder(8);

    // Response or request?
    let request = g.a.label();
    g.a.mov32_imm(5, 0);
    g.a.ldx(Size::Dw, 2, 7, 0);
    g.a.ld_imm64(3, le64(b"SIP/2.0 "));
    g.a.jmp(Cond::Ne, 2, 3, request);

    // Response: the first Via row's first ;branch=, then z9hG4bKsf and the shard.
    let (next, end, via, branch) = (g.a.label(), g.a.label(), g.a.label(), g.a.label());
    g.rows(next, end, |g| g.classify(via, next, next, next));
    g.a.bind(via);
    g.launder(8);
    g.launder(9);
    g.find_in_row(b";branch=", branch, none);
    g.a.bind(branch);
    g.load(Size::Dw, 2, 0, 0);
    g.a.ld_imm64(3, le64(b"z9hG4bKs"));
    g.a.jmp(Cond::Ne, 2, 3, none);
    g.byte(2, 0, 8);
    g.a.jmp_imm(Cond::Ne, 2, i32::from(b'f'), none);
    g.a.alu_imm(Alu::Add, 0, 9);
    g.hex_shard();
    g.a.bind(end);
    g.a.ja(none);

    // Request: r5 bit 0 = REGISTER, bit 1 = a Route row seen; r6 = the REGISTER's To row.
    g.a.bind(request);
    let not_register = g.a.label();
    g.a.mov32_imm(5, 0);
    g.a.mov32_imm(6, 0);
    g.a.ld_imm64(3, le64(b"REGISTER"));
    g.a.jmp(Cond::Ne, 2, 3, not_register);
    g.a.ldx(Size::B, 2, 7, 8);
    g.a.jmp_imm(Cond::Ne, 2, i32::from(b' '), not_register);
    g.a.mov32_imm(5, 1);
    g.a.bind(not_register);
    g.a.st(Size::Dw, FP, -16, 0);
    let (next, end, to, route, token) = (
        g.a.label(),
        g.a.label(),
        g.a.label(),
        g.a.label(),
        g.a.label(),
    );
    g.rows(next, end, |g| g.classify(next, to, route, next));
    g.a.bind(route);
    g.a.alu(Alu::Mov, 2, 5);
    g.a.alu_imm(Alu::And, 2, 2);
    g.a.jmp_imm(Cond::Ne, 2, 0, next);
    g.a.alu_imm(Alu::Or, 5, 2);
    // The first Route row, searched once the rows are over (searching here would have the
    // verifier walk the search once per row count).
    g.a.stx(Size::Dw, FP, 9, -16);
    g.a.ja(next);
    g.a.bind(to);
    g.a.alu(Alu::Mov, 2, 5);
    g.a.alu_imm(Alu::And, 2, 1);
    g.a.jmp_imm(Cond::Eq, 2, 0, next);
    g.a.jmp_imm(Cond::Ne, 6, 0, next);
    g.a.alu(Alu::Mov, 6, 9);
    g.a.ja(next);

    // The first Route row's token, if any.
    let number = g.a.label();
    g.a.bind(end);
    // Where the rows end, the verifier arrives from every row and scan step: with nothing
    // known of the live registers, it checks what follows once.
    for r in [5, 6, 8] {
        g.launder(r);
    }
    g.a.alu(Alu::Mov, 2, 5);
    g.a.alu_imm(Alu::And, 2, 2);
    g.a.jmp_imm(Cond::Eq, 2, 0, number);
    g.a.ldx(Size::Dw, 9, FP, -16);
    g.find_in_row(b";sf=", token, number);
    g.a.bind(token);
    g.hex_shard();

    // No token: the number, from the To row (REGISTER) or the Request-URI.
    let (uri, space, start) = (g.a.label(), g.a.label(), g.a.label());
    g.a.bind(number);
    g.a.alu(Alu::Mov, 2, 5);
    g.a.alu_imm(Alu::And, 2, 1);
    g.a.jmp_imm(Cond::Eq, 2, 0, uri);
    g.a.jmp_imm(Cond::Eq, 6, 0, none);
    g.a.alu(Alu::Mov, 9, 6);
    g.a.ja(start);
    g.a.bind(uri);
    g.a.mov32_imm(9, 0);
    let look = g.a.label();
    g.a.bind(look);
    g.leave_imm(Cond::Ge, 9, 32, none);
    g.leave(Cond::Ge, 9, 8, none);
    g.byte(2, 9, 0);
    g.leave_imm(Cond::Eq, 2, i32::from(b' '), space);
    g.a.alu_imm(Alu::Add, 9, 1);
    g.a.ja(look);
    g.a.bind(space);
    g.a.alu_imm(Alu::Add, 9, 1);
    g.a.bind(start);
    g.user_and_hash(params.did_widths);

    g.a.bind(none);
    g.a.mov32_imm(0, NO_CHOICE);
    g.a.exit();
    g.a.finish()
}
