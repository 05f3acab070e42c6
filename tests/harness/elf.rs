//! Minimal static Linux executables for arm and aarch64, made on the fly.
//!
//! Tests use them to prove that binfmt_misc emulation works (the kernel must run a foreign
//! binary), without shipping binaries or needing a cross toolchain. Each program writes a
//! message to stdout with raw system calls and exits with status 0.
//!
//! Layout: ELF header, one program header (a single read+execute PT_LOAD covering the whole
//! file), the code, a literal holding the message length, the message.

use pib_dbus_interfaces::types::Arch;

/// Where the single segment is mapped: the usual base of non-PIE executables, well above
/// vm.mmap_min_addr.
const BASE: u64 = 0x40_0000;
const PAGE: u64 = 0x1_0000;

/// A complete executable that prints `message` on stdout and exits with 0.
pub fn hello_elf(arch: Arch, message: &str) -> Vec<u8> {
    match arch {
        Arch::Aarch64 => elf64_aarch64(message.as_bytes()),
        Arch::Arm => elf32_arm(message.as_bytes()),
    }
}

fn elf64_aarch64(msg: &[u8]) -> Vec<u8> {
    const EHDR: u64 = 64;
    const PHDR: u64 = 56;
    let code_off = EHDR + PHDR; // 120, a multiple of 4 as instructions require
    let code = [
        movz_x(0, 1),    // x0 = 1 (stdout)
        adr_x(1, 0),     // x1 = address of the message (offset patched below)
        ldr_x_lit(2, 0), // x2 = message length, from the literal (offset patched below)
        movz_x(8, 64),   // x8 = 64, __NR_write
        SVC0_A64,
        movz_x(0, 0),  // x0 = 0, exit status
        movz_x(8, 93), // x8 = 93, __NR_exit
        SVC0_A64,
    ];
    let code_len = 4 * code.len() as u64;
    // The 8-byte literal is kept 8-aligned; Linux does not require it, but it costs nothing.
    let lit_off = (code_off + code_len).next_multiple_of(8);
    let msg_off = lit_off + 8;
    let mut code = code;
    code[1] = adr_x(1, (msg_off - (code_off + 4)) as u32);
    code[2] = ldr_x_lit(2, (lit_off - (code_off + 8)) as u32);

    let total = msg_off + msg.len() as u64;
    let mut f = Vec::with_capacity(total as usize);
    // e_ident: magic, ELFCLASS64, little-endian, EV_CURRENT, OSABI SYSV, padding.
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&(BASE + code_off).to_le_bytes()); // e_entry
    f.extend_from_slice(&EHDR.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections needed to run
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&(EHDR as u16).to_le_bytes()); // e_ehsize
    f.extend_from_slice(&(PHDR as u16).to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
                                  // PT_LOAD, PF_R|PF_X, from file offset 0 so that offset and address agree modulo the page.
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&5u32.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    f.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    f.extend_from_slice(&total.to_le_bytes()); // p_filesz
    f.extend_from_slice(&total.to_le_bytes()); // p_memsz
    f.extend_from_slice(&PAGE.to_le_bytes()); // p_align
    for insn in code {
        f.extend_from_slice(&insn.to_le_bytes());
    }
    f.resize(lit_off as usize, 0);
    f.extend_from_slice(&(msg.len() as u64).to_le_bytes());
    f.extend_from_slice(msg);
    f
}

/// SVC #0: 1101_0100_000 imm16 000_01.
const SVC0_A64: u32 = 0xd400_0001;

/// MOVZ Xd, #imm16 (sf=1, opc=10, hw=0): 1_10_100101_00 imm16 Rd.
const fn movz_x(rd: u32, imm16: u32) -> u32 {
    0xd280_0000 | (imm16 << 5) | rd
}

/// ADR Xd, #offset (PC-relative, offset from this instruction): 0 immlo 10000 immhi Rd, where
/// immlo is the low 2 bits and immhi the next 19.
const fn adr_x(rd: u32, offset: u32) -> u32 {
    0x1000_0000 | ((offset & 3) << 29) | (((offset >> 2) & 0x7_ffff) << 5) | rd
}

/// LDR Xt, label (literal, 64-bit): 01 011 0 00 imm19 Rt, with the offset from this instruction
/// in words.
const fn ldr_x_lit(rt: u32, offset: u32) -> u32 {
    0x5800_0000 | (((offset >> 2) & 0x7_ffff) << 5) | rt
}

fn elf32_arm(msg: &[u8]) -> Vec<u8> {
    const EHDR: u32 = 52;
    const PHDR: u32 = 32;
    let code_off = EHDR + PHDR; // 84, word-aligned as ARM-mode code requires
                                // In ARM mode, reading PC gives the address of the current instruction plus 8.
    let code = [
        mov_imm(0, 1), // r0 = 1 (stdout)
        add_pc(1, 0),  // r1 = address of the message (offset patched below)
        ldr_pc(2, 0),  // r2 = message length, from the literal (offset patched below)
        mov_imm(7, 4), // r7 = 4, __NR_write (EABI passes the number in r7)
        SVC0_A32,
        mov_imm(0, 0), // r0 = 0, exit status
        mov_imm(7, 1), // r7 = 1, __NR_exit
        SVC0_A32,
    ];
    let code_len = 4 * code.len() as u32;
    let lit_off = code_off + code_len;
    let msg_off = lit_off + 4;
    let mut code = code;
    code[1] = add_pc(1, msg_off - (code_off + 4 + 8));
    code[2] = ldr_pc(2, lit_off - (code_off + 8 + 8));

    let total = msg_off + msg.len() as u32;
    let base = BASE as u32;
    let mut f = Vec::with_capacity(total as usize);
    // e_ident: magic, ELFCLASS32, little-endian, EV_CURRENT, OSABI SYSV (what EABI uses).
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 1, 1, 1, 0]);
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&40u16.to_le_bytes()); // EM_ARM
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
                                              // Entry with bit 0 clear: start in ARM (not Thumb) state.
    f.extend_from_slice(&(base + code_off).to_le_bytes());
    f.extend_from_slice(&EHDR.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_shoff
                                              // EF_ARM_EABI_VER5; no float flag, the code uses no floating point.
    f.extend_from_slice(&0x0500_0000u32.to_le_bytes());
    f.extend_from_slice(&(EHDR as u16).to_le_bytes()); // e_ehsize
    f.extend_from_slice(&(PHDR as u16).to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
                                  // PT_LOAD (ELF32 field order differs from ELF64: p_flags comes after p_memsz).
    f.extend_from_slice(&1u32.to_le_bytes()); // p_type
    f.extend_from_slice(&0u32.to_le_bytes()); // p_offset
    f.extend_from_slice(&base.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&base.to_le_bytes()); // p_paddr
    f.extend_from_slice(&total.to_le_bytes()); // p_filesz
    f.extend_from_slice(&total.to_le_bytes()); // p_memsz
    f.extend_from_slice(&5u32.to_le_bytes()); // p_flags: PF_R|PF_X
    f.extend_from_slice(&(PAGE as u32).to_le_bytes()); // p_align
    for insn in code {
        f.extend_from_slice(&insn.to_le_bytes());
    }
    f.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    f.extend_from_slice(msg);
    f
}

/// SVC #0, condition AL: 1110 1111 imm24.
const SVC0_A32: u32 = 0xef00_0000;

/// MOV Rd, #imm8 (condition AL, data-processing immediate, opcode 1101, rotation 0):
/// 1110 001 1101 0 0000 Rd 0000 imm8.
const fn mov_imm(rd: u32, imm8: u32) -> u32 {
    0xe3a0_0000 | (rd << 12) | imm8
}

/// ADD Rd, PC, #imm8 (opcode 0100, Rn = 15, rotation 0): 1110 001 0100 0 1111 Rd 0000 imm8.
/// Only byte offsets below 256 are encodable this way, which the fixed layout guarantees.
const fn add_pc(rd: u32, imm8: u32) -> u32 {
    0xe28f_0000 | (rd << 12) | (imm8 & 0xff)
}

/// LDR Rt, [PC, #imm12] (pre-indexed, add, word): 1110 010 1 1 0 0 1 1111 Rt imm12.
const fn ldr_pc(rt: u32, imm12: u32) -> u32 {
    0xe59f_0000 | (rt << 12) | (imm12 & 0xfff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes([b[o], b[o + 1]])
    }
    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn aarch64_header_fields() {
        let f = hello_elf(Arch::Aarch64, "hi\n");
        assert_eq!(&f[..7], b"\x7fELF\x02\x01\x01");
        assert_eq!(u16_at(&f, 16), 2);
        assert_eq!(u16_at(&f, 18), 183);
        assert_eq!(u16_at(&f, 56), 1);
        let entry = u64_at(&f, 24);
        let ph = u64_at(&f, 32) as usize;
        assert_eq!(u32_at(&f, ph), 1);
        let (vaddr, filesz) = (u64_at(&f, ph + 16), u64_at(&f, ph + 32));
        assert_eq!(filesz, f.len() as u64);
        assert!(entry >= vaddr && entry + 32 <= vaddr + filesz);
        assert_eq!(entry % 4, 0);
        assert!(f.ends_with(b"hi\n"));
        // The length literal sits just before the message.
        assert_eq!(u64_at(&f, f.len() - 3 - 8), 3);
    }

    #[test]
    fn arm_header_fields() {
        let f = hello_elf(Arch::Arm, "hello");
        assert_eq!(&f[..7], b"\x7fELF\x01\x01\x01");
        assert_eq!(u16_at(&f, 16), 2);
        assert_eq!(u16_at(&f, 18), 40);
        assert_eq!(u32_at(&f, 36) >> 24, 5, "EABI version 5");
        let entry = u32_at(&f, 24);
        let ph = u32_at(&f, 28) as usize;
        assert_eq!(u32_at(&f, ph), 1);
        let (vaddr, filesz) = (u32_at(&f, ph + 8), u32_at(&f, ph + 16));
        assert_eq!(filesz as usize, f.len());
        assert!(entry >= vaddr && entry + 32 <= vaddr + filesz);
        assert_eq!(entry % 4, 0, "ARM state, word-aligned");
        assert_eq!(u32_at(&f, f.len() - 5 - 4), 5);
    }

    #[test]
    fn encodings_match_the_assembler() {
        // Reference words as the LLVM assembler encodes them (checked with llvm-mc).
        assert_eq!(movz_x(0, 1), 0xd280_0020); // mov x0, #1
        assert_eq!(movz_x(8, 93), 0xd280_0ba8); // mov x8, #93
        assert_eq!(adr_x(1, 28), 0x1000_00e1); // adr x1, .+28
        assert_eq!(ldr_x_lit(2, 24), 0x5800_00c2); // ldr x2, .+24
        assert_eq!(mov_imm(7, 4), 0xe3a0_7004); // mov r7, #4
        assert_eq!(add_pc(1, 24), 0xe28f_1018); // add r1, pc, #24
        assert_eq!(ldr_pc(2, 16), 0xe59f_2010); // ldr r2, [pc, #16]
    }

    /// Runs each program under qemu-user directly (no binfmt_misc needed). qemu-user-static is
    /// a declared dependency of the test setup, so its absence is a failure.
    #[test]
    fn programs_print_their_message_under_qemu() {
        for (arch, qemu) in [
            (Arch::Aarch64, "/usr/bin/qemu-aarch64-static"),
            (Arch::Arm, "/usr/bin/qemu-arm-static"),
        ] {
            assert!(
                Path::new(qemu).exists(),
                "{qemu} is missing: install qemu-user-static"
            );
            for message in ["", "hello from pi-builder\n", &"x".repeat(300)] {
                let file = TempExe::new(&hello_elf(arch, message));
                let out = Command::new(qemu).arg(&file.0).output().unwrap();
                assert!(out.status.success(), "{arch}: {out:?}");
                assert_eq!(String::from_utf8_lossy(&out.stdout), message, "{arch}");
                assert!(out.stderr.is_empty(), "{arch}: {out:?}");
            }
        }
    }

    /// An executable file in the temp directory, removed on drop (std only: no tempfile crate).
    struct TempExe(PathBuf);

    impl TempExe {
        fn new(bytes: &[u8]) -> TempExe {
            use std::os::unix::fs::PermissionsExt;
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "pib-hello-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            TempExe(path)
        }
    }

    impl Drop for TempExe {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
