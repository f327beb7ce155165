//! Start-up checks that turn kernel refusals into actionable errors.

use crate::RuntimeError;

/// Checks that io_uring can be set up in this process.
pub fn check_io_uring() -> Result<(), RuntimeError> {
    let mut params = [0u8; 120]; // struct io_uring_params, zeroed
                                 // SAFETY: io_uring_setup(2) reads and writes `params` (120 bytes, the kernel's size of
                                 // struct io_uring_params); on success we own the returned fd and close it.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        let hint = match error.raw_os_error() {
            Some(libc::ENOSYS) => "the kernel was built without io_uring (CONFIG_IO_URING)",
            Some(libc::EPERM) => {
                "io_uring is disabled: set `sysctl kernel.io_uring_disabled=0`, or allow it in the container's seccomp profile"
            }
            Some(libc::ENOMEM) => "the memlock limit is too low even for a tiny ring: raise `ulimit -l`",
            _ => "see io_uring_setup(2)",
        };
        return Err(RuntimeError::IoUringUnavailable { error, hint });
    }
    // SAFETY: `fd` is a file descriptor we just opened and nobody else holds.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Makes sure `needed_bytes` may be locked: raises the soft limit up to the hard limit if
/// needed, and explains how to fix it when that is not enough. Processes with
/// CAP_IPC_LOCK (root here) are not bound by the limit.
pub fn ensure_memlock(needed_bytes: u64) -> Result<u64, RuntimeError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Ok(0);
    }
    if limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= needed_bytes || has_cap_ipc_lock()
    {
        return Ok(limit.rlim_cur);
    }
    if limit.rlim_max == libc::RLIM_INFINITY || limit.rlim_max >= needed_bytes {
        let raised = libc::rlimit {
            rlim_cur: needed_bytes,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            return Ok(needed_bytes);
        }
    }
    Err(RuntimeError::MemlockTooLow {
        needed_bytes,
        limit_bytes: limit.rlim_cur,
        hard_limit_bytes: limit.rlim_max,
    })
}

fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_uring_is_available_here() {
        check_io_uring().unwrap();
    }

    #[test]
    fn small_memlock_needs_are_met() {
        ensure_memlock(64 * 1024).unwrap();
    }
}
