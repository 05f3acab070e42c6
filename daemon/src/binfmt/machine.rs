//! The machines pi-builder emulates and the binfmt_misc rules it registers for them.

use std::path::Path;

use pib_dbus_interfaces::types::Arch;

/// ELF identification and header constants used by the rules below.
pub(crate) mod elf {
    pub const MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
    pub const CLASS32: u8 = 1;
    pub const CLASS64: u8 = 2;
    pub const DATA_LE: u8 = 1;
    pub const VERSION_CURRENT: u8 = 1;
    pub const OSABI_SYSV: u8 = 0;
    pub const ET_EXEC: u16 = 2;
    pub const ET_DYN: u16 = 3;
    pub const EM_ARM: u16 = 40;
    pub const EM_X86_64: u16 = 62;
    pub const EM_AARCH64: u16 = 183;
}

/// Length of the magic and mask pi-builder registers: e_ident (16 bytes), e_type and e_machine.
pub const RULE_LEN: usize = 20;

/// The flags of our entries.
///
/// F (fix-binary) makes the kernel open the interpreter once, at registration, and use that open
/// file for every later exec, in any mount namespace: build containers then run ARM programs
/// without carrying a copy of qemu.
///
/// C and O are left out on purpose. C runs setuid programs with their credentials, which makes
/// qemu itself run as root when a user starts a setuid ARM binary; qemu trusts QEMU_* variables
/// from the environment (QEMU_LD_PREFIX, QEMU_STRACE, QEMU_GDB, ...), so that user could steer a
/// root-privileged emulator. Without C, setuid ARM programs run with the caller's credentials,
/// which is what image builds need. O (which C implies) hands qemu an open descriptor of the
/// program so it can run binaries the caller may not read; that only serves the C use case.
pub const FLAGS: &str = "F";

/// How pi-builder recognises and handles one machine's binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub arch: Arch,
    /// The name of our binfmt_misc entry for this machine.
    pub entry_name: &'static str,
    pub magic: [u8; RULE_LEN],
    pub mask: [u8; RULE_LEN],
    /// Packaged interpreters accepted for this machine, in order of preference.
    pub interpreters: &'static [&'static str],
    class: u8,
    e_machine: u16,
}

// The mask clears two things in an otherwise exact ELF header prefix:
// - byte 7 (EI_OSABI): toolchains write SYSV (0) or GNU/Linux (3) there for the same programs;
// - the low bit of e_type (byte 16): ET_EXEC (2) and ET_DYN (3) differ only there, and most
//   programs in a current distribution are ET_DYN (PIE).
// EI_ABIVERSION (byte 8) stays exact: Linux only runs ABI version 0 for these machines.
const MASK: [u8; RULE_LEN] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, // e_ident[0..8]
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // e_ident[8..16]
    0xfe, 0xff, 0xff, 0xff, // e_type, e_machine (little-endian)
];

const fn rule_magic(class: u8, e_machine: u16) -> [u8; RULE_LEN] {
    let m = e_machine.to_le_bytes();
    [
        elf::MAGIC[0],
        elf::MAGIC[1],
        elf::MAGIC[2],
        elf::MAGIC[3],
        class,
        elf::DATA_LE,
        elf::VERSION_CURRENT,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        elf::ET_EXEC as u8,
        0,
        m[0],
        m[1],
    ]
}

pub const ARM: Machine = Machine {
    arch: Arch::Arm,
    entry_name: "pib-qemu-arm",
    magic: rule_magic(elf::CLASS32, elf::EM_ARM),
    mask: MASK,
    interpreters: &[
        "/usr/bin/qemu-arm-static",
        "/usr/bin/qemu-arm",
        "/usr/libexec/qemu-binfmt/arm-binfmt-P",
    ],
    class: elf::CLASS32,
    e_machine: elf::EM_ARM,
};

pub const AARCH64: Machine = Machine {
    arch: Arch::Aarch64,
    entry_name: "pib-qemu-aarch64",
    magic: rule_magic(elf::CLASS64, elf::EM_AARCH64),
    mask: MASK,
    interpreters: &[
        "/usr/bin/qemu-aarch64-static",
        "/usr/bin/qemu-aarch64",
        "/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
    ],
    class: elf::CLASS64,
    e_machine: elf::EM_AARCH64,
};

pub const MACHINES: [Machine; 2] = [ARM, AARCH64];

/// The table row of `arch`.
pub fn machine(arch: Arch) -> &'static Machine {
    match arch {
        Arch::Arm => &ARM,
        Arch::Aarch64 => &AARCH64,
    }
}

impl Machine {
    /// Headers of typical programs of this machine, used to decide whether an entry someone else
    /// registered catches them: a plain executable and a PIE.
    pub fn samples(&self) -> [Vec<u8>; 2] {
        [
            sample_header(self.class, self.e_machine, elf::ET_EXEC, elf::OSABI_SYSV),
            sample_header(self.class, self.e_machine, elf::ET_DYN, elf::OSABI_SYSV),
        ]
    }

    /// The line that registers this machine's entry when written to binfmt_misc's `register`.
    ///
    /// The interpreter must already be validated: it cannot contain ':' or a newline.
    pub fn register_line(&self, interpreter: &Path) -> String {
        let mut line = format!(":{}:M:0:", self.entry_name);
        // Every byte is escaped, so a ':' inside the magic or mask cannot end the field early.
        for b in self.magic {
            line.push_str(&format!("\\x{b:02x}"));
        }
        line.push(':');
        for b in self.mask {
            line.push_str(&format!("\\x{b:02x}"));
        }
        line.push(':');
        line.push_str(&interpreter.to_string_lossy());
        line.push(':');
        line.push_str(FLAGS);
        line
    }
}

/// A complete, plausible ELF header for a little-endian Linux program.
///
/// The whole header (not only the 20 bytes we match) is built because foreign entries may look
/// at other offsets, such as e_flags.
pub fn sample_header(class: u8, e_machine: u16, e_type: u16, osabi: u8) -> Vec<u8> {
    let is64 = class == elf::CLASS64;
    let mut h = Vec::with_capacity(64);
    h.extend_from_slice(&elf::MAGIC);
    h.extend_from_slice(&[class, elf::DATA_LE, elf::VERSION_CURRENT, osabi, 0]);
    h.resize(16, 0);
    h.extend_from_slice(&e_type.to_le_bytes());
    h.extend_from_slice(&e_machine.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes()); // e_version
                                              // EABI5 with the hard-float flag: what Raspberry Pi OS armhf binaries carry.
    let flags: u32 = if e_machine == elf::EM_ARM {
        0x0500_0400
    } else {
        0
    };
    if is64 {
        h.extend_from_slice(&0x1000u64.to_le_bytes()); // e_entry
        h.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        h.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        h.extend_from_slice(&flags.to_le_bytes());
        for v in [64u16, 56, 9, 64, 0, 0] {
            h.extend_from_slice(&v.to_le_bytes());
        }
    } else {
        h.extend_from_slice(&0x1000u32.to_le_bytes());
        h.extend_from_slice(&52u32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&flags.to_le_bytes());
        for v in [52u16, 32, 9, 40, 0, 0] {
            h.extend_from_slice(&v.to_le_bytes());
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_is_the_exact_elf_prefix_and_mask_only_frees_osabi_and_type_bit() {
        assert_eq!(
            AARCH64.magic,
            [
                0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x02, 0x00, 0xb7, 0x00
            ]
        );
        assert_eq!(&ARM.magic[4..7], &[1, 1, 1]);
        assert_eq!(&ARM.magic[16..], &[2, 0, 40, 0]);
        let freed: Vec<usize> = (0..RULE_LEN).filter(|&i| MASK[i] != 0xff).collect();
        assert_eq!(freed, vec![7, 16]);
        assert_eq!(MASK[16], 0xfe);
        // A pre-masked magic: the kernel compares masked bytes, and a tidy magic reads back equal.
        for m in MACHINES {
            for i in 0..RULE_LEN {
                assert_eq!(m.magic[i] & m.mask[i], m.magic[i]);
            }
        }
    }

    #[test]
    fn register_line_format() {
        let line = AARCH64.register_line(Path::new("/usr/bin/qemu-aarch64-static"));
        assert_eq!(
            line,
            ":pib-qemu-aarch64:M:0:\
             \\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\
             \\x02\\x00\\xb7\\x00:\
             \\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\
             \\xfe\\xff\\xff\\xff:/usr/bin/qemu-aarch64-static:F"
        );
        let arm = ARM.register_line(Path::new("/usr/bin/qemu-arm-static"));
        assert!(arm.starts_with(":pib-qemu-arm:M:0:\\x7f\\x45\\x4c\\x46\\x01\\x01\\x01\\x00"));
        assert!(arm.contains("\\x02\\x00\\x28\\x00:"));
        assert!(arm.ends_with(":/usr/bin/qemu-arm-static:F"));
        // The kernel limits a registration to 1920 bytes.
        assert!(line.len() < 1920);
        assert_eq!(line.split(':').count(), 8);
    }

    #[test]
    fn samples_are_well_formed_headers() {
        let [exec, dyn_] = AARCH64.samples();
        assert_eq!(exec.len(), 64);
        assert_eq!(&exec[16..20], &[2, 0, 183, 0]);
        assert_eq!(&dyn_[16..20], &[3, 0, 183, 0]);
        let [exec, _] = ARM.samples();
        assert_eq!(exec.len(), 52);
        assert_eq!(exec[4], elf::CLASS32);
    }
}
