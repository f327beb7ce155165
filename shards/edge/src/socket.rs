//! The shard's UDP socket: `SO_REUSEPORT` binding and batched, non-blocking
//! `recvmmsg`/`sendmmsg`, with GSO trains out and GRO reads in where the kernel has them.
//!
//! The shard's driver busy-polls, so the socket is read with non-blocking batch calls
//! from the poll loop (one syscall for up to `batch` datagrams) rather than through
//! glommio's io_uring, whose completions would only be reaped if the shard yielded. See
//! `docs/decisions/why-edge-in-the-shard-loop.md`.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Largest UDP payload read or written (QUIC packets are at most this here).
pub const DATAGRAM_BYTES_MAX: usize = 1500;
/// Socket buffer sizes asked of the kernel (it caps them at `net.core.[rw]mem_max`).
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Binds `addr` non-blocking with `SO_REUSEPORT` (so every shard can bind the same
/// address) and large buffers.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<UdpSocket> {
    bind(addr, true)
}

/// Binds `addr` non-blocking with large buffers (a client's socket: no port sharing).
pub fn bind_client(addr: SocketAddr) -> io::Result<UdpSocket> {
    bind(addr, false)
}

fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    set_dont_fragment(&socket, addr.is_ipv6())?;
    // Best effort: a smaller buffer only means earlier drops under bursts.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Makes every datagram of `socket` leave unfragmented (the IP "don't fragment" bit,
/// `IP_PMTUDISC_PROBE`, and its IPv6 counterpart for an IPv6 socket, which may carry
/// IPv4 too). QUIC requires it (RFC 9000, section 14): a fragmented packet is lost when
/// any fragment is, and path MTU discovery needs a datagram the path cannot carry to be
/// lost, not split. A datagram larger than the local link's MTU then fails at once
/// with `EMSGSIZE` (see [`SendBatch::send`]); one larger than a later hop's is dropped
/// there. `PROBE` rather than `DO`: the kernel's cached path MTU, which anyone on the
/// path can lower with a forged ICMP message, does not limit the sizes QUIC probes.
pub fn set_dont_fragment(socket: &impl AsRawFd, ipv6: bool) -> io::Result<()> {
    let ipv4 = (
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    );
    if ipv6 {
        let (level, option, value) = (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        );
        set_option(socket, level, option, value)?;
        // A v6-only socket refuses the IPv4 option; it carries no IPv4 anyway.
        let _ = set_option(socket, ipv4.0, ipv4.1, ipv4.2);
        Ok(())
    } else {
        set_option(socket, ipv4.0, ipv4.1, ipv4.2)
    }
}

/// Asks the kernel to report each received datagram's destination address
/// (`IP_PKTINFO`, `IPV6_RECVPKTINFO`), for a socket bound to a wildcard address: a host
/// with several addresses must answer from the one the peer wrote to, or the peer drops
/// the answer (read them with a [`RecvBatch`] made [`RecvBatch::with_destinations`], and
/// send with [`SendBatch::commit_from`]). Returns whether the kernel accepted.
pub fn enable_destinations(socket: &UdpSocket, ipv6: bool) -> bool {
    let (level, option) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    set_option(socket, level, option, 1).is_ok()
}

/// Largest UDP payload of one `sendmsg` carrying a GSO train, and of one GRO read.
pub const TRAIN_BYTES_MAX: usize = 65_507;
/// Segments in one GSO train (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
const TRAIN_SEGMENTS_MAX: usize = 64;
/// Room for the control messages of one datagram: a `u16` (UDP_SEGMENT) or an `int`
/// (UDP_GRO), plus an address (`in_pktinfo` or `in6_pktinfo`), each after its `cmsghdr`.
const CONTROL_BYTES: usize = 128;

/// Sets the integer socket option `option` at `level` to `value`.
fn set_option(
    socket: &impl AsRawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid socket descriptor and a pointer to a live c_int of the stated size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turns on generic receive offload: the kernel may hand several datagrams of one
/// sender as one buffer (read them with a [`RecvBatch`] made with `gro: true`).
/// Returns whether the kernel accepted.
pub fn enable_gro(socket: &UdpSocket) -> bool {
    set_option(socket, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok()
}

/// Whether the kernel supports generic segmentation offload on this socket (probed by
/// setting, then clearing, a segment size).
pub fn gso_supported(socket: &UdpSocket) -> bool {
    let supported = set_option(socket, libc::SOL_UDP, libc::UDP_SEGMENT, 1200).is_ok();
    let _ = set_option(socket, libc::SOL_UDP, libc::UDP_SEGMENT, 0);
    supported
}

/// The `mmsghdr`s of one `sendmmsg`/`recvmmsg` call and what they point at, one set per
/// slot, allocated once.
#[derive(Default)]
struct MsgHeaders {
    names: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    controls: Vec<[u64; CONTROL_BYTES / 8]>,
    headers: Vec<libc::mmsghdr>,
}

impl MsgHeaders {
    fn new(n: usize) -> MsgHeaders {
        MsgHeaders {
            // SAFETY: plain C structs; all-zero bytes are valid values.
            names: vec![unsafe { zeroed() }; n],
            // SAFETY: as above.
            iovecs: vec![unsafe { zeroed() }; n],
            controls: vec![[0; CONTROL_BYTES / 8]; n],
            // SAFETY: as above.
            headers: vec![unsafe { zeroed() }; n],
        }
    }
}

/// A run of datagrams to one address, contiguous in the arena: every one `segment`
/// bytes except perhaps the last. Sent with one `mmsghdr` (and `UDP_SEGMENT` if more
/// than one).
#[derive(Clone, Copy, Debug)]
struct Train {
    start: usize,
    len: usize,
    segment: usize,
    segments: usize,
    to: SocketAddr,
    /// Source address to send from (a wildcard-bound socket), or the kernel's choice.
    from: Option<IpAddr>,
    /// A shorter last datagram ended the train.
    closed: bool,
}

/// Datagrams queued for one `sendmmsg`, written back to back into one buffer. With GSO,
/// consecutive datagrams to the same address form trains the kernel segments (one trip
/// through the stack per train instead of per datagram).
pub struct SendBatch {
    arena: Vec<u8>,
    /// Bytes of the arena written.
    used: usize,
    trains: Vec<Train>,
    datagrams: usize,
    gso: bool,
    msgs: MsgHeaders,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("datagrams", &self.datagrams)
            .field("trains", &self.trains.len())
            .field("gso", &self.gso)
            .finish()
    }
}

impl SendBatch {
    /// Room for `datagrams` full-size datagrams (at least 1); trains only if `gso`.
    pub fn new(datagrams: usize, gso: bool) -> SendBatch {
        let n = datagrams.max(1);
        SendBatch {
            arena: vec![0; n * DATAGRAM_BYTES_MAX],
            used: 0,
            trains: Vec::with_capacity(n),
            datagrams: 0,
            gso,
            msgs: MsgHeaders::new(n),
        }
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.datagrams
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.datagrams == 0
    }

    /// Whether GSO trains are built (it is switched off if the kernel refuses one).
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Whether no more datagram fits.
    pub fn is_full(&self) -> bool {
        self.arena.len() - self.used < DATAGRAM_BYTES_MAX
            || self.trains.len() == self.msgs.headers.len()
    }

    /// The buffer for the next datagram; commit what was written with
    /// [`SendBatch::commit`].
    pub fn next_buf(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        Some(&mut self.arena[self.used..self.used + DATAGRAM_BYTES_MAX])
    }

    /// Queues the `len` bytes written into [`SendBatch::next_buf`] for `to`, sent from
    /// the address the kernel picks.
    pub fn commit(&mut self, len: usize, to: SocketAddr) {
        self.commit_from(len, to, None);
    }

    /// [`SendBatch::commit`], sent from source address `from` if given (a socket bound
    /// to a wildcard address answering on the address the peer wrote to; an IPv4 one
    /// for an IPv4 socket, an IPv6 one, perhaps IPv4-mapped, for an IPv6 socket).
    pub fn commit_from(&mut self, len: usize, to: SocketAddr, from: Option<IpAddr>) {
        let len = len.min(DATAGRAM_BYTES_MAX);
        let start = self.used;
        self.used += len;
        self.datagrams += 1;
        if self.gso {
            if let Some(train) = self.trains.last_mut() {
                if !train.closed
                    && train.to == to
                    && train.from == from
                    && len <= train.segment
                    && train.segments < TRAIN_SEGMENTS_MAX
                    && train.len + len <= TRAIN_BYTES_MAX
                {
                    train.len += len;
                    train.segments += 1;
                    train.closed = len < train.segment;
                    return;
                }
            }
        }
        self.trains.push(Train {
            start,
            len,
            segment: len,
            segments: 1,
            to,
            from,
            closed: false,
        });
    }

    /// Sends the queued datagrams with `sendmmsg`; those the kernel does not take now
    /// (its buffer is full) or that exceed the link's MTU are dropped, as a router would:
    /// QUIC retransmits, and takes a lost probe as the path's answer. Returns
    /// how many datagrams were sent; the batch is empty afterwards. If the kernel
    /// refuses a GSO train (a device without segmentation offload), GSO is switched off
    /// for this batch from then on.
    pub fn send(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let total = self.trains.len();
        let mut sent_trains = 0;
        let mut sent = 0;
        let mut outcome = Ok(());
        while sent_trains < total {
            let n = total - sent_trains;
            for i in 0..n {
                let train = self.trains[sent_trains + i];
                let name_len = to_storage(train.to, &mut self.msgs.names[i]);
                self.msgs.iovecs[i] = libc::iovec {
                    // SAFETY: `start` is within the arena (trains only cover written bytes).
                    iov_base: unsafe { self.arena.as_mut_ptr().add(train.start) }.cast(),
                    iov_len: train.len,
                };
                let header = &mut self.msgs.headers[i];
                header.msg_hdr.msg_name = (&raw mut self.msgs.names[i]).cast();
                header.msg_hdr.msg_namelen = name_len;
                header.msg_hdr.msg_iov = &raw mut self.msgs.iovecs[i];
                header.msg_hdr.msg_iovlen = 1;
                header.msg_hdr.msg_flags = 0;
                header.msg_len = 0;
                let control = &mut self.msgs.controls[i];
                let control_len = write_send_control(control, &train);
                if control_len > 0 {
                    header.msg_hdr.msg_control = control.as_mut_ptr().cast();
                    header.msg_hdr.msg_controllen = control_len;
                } else {
                    header.msg_hdr.msg_control = std::ptr::null_mut();
                    header.msg_hdr.msg_controllen = 0;
                }
            }
            // SAFETY: `n` initialised headers pointing at live iovecs, buffers, addresses
            // and control buffers owned by `self`, not moved during the call.
            let result = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.msgs.headers.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if result < 0 {
                let error = io::Error::last_os_error();
                match error.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => break,
                    _ => match error.raw_os_error() {
                        // Datagrams larger than the link's MTU, which the don't-fragment
                        // bit forbids splitting (`EINVAL` for a GSO train): in practice
                        // a path MTU probe, perhaps with smaller datagrams queued behind
                        // it in its train. Those go one by one; the oversized ones are
                        // dropped, as the link would; the rest of the batch goes on.
                        Some(libc::EMSGSIZE | libc::EINVAL) => {
                            let train = self.trains[sent_trains];
                            tracing::debug!(
                                datagram_bytes = train.segment,
                                %error,
                                "datagram larger than the link carries, dropped"
                            );
                            if train.segments > 1 {
                                sent += self.send_one_by_one(socket, train);
                            }
                            sent_trains += 1;
                            continue;
                        }
                        raw => {
                            // EIO: the device cannot segment; the first train failed.
                            if self.gso && raw == Some(libc::EIO) {
                                self.gso = false;
                            }
                            outcome = Err(error);
                            break;
                        }
                    },
                }
            }
            if result == 0 {
                break;
            }
            let result = result as usize;
            sent += self.trains[sent_trains..sent_trains + result]
                .iter()
                .map(|t| t.segments)
                .sum::<usize>();
            sent_trains += result;
        }
        self.trains.clear();
        self.used = 0;
        self.datagrams = 0;
        outcome.map(|()| sent)
    }
}

/// Writes the control messages `train` needs into `control` (the segment size of a GSO
/// train, the source address) and returns their length (0: none).
fn write_send_control(control: &mut [u64; CONTROL_BYTES / 8], train: &Train) -> usize {
    let mut used = 0;
    if train.segments > 1 {
        push_cmsg(
            control,
            &mut used,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            train.segment as u16,
        );
    }
    match (train.from, train.to) {
        (Some(IpAddr::V4(from)), SocketAddr::V4(_)) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(from).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            push_cmsg(control, &mut used, libc::IPPROTO_IP, libc::IP_PKTINFO, info);
        }
        (Some(from), SocketAddr::V6(_)) => {
            let from = match from {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: from.octets(),
                },
                ipi6_ifindex: 0,
            };
            push_cmsg(
                control,
                &mut used,
                libc::IPPROTO_IPV6,
                libc::IPV6_PKTINFO,
                info,
            );
        }
        // No source, or an IPv6 source for an IPv4 socket: the kernel's choice.
        _ => {}
    }
    used
}

/// Appends one control message carrying `value` at byte `*used` of `control`.
fn push_cmsg<T: Copy>(
    control: &mut [u64; CONTROL_BYTES / 8],
    used: &mut usize,
    level: libc::c_int,
    kind: libc::c_int,
    value: T,
) {
    // SAFETY: CMSG_SPACE/CMSG_LEN only compute sizes.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(size_of::<T>() as u32) as usize,
            libc::CMSG_LEN(size_of::<T>() as u32) as usize,
        )
    };
    assert!(*used + space <= CONTROL_BYTES, "control messages fit");
    // SAFETY: `*used` is a multiple of CMSG_SPACE's alignment (8) from the start of an
    // 8-aligned buffer, and the header and its data end within it (asserted above).
    // The data may be unaligned for `T`, so it is written unaligned.
    unsafe {
        let cmsg = control
            .as_mut_ptr()
            .cast::<u8>()
            .add(*used)
            .cast::<libc::cmsghdr>();
        cmsg.write(libc::cmsghdr {
            cmsg_len: len,
            cmsg_level: level,
            cmsg_type: kind,
        });
        libc::CMSG_DATA(cmsg).cast::<T>().write_unaligned(value);
    }
    *used += space;
}

impl SendBatch {
    /// Sends `train`'s datagrams one `send_to` each (no segmentation); returns how many
    /// the kernel took. Those it refuses (too large, or its buffer is full) are dropped.
    fn send_one_by_one(&self, socket: &UdpSocket, train: Train) -> usize {
        let end = train.start + train.len;
        self.arena[train.start..end]
            .chunks(train.segment)
            .filter(|datagram| socket.send_to(datagram, train.to).is_ok())
            .count()
    }
}

/// Buffers for one `recvmmsg`, allocated once. With GRO, each slot holds up to
/// [`TRAIN_BYTES_MAX`] bytes that the kernel may fill with several datagrams of one
/// sender; they are split back into datagrams here.
pub struct RecvBatch {
    arena: Vec<u8>,
    slot_bytes: usize,
    /// (start, len, from) of each datagram received.
    datagrams: Vec<(usize, usize, SocketAddr)>,
    /// The address each datagram was sent to, if [`RecvBatch::with_destinations`].
    destinations: Vec<Option<IpAddr>>,
    /// Slots the last call filled.
    slots_filled: usize,
    gro: bool,
    /// Whether the socket reports destination addresses ([`enable_destinations`]).
    want_destinations: bool,
    msgs: MsgHeaders,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.msgs.headers.len())
            .field("datagrams", &self.datagrams.len())
            .field("gro", &self.gro)
            .finish()
    }
}

impl Default for RecvBatch {
    /// A batch with no slots and no memory (a placeholder; it receives nothing).
    fn default() -> RecvBatch {
        RecvBatch {
            arena: Vec::new(),
            slot_bytes: 0,
            datagrams: Vec::new(),
            destinations: Vec::new(),
            slots_filled: 0,
            gro: false,
            want_destinations: false,
            msgs: MsgHeaders::default(),
        }
    }
}

impl RecvBatch {
    /// `slots` buffers (at least 1): each one datagram, or with `gro` (after
    /// [`enable_gro`] succeeded on the socket) up to [`TRAIN_BYTES_MAX`] bytes of
    /// coalesced datagrams.
    pub fn new(slots: usize, gro: bool) -> RecvBatch {
        let n = slots.max(1);
        let slot_bytes = if gro {
            TRAIN_BYTES_MAX
        } else {
            DATAGRAM_BYTES_MAX
        };
        RecvBatch {
            arena: vec![0; n * slot_bytes],
            slot_bytes,
            datagrams: Vec::with_capacity(n),
            destinations: Vec::new(),
            slots_filled: 0,
            gro,
            want_destinations: false,
            msgs: MsgHeaders::new(n),
        }
    }

    /// Also records each datagram's destination address ([`RecvBatch::destination`]);
    /// for a socket on which [`enable_destinations`] succeeded.
    pub fn with_destinations(mut self) -> RecvBatch {
        self.want_destinations = true;
        self.destinations = Vec::with_capacity(self.datagrams.capacity());
        self
    }

    /// The address datagram `i` of the last call was sent to, if the batch records them
    /// and the kernel said.
    pub fn destination(&self, i: usize) -> Option<IpAddr> {
        self.destinations.get(i).copied().flatten()
    }

    /// Datagrams held from the last [`RecvBatch::recv`].
    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    /// Whether the last call got nothing.
    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// Whether the last call filled every slot (more may be waiting).
    pub fn is_full(&self) -> bool {
        self.slots_filled == self.msgs.headers.len()
    }

    /// Datagram `i` of the last call and its sender.
    pub fn get_mut(&mut self, i: usize) -> (&mut [u8], SocketAddr) {
        let (start, len, from) = self.datagrams[i];
        (&mut self.arena[start..start + len], from)
    }

    /// Reads up to a batch without blocking; returns how many datagrams (0: none).
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let n = self.msgs.headers.len();
        self.datagrams.clear();
        self.destinations.clear();
        self.slots_filled = 0;
        for i in 0..n {
            self.msgs.iovecs[i] = libc::iovec {
                // SAFETY: slot i lies within the arena (n slots of slot_bytes).
                iov_base: unsafe { self.arena.as_mut_ptr().add(i * self.slot_bytes) }.cast(),
                iov_len: self.slot_bytes,
            };
            let header = &mut self.msgs.headers[i];
            header.msg_hdr.msg_name = (&raw mut self.msgs.names[i]).cast();
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = &raw mut self.msgs.iovecs[i];
            header.msg_hdr.msg_iovlen = 1;
            if self.gro || self.want_destinations {
                header.msg_hdr.msg_control = self.msgs.controls[i].as_mut_ptr().cast();
                header.msg_hdr.msg_controllen = CONTROL_BYTES;
            } else {
                header.msg_hdr.msg_control = std::ptr::null_mut();
                header.msg_hdr.msg_controllen = 0;
            }
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
        // SAFETY: every header points at a live iovec over a live slot of the stated
        // length, a live sockaddr_storage and (with GRO) a live control buffer, all owned
        // by `self` and not moved during the call; `n` is the number of headers.
        let got = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.msgs.headers.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(error),
            };
        }
        let got = got as usize;
        self.slots_filled = got;
        for i in 0..got {
            let len = self.msgs.headers[i].msg_len as usize;
            let from = from_storage(&self.msgs.names[i])
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            let control = read_control(&self.msgs.headers[i].msg_hdr);
            let segment = if self.gro {
                control.gro_segment.unwrap_or(len)
            } else {
                len
            };
            let base = i * self.slot_bytes;
            let mut offset = 0;
            while offset < len {
                let take = segment.max(1).min(len - offset);
                self.datagrams.push((base + offset, take, from));
                if self.want_destinations {
                    self.destinations.push(control.destination);
                }
                offset += take;
            }
        }
        Ok(self.datagrams.len())
    }
}

/// What a read's control messages said.
#[derive(Default)]
struct Control {
    /// The segment size of a GRO read.
    gro_segment: Option<usize>,
    /// The address the datagram was sent to (`IP_PKTINFO`, `IPV6_PKTINFO`).
    destination: Option<IpAddr>,
}

fn read_control(msg: &libc::msghdr) -> Control {
    let mut control = Control::default();
    if msg.msg_controllen == 0 || msg.msg_control.is_null() {
        return control;
    }
    // SAFETY: the kernel wrote `msg_controllen` bytes of control messages into the
    // buffer `msg_control` points at; CMSG_FIRSTHDR/NXTHDR stay within them, and each
    // message's data is read unaligned, only when its type says what it holds.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::SOL_UDP, libc::UDP_GRO) => {
                    let size = data.cast::<libc::c_int>().read_unaligned();
                    control.gro_segment = usize::try_from(size).ok().filter(|&s| s > 0);
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                    let ip = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                    control.destination = Some(IpAddr::V4(ip));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                    control.destination = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    control
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

    fn local() -> SocketAddr {
        "127.0.0.1:0".parse().expect("addr")
    }

    /// Queues `sizes` datagrams to `to`, byte `k` of datagram `i` being `i`.
    fn queue(out: &mut SendBatch, sizes: &[usize], to: SocketAddr) {
        for (i, &size) in sizes.iter().enumerate() {
            let buf = out.next_buf().expect("room");
            buf[..size].fill(i as u8);
            out.commit(size, to);
        }
    }

    fn receive_all(
        inb: &mut RecvBatch,
        socket: &UdpSocket,
        want: usize,
    ) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut got = Vec::new();
        for _ in 0..1000 {
            let n = inb.recv(socket).expect("recv");
            for i in 0..n {
                let (bytes, from) = inb.get_mut(i);
                got.push((bytes.to_vec(), from));
            }
            if got.len() >= want {
                break;
            }
            if n == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        got
    }

    #[test]
    fn two_sockets_share_a_port_and_batches_round_trip() {
        let a = bind_reuseport(local()).expect("bind");
        let port = a.local_addr().expect("addr").port();
        let b = bind_reuseport(SocketAddr::from(([127, 0, 0, 1], port))).expect("reuseport");
        drop(b);
        let peer = bind_reuseport(local()).expect("bind");
        let mut out = SendBatch::new(4, false);
        queue(&mut out, &[2, 2, 2], a.local_addr().expect("addr"));
        assert_eq!(out.send(&peer).expect("send"), 3);
        let mut inb = RecvBatch::new(8, false);
        let got = receive_all(&mut inb, &a, 3);
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].0, vec![2, 2]);
        assert_eq!(got[2].1, peer.local_addr().expect("addr"));
    }

    /// Trains to one address, broken by a short datagram and by another address, come
    /// out as the same datagrams in the same order, whether the receiver uses GRO or not.
    #[test]
    fn gso_trains_arrive_as_the_datagrams_that_were_queued() {
        let sender = bind_reuseport(local()).expect("bind");
        if !gso_supported(&sender) {
            eprintln!("GSO not supported here; skipped");
            return;
        }
        let with_gro = bind_reuseport(local()).expect("bind");
        assert!(enable_gro(&with_gro));
        let without_gro = bind_reuseport(local()).expect("bind");
        let sizes = [1200, 1200, 1200, 300, 1200, 1200, 1000, 1200];
        let mut out = SendBatch::new(16, true);
        queue(&mut out, &sizes, with_gro.local_addr().expect("addr"));
        queue(
            &mut out,
            &sizes[..3],
            without_gro.local_addr().expect("addr"),
        );
        assert_eq!(out.len(), 11);
        assert_eq!(out.trains.len(), 4, "{:?}", out.trains);
        assert_eq!(out.send(&sender).expect("send"), 11);
        assert!(out.gso(), "the kernel took the trains");

        let got = receive_all(&mut RecvBatch::new(4, true), &with_gro, sizes.len());
        let lens: Vec<usize> = got.iter().map(|(b, _)| b.len()).collect();
        assert_eq!(lens, sizes);
        for (i, (bytes, from)) in got.iter().enumerate() {
            assert!(bytes.iter().all(|&b| b == i as u8), "datagram {i}");
            assert_eq!(*from, sender.local_addr().expect("addr"));
        }
        let got = receive_all(&mut RecvBatch::new(8, false), &without_gro, 3);
        let lens: Vec<usize> = got.iter().map(|(b, _)| b.len()).collect();
        assert_eq!(lens, &sizes[..3]);
    }

    use crate::test_common as common;

    /// A datagram the link cannot carry unfragmented (a path MTU probe) is dropped alone:
    /// the datagram queued behind it in its GSO train and the trains after it still go.
    #[test]
    fn a_datagram_over_the_link_mtu_is_dropped_alone() {
        common::in_own_network_with_mtu(1500, || {
            let sender = bind_client(local()).expect("bind");
            let sink = bind_client(local()).expect("bind");
            let to = sink.local_addr().expect("addr");
            for gso in [true, false] {
                let gso = gso && gso_supported(&sender);
                let mut out = SendBatch::new(8, gso);
                // 1,500 bytes of UDP payload is 1,528 on the wire: over the MTU.
                queue(&mut out, &[1000, 1500, 1000, 1000], to);
                assert_eq!(out.send(&sender).expect("send"), 3, "gso {gso}");
                let got = receive_all(&mut RecvBatch::new(8, false), &sink, 3);
                let lens: Vec<usize> = got.iter().map(|(b, _)| b.len()).collect();
                assert_eq!(lens, [1000, 1000, 1000], "gso {gso}");
                let order: Vec<u8> = got.iter().map(|(b, _)| b[0]).collect();
                assert_eq!(order, [0, 2, 3], "gso {gso}");
            }
        });
    }

    /// A socket on a wildcard address learns where each datagram was sent and answers
    /// from that address (with and without a GSO train); without a source the kernel
    /// picks its own, which the peer would not recognise.
    #[test]
    fn a_wildcard_socket_answers_from_the_address_it_was_reached_at() {
        let server = bind_client(SocketAddr::from(([0, 0, 0, 0], 0))).expect("bind");
        assert!(enable_destinations(&server, false));
        let port = server.local_addr().expect("addr").port();
        let reached = SocketAddr::from(([127, 0, 0, 2], port));
        let peer = bind_client(local()).expect("bind");
        peer.send_to(b"hello", reached).expect("send");
        let mut inb = RecvBatch::new(4, enable_gro(&server)).with_destinations();
        let got = receive_all(&mut inb, &server, 1);
        assert_eq!(got.len(), 1);
        let destination = inb.destination(0);
        assert_eq!(destination, Some(reached.ip()));
        let to = got[0].1;
        for (sizes, gso) in [(&[5usize][..], false), (&[1200, 1200, 7][..], true)] {
            let gso = gso && gso_supported(&server);
            let mut out = SendBatch::new(8, gso);
            for &size in sizes {
                let buf = out.next_buf().expect("room");
                buf[..size].fill(1);
                out.commit_from(size, to, destination);
            }
            assert_eq!(out.send(&server).expect("send"), sizes.len());
            let back = receive_all(&mut RecvBatch::new(8, false), &peer, sizes.len());
            assert_eq!(back.len(), sizes.len());
            assert!(back.iter().all(|(_, from)| *from == reached), "{back:?}");
        }
        let mut out = SendBatch::new(1, false);
        out.next_buf().expect("room")[0] = 1;
        out.commit(1, to);
        out.send(&server).expect("send");
        let back = receive_all(&mut RecvBatch::new(1, false), &peer, 1);
        assert_ne!(
            back[0].1, reached,
            "the kernel's own choice is another address"
        );
    }

    #[test]
    fn a_full_batch_says_so_and_empties_on_send() {
        let sender = bind_reuseport(local()).expect("bind");
        let sink = bind_reuseport(local()).expect("bind");
        let mut out = SendBatch::new(2, true);
        queue(
            &mut out,
            &[DATAGRAM_BYTES_MAX, DATAGRAM_BYTES_MAX],
            sink.local_addr().expect("addr"),
        );
        assert!(out.is_full());
        assert!(out.next_buf().is_none());
        out.send(&sender).expect("send");
        assert!(out.is_empty() && !out.is_full());
    }
}
