//! Waiting for SIGINT or SIGTERM without a signal handler.
//!
//! The main thread blocks both signals *before* it starts any shard thread, so every thread
//! inherits the mask and the kernel delivers them to no one; the main thread then takes them
//! synchronously with `sigwait(3)`. No handler runs on a shard's pinned core, and no
//! async-signal-safety rules apply to what happens after the signal.

use std::io;
use std::mem::MaybeUninit;

/// SIGINT and SIGTERM, blocked in the calling thread (and in threads it starts later).
#[derive(Debug)]
pub struct TerminationSignals {
    set: libc::sigset_t,
}

impl TerminationSignals {
    /// Blocks SIGINT and SIGTERM in the calling thread. Call it before starting threads.
    pub fn block() -> io::Result<TerminationSignals> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; `set` is ours and writable.
        if unsafe { libc::sigemptyset(set.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sigemptyset returned 0, so the set is initialised.
        let mut set = unsafe { set.assume_init() };
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: `set` is an initialised sigset_t; the signals are valid numbers.
            if unsafe { libc::sigaddset(&mut set, signal) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `set` is initialised; a null old-set pointer is allowed.
        let error = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if error != 0 {
            return Err(io::Error::from_raw_os_error(error));
        }
        Ok(TerminationSignals { set })
    }

    /// Waits until SIGINT or SIGTERM arrives and returns its number.
    pub fn wait(&self) -> io::Result<libc::c_int> {
        let mut signal: libc::c_int = 0;
        // SAFETY: `self.set` is an initialised sigset_t and `signal` is a writable int.
        let error = unsafe { libc::sigwait(&self.set, &mut signal) };
        if error != 0 {
            return Err(io::Error::from_raw_os_error(error));
        }
        Ok(signal)
    }
}

/// The conventional name of `signal` for logs: `SIGINT`, `SIGTERM`, or the number.
#[must_use]
pub fn name(signal: libc::c_int) -> String {
    match signal {
        libc::SIGINT => "SIGINT".to_owned(),
        libc::SIGTERM => "SIGTERM".to_owned(),
        other => format!("signal {other}"),
    }
}
