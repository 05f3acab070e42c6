//! The user's terminal in raw mode while a container uses it, and back as it was afterwards,
//! on every way out: the normal end, an error, a panic (the guard's `Drop` while unwinding, and
//! a panic hook for when there is no unwinding), and the signals that would end the client
//! (caught by the shell command, which then returns through the guard's `Drop`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, Once};

use rustix::fs::OFlags;
use rustix::termios::{self, OptionalActions, Termios};

/// What to put back, kept where the panic hook can find it.
struct Saved {
    /// A duplicate of the terminal's descriptor: it shares the open file description (so the
    /// status flags put back are the user's), and stays valid even if the caller's closes.
    fd: OwnedFd,
    termios: Termios,
    flags: OFlags,
}

static SAVED: Mutex<Option<Saved>> = Mutex::new(None);
static HOOK: Once = Once::new();

/// The terminal is raw while this lives.
#[must_use = "the terminal is restored when the guard is dropped"]
pub struct RawMode {
    _private: (),
}

impl RawMode {
    /// Puts the terminal on `fd` in raw mode: no echo, no line editing, no signals from
    /// Ctrl-C or Ctrl-Z (they reach the container as bytes), no output processing (the
    /// container's terminal does its own).
    pub fn enter(fd: BorrowedFd<'_>) -> io::Result<RawMode> {
        let termios = termios::tcgetattr(fd)?;
        // The daemon reads and writes the terminal through descriptors of its own, but a
        // careless peer could set O_NONBLOCK on the open file description, which the user's
        // shell shares; that is put back too.
        let flags = rustix::fs::fcntl_getfl(fd)?;
        let mut raw = termios.clone();
        raw.make_raw();
        let saved_fd = fd.try_clone_to_owned()?;
        install_panic_hook();
        *lock() = Some(Saved {
            fd: saved_fd,
            termios,
            flags,
        });
        // TCSANOW, not TCSAFLUSH: keys typed while the container started are the user's
        // first input to it, not to be thrown away.
        if let Err(e) = termios::tcsetattr(fd, OptionalActions::Now, &raw) {
            lock().take();
            return Err(e.into());
        }
        Ok(RawMode { _private: () })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<Saved>> {
    // A panic while the lock was held leaves it poisoned, and restoring matters more then.
    SAVED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Puts the terminal back, once; later calls do nothing.
pub fn restore() {
    let saved = match SAVED.try_lock() {
        Ok(mut guard) => guard.take(),
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner().take(),
        // Held by the thread that panicked in `enter`: nothing was changed yet.
        Err(std::sync::TryLockError::WouldBlock) => None,
    };
    if let Some(s) = saved {
        let fd = s.fd.as_fd();
        // TCSADRAIN: the container's last output is written in the mode it was meant for.
        let _ = termios::tcsetattr(fd, OptionalActions::Drain, &s.termios);
        let _ = rustix::fs::fcntl_setfl(fd, s.flags);
    }
}

/// The panic message must land on a sane terminal, and with `panic = "abort"` no destructor
/// runs at all; the hook covers both.
fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// The terminal's size as (rows, columns), when it knows it.
pub fn size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let ws = termios::tcgetwinsize(fd).ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    use rustix::termios::LocalModes;

    use pib_tests::pty::pty;

    fn canonical(fd: BorrowedFd<'_>) -> bool {
        termios::tcgetattr(fd)
            .unwrap()
            .local_modes
            .contains(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG)
    }

    /// One test, as the saved state is process-wide.
    #[test]
    fn raw_while_the_guard_lives_restored_after_and_after_a_panic() {
        let (_master, slave) = pty();
        let fd = slave.as_fd();
        assert_eq!(size(fd), Some((30, 100)));
        assert!(canonical(fd));

        let guard = RawMode::enter(fd).unwrap();
        assert!(!canonical(fd));
        assert!(termios::tcgetattr(fd)
            .unwrap()
            .local_modes
            .intersection(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG)
            .is_empty());
        // A peer setting O_NONBLOCK on the shared description is undone too.
        let flags = rustix::fs::fcntl_getfl(fd).unwrap();
        rustix::fs::fcntl_setfl(fd, flags | OFlags::NONBLOCK).unwrap();
        drop(guard);
        assert!(canonical(fd));
        assert!(!rustix::fs::fcntl_getfl(fd)
            .unwrap()
            .contains(OFlags::NONBLOCK));

        let result = std::panic::catch_unwind(|| {
            let fd = slave.as_fd();
            let _guard = RawMode::enter(fd).unwrap();
            assert!(!canonical(fd));
            panic!("deliberate");
        });
        assert!(result.is_err());
        assert!(canonical(fd), "restored by the hook and the unwinding");

        // The hook alone restores it, as with panic = "abort" where no destructor runs.
        let guard = RawMode::enter(fd).unwrap();
        std::mem::forget(guard);
        let _ = std::panic::catch_unwind(|| panic!("deliberate, no guard"));
        assert!(canonical(fd));
    }
}
