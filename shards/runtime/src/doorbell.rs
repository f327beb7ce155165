//! Wake-ups for parked shards: one socket pair per shard.
//!
//! A parked shard awaits a read on its end through glommio (io_uring), so the executor
//! sleeps in the kernel. Any other thread rings by writing one byte to the other end with
//! a plain non-blocking `write`. A full socket buffer means wake-ups are already pending,
//! so `WouldBlock` is ignored. glommio's own cross-executor channels wake through the same
//! kind of path but cost 20–90 µs per round trip; busy-polling shards never ring.

use std::io::Write;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;

use futures_lite::AsyncReadExt;

/// The ringing side; shared by every thread that may wake the shard.
#[derive(Debug)]
pub struct Bell {
    stream: UnixStream,
}

impl Bell {
    /// Wakes the shard (idempotent; never blocks).
    pub fn ring(&self) {
        // A full buffer (WouldBlock) already guarantees a wake-up; other errors mean the
        // shard is gone, and a gone shard needs no wake-up.
        let _ = (&self.stream).write(&[1]);
    }
}

/// The waiting side, owned by the shard's thread.
#[derive(Debug)]
pub struct Waiter {
    stream: std::os::fd::OwnedFd,
}

impl Waiter {
    /// Turns the waiting end into a glommio stream; call on the shard's executor.
    pub fn into_async(self) -> AsyncWaiter {
        // SAFETY: the fd is an open, owned Unix stream socket; ownership moves into glommio.
        let stream = unsafe { glommio::net::UnixStream::from_raw_fd(self.stream.into_raw_fd()) };
        AsyncWaiter {
            stream,
            buf: [0; 64],
        }
    }
}

/// The waiting end on a glommio executor.
#[derive(Debug)]
pub struct AsyncWaiter {
    stream: glommio::net::UnixStream,
    buf: [u8; 64],
}

impl AsyncWaiter {
    /// Waits for at least one ring, and swallows up to 64 pending ones.
    pub async fn wait(&mut self) -> std::io::Result<()> {
        self.stream.read(&mut self.buf).await.map(|_| ())
    }
}

/// A new doorbell.
pub fn doorbell() -> std::io::Result<(Bell, Waiter)> {
    let (ring_end, wait_end) = UnixStream::pair()?;
    ring_end.set_nonblocking(true)?;
    wait_end.set_nonblocking(true)?;
    Ok((
        Bell { stream: ring_end },
        Waiter {
            stream: wait_end.into(),
        },
    ))
}
