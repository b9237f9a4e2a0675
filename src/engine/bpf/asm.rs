//! A small eBPF assembler: instructions with named labels, resolved to relative jumps.

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination register (low nibble) and source register (high nibble).
    pub regs: u8,
    /// Signed offset (jumps, memory).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

/// A register.
pub type Reg = u8;
/// Frame pointer (read-only).
pub const FP: Reg = 10;

// Instruction classes, sizes, modes, sources.
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
const ALU64: u8 = 0x07;
const ALU32: u8 = 0x04;
const K: u8 = 0x00;
const X: u8 = 0x08;
const MEM: u8 = 0x60;
const IMM: u8 = 0x00;

/// Access sizes.
#[derive(Clone, Copy)]
pub enum Size {
    /// 1 byte.
    B = 0x10,
    /// 2 bytes.
    H = 0x08,
    /// 4 bytes.
    W = 0x00,
    /// 8 bytes.
    Dw = 0x18,
}

/// ALU operations.
#[derive(Clone, Copy)]
pub enum Alu {
    /// `+=`
    Add = 0x00,
    /// `-=`
    Sub = 0x10,
    /// `*=`
    Mul = 0x20,
    /// `|=`
    Or = 0x40,
    /// `&=`
    And = 0x50,
    /// `<<=`
    Lsh = 0x60,
    /// `>>=` (logical)
    Rsh = 0x70,
    /// `%=` (unsigned)
    Mod = 0x90,
    /// `^=`
    Xor = 0xa0,
    /// `=`
    Mov = 0xb0,
}

/// Jump conditions (unsigned comparisons).
#[derive(Clone, Copy)]
pub enum Cond {
    /// Always.
    Always = 0x00,
    /// `==`
    Eq = 0x10,
    /// `>`
    Gt = 0x20,
    /// `>=`
    Ge = 0x30,
    /// `!=`
    Ne = 0x50,
    /// `<`
    Lt = 0xa0,
    /// `<=`
    Le = 0xb0,
}

impl Cond {
    /// The opposite condition.
    pub fn inverse(self) -> Cond {
        match self {
            Cond::Always => panic!("no inverse of an unconditional jump"),
            Cond::Eq => Cond::Ne,
            Cond::Ne => Cond::Eq,
            Cond::Gt => Cond::Le,
            Cond::Le => Cond::Gt,
            Cond::Ge => Cond::Lt,
            Cond::Lt => Cond::Ge,
        }
    }
}

/// A jump target, bound once with [`Asm::bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// Instructions under construction.
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    /// A new, unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `l` to the next instruction.
    pub fn bind(&mut self, l: Label) {
        assert!(self.labels[l.0].is_none(), "label bound twice");
        self.labels[l.0] = Some(self.insns.len());
    }

    fn push(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: (src << 4) | (dst & 0xf),
            off,
            imm,
        });
    }

    /// `dst op= imm` (64 bit).
    pub fn alu_imm(&mut self, op: Alu, dst: Reg, imm: i32) {
        self.push(ALU64 | K | op as u8, dst, 0, 0, imm);
    }

    /// `dst op= src` (64 bit).
    pub fn alu(&mut self, op: Alu, dst: Reg, src: Reg) {
        self.push(ALU64 | X | op as u8, dst, src, 0, 0);
    }

    /// `dst = imm` as a 32-bit move (upper half zero).
    pub fn mov32_imm(&mut self, dst: Reg, imm: u32) {
        self.push(ALU32 | K | Alu::Mov as u8, dst, 0, 0, imm as i32);
    }

    /// `dst = imm` (64-bit constant, two instruction slots).
    pub fn ld_imm64(&mut self, dst: Reg, imm: u64) {
        self.push(LD | Size::Dw as u8 | IMM, dst, 0, 0, imm as u32 as i32);
        self.push(0, 0, 0, 0, (imm >> 32) as u32 as i32);
    }

    /// `dst = map` by file descriptor (`BPF_PSEUDO_MAP_FD`).
    pub fn ld_map_fd(&mut self, dst: Reg, fd: i32) {
        self.push(LD | Size::Dw as u8 | IMM, dst, 1, 0, fd);
        self.push(0, 0, 0, 0, 0);
    }

    /// `dst = *(size *)(src + off)`.
    pub fn ldx(&mut self, size: Size, dst: Reg, src: Reg, off: i16) {
        self.push(LDX | MEM | size as u8, dst, src, off, 0);
    }

    /// `*(size *)(dst + off) = src`.
    pub fn stx(&mut self, size: Size, dst: Reg, src: Reg, off: i16) {
        self.push(STX | MEM | size as u8, dst, src, off, 0);
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn st(&mut self, size: Size, dst: Reg, off: i16, imm: i32) {
        self.push(ST | MEM | size as u8, dst, 0, off, imm);
    }

    /// `if dst cond imm goto l`.
    pub fn jmp_imm(&mut self, cond: Cond, dst: Reg, imm: i32, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.push(JMP | K | cond as u8, dst, 0, 0, imm);
    }

    /// `if (u32)dst cond imm goto l`: compares the low 32 bits only.
    pub fn jmp32_imm(&mut self, cond: Cond, dst: Reg, imm: i32, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.push(JMP32 | K | cond as u8, dst, 0, 0, imm);
    }

    /// `if dst cond src goto l`.
    pub fn jmp(&mut self, cond: Cond, dst: Reg, src: Reg, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.push(JMP | X | cond as u8, dst, src, 0, 0);
    }

    /// `goto l`.
    pub fn ja(&mut self, l: Label) {
        self.jmp_imm(Cond::Always, 0, 0, l);
    }

    /// `may_goto l` (kernel ≥ 6.9): falls through while the loop budget the kernel keeps for
    /// this program lasts (8 million turns), jumps to `l` once it is spent. It lets the verifier
    /// check a loop once per distinct state instead of once per turn.
    pub fn may_goto(&mut self, l: Label) {
        self.fixups.push((self.insns.len(), l));
        self.push(JMP | 0xe0, 0, 0, 0, 0);
    }

    /// Calls helper `id`.
    pub fn call(&mut self, id: i32) {
        self.push(JMP | 0x80, 0, 0, 0, id);
    }

    /// Returns `r0`.
    pub fn exit(&mut self) {
        self.push(JMP | 0x90, 0, 0, 0, 0);
    }

    /// The instructions with every jump resolved.
    pub fn finish(mut self) -> Vec<Insn> {
        for (at, l) in std::mem::take(&mut self.fixups) {
            let target = self.labels[l.0].expect("unbound label");
            let off = target as isize - at as isize - 1;
            self.insns[at].off = i16::try_from(off).expect("jump too far");
        }
        self.insns
    }
}
