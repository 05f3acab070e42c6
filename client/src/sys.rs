//! The client's only `unsafe` code: thin, reviewed wrappers with safe signatures.
//!
//! Every other module is compiled with `unsafe_code` denied (the workspace's `[lints]`), and
//! tests/unsafe_scan.rs fails the suite if `unsafe` appears anywhere else.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the child that `cmd` spawns keep `fd` open across exec (the descriptor is
/// close-on-exec here so that no other child inherits it), and end with SIGTERM when this
/// process dies. A child whose parent is no longer `parent` by the time it runs exits at once.
///
/// The caller holds `fd` open until the spawn returns, so the number still names it in the
/// child; were it closed, the child's fcntl would fail and the spawn with it.
pub fn keep_fd_and_die_with_parent(cmd: &mut Command, fd: RawFd, parent: u32) {
    // SAFETY: the closure runs in the forked child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes only fcntl, prctl, getppid and _exit, with
    // no allocation, no locks and no access to data another thread could hold.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
            // The parent may have died before prctl: then no signal would ever come.
            if libc::getppid() as u32 != parent {
                libc::_exit(0);
            }
            Ok(())
        });
    }
}
