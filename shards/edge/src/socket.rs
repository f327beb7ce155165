//! The shard's UDP socket: `SO_REUSEPORT` binding and batched, non-blocking
//! `recvmmsg`/`sendmmsg`.
//!
//! The shard's driver busy-polls, so the socket is read with non-blocking batch calls
//! from the poll loop (one syscall for up to `batch` datagrams) rather than through
//! glommio's io_uring, whose completions would only be reaped if the shard yielded. See
//! `docs/decisions/why-edge-polled-sockets.md`.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Largest UDP payload read or written (QUIC packets are at most this here).
pub const DATAGRAM_BYTES_MAX: usize = 1500;
/// Socket buffer sizes asked of the kernel (it caps them at `net.core.[rw]mem_max`).
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Binds `addr` non-blocking with `SO_REUSEPORT` (so every shard can bind the same
/// address) and large buffers.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Best effort: a smaller buffer only means earlier drops under bursts.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Buffers for one `recvmmsg` / `sendmmsg` batch, allocated once per shard.
pub struct Batch {
    bufs: Vec<[u8; DATAGRAM_BYTES_MAX]>,
    lens: Vec<usize>,
    addrs: Vec<SocketAddr>,
    /// Datagrams filled (received, or queued for sending).
    filled: usize,
    names: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("capacity", &self.bufs.len())
            .field("filled", &self.filled)
            .finish()
    }
}

impl Batch {
    /// Room for `datagrams` datagrams (at least 1).
    pub fn new(datagrams: usize) -> Batch {
        let n = datagrams.max(1);
        Batch {
            bufs: vec![[0; DATAGRAM_BYTES_MAX]; n],
            lens: vec![0; n],
            addrs: vec![SocketAddr::from(([0, 0, 0, 0], 0)); n],
            filled: 0,
            // SAFETY: sockaddr_storage is a plain C struct; all-zero bytes are valid.
            names: vec![unsafe { zeroed() }; n],
            // SAFETY: iovec is a plain C struct (a null pointer and a length of 0).
            iovecs: vec![unsafe { zeroed() }; n],
            // SAFETY: mmsghdr is a plain C struct; all-zero is an empty header.
            headers: vec![unsafe { zeroed() }; n],
        }
    }

    /// Datagrams held.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// Whether no datagram is held.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Whether no more datagram fits.
    pub fn is_full(&self) -> bool {
        self.filled == self.bufs.len()
    }

    /// Datagram `i` and its address (after `recv`, or as queued).
    pub fn get_mut(&mut self, i: usize) -> (&mut [u8], SocketAddr) {
        let len = self.lens[i];
        (&mut self.bufs[i][..len], self.addrs[i])
    }

    /// The buffer for the next datagram to send; commit it with [`Batch::commit`].
    pub fn next_buf(&mut self) -> Option<&mut [u8; DATAGRAM_BYTES_MAX]> {
        self.bufs.get_mut(self.filled)
    }

    /// Queues the `len` bytes written into [`Batch::next_buf`] for `to`.
    pub fn commit(&mut self, len: usize, to: SocketAddr) {
        self.lens[self.filled] = len;
        self.addrs[self.filled] = to;
        self.filled += 1;
    }

    /// Points header `slot` at address slot `slot` and at `len` bytes of buffer `buf`.
    fn point_header(&mut self, slot: usize, buf: usize, len: usize, name_len: libc::socklen_t) {
        self.iovecs[slot] = libc::iovec {
            iov_base: self.bufs[buf].as_mut_ptr().cast(),
            iov_len: len,
        };
        let header = &mut self.headers[slot];
        header.msg_hdr.msg_name = (&raw mut self.names[slot]).cast();
        header.msg_hdr.msg_namelen = name_len;
        header.msg_hdr.msg_iov = &raw mut self.iovecs[slot];
        header.msg_hdr.msg_iovlen = 1;
        header.msg_hdr.msg_control = std::ptr::null_mut();
        header.msg_hdr.msg_controllen = 0;
        header.msg_hdr.msg_flags = 0;
        header.msg_len = 0;
    }

    /// Reads up to a batch of datagrams without blocking; returns how many (0: none).
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let n = self.bufs.len();
        for i in 0..n {
            let name_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            self.point_header(i, i, DATAGRAM_BYTES_MAX, name_len);
        }
        // SAFETY: every header points at a live iovec over a live buffer of the stated
        // length and at a live sockaddr_storage, all owned by `self` and not moved during
        // the call; `n` is the number of headers.
        let got = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            let error = io::Error::last_os_error();
            self.filled = 0;
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(error),
            };
        }
        let got = got as usize;
        for i in 0..got {
            self.lens[i] = self.headers[i].msg_len as usize;
            self.addrs[i] =
                from_storage(&self.names[i]).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        }
        self.filled = got;
        Ok(got)
    }

    /// Sends the queued datagrams with `sendmmsg`; those the kernel does not take now
    /// (its buffer is full) are dropped, as a router would: QUIC retransmits. Returns
    /// how many were sent; the batch is empty afterwards.
    pub fn send(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let total = self.filled;
        let mut sent = 0;
        while sent < total {
            let n = total - sent;
            for i in 0..n {
                let k = sent + i;
                let name_len = to_storage(self.addrs[k], &mut self.names[i]);
                self.point_header(i, k, self.lens[k], name_len);
            }
            // SAFETY: as in `recv`: `n` initialised headers pointing at live buffers and
            // addresses owned by `self`.
            let result = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.headers.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if result < 0 {
                let error = io::Error::last_os_error();
                match error.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => break,
                    _ => {
                        self.filled = 0;
                        return Err(error);
                    }
                }
            }
            if result == 0 {
                break;
            }
            sent += result as usize;
        }
        self.filled = 0;
        Ok(sent)
    }
}

fn from_storage(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large
            // and aligned enough for.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn to_storage(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in;
            // we write a whole, valid value.
            let sin = unsafe {
                &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            *sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            *sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sockets_share_a_port_and_batches_round_trip() {
        let a = bind_reuseport("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let port = a.local_addr().expect("addr").port();
        let b = bind_reuseport(SocketAddr::from(([127, 0, 0, 1], port))).expect("reuseport");
        drop(b);
        let peer = bind_reuseport("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let mut out = Batch::new(4);
        for i in 0..3u8 {
            let buf = out.next_buf().expect("room");
            buf[..2].copy_from_slice(&[i, i]);
            out.commit(2, a.local_addr().expect("addr"));
        }
        assert_eq!(out.send(&peer).expect("send"), 3);
        let mut inb = Batch::new(8);
        let mut got = 0;
        for _ in 0..1000 {
            got += inb.recv(&a).expect("recv");
            if got == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(got, 3);
        let (bytes, from) = inb.get_mut(2);
        assert_eq!(bytes, &[2, 2]);
        assert_eq!(from, peer.local_addr().expect("addr"));
    }
}
