//! One client connection as a sans-IO state machine: datagrams and time in, datagrams and
//! frames out. The async [`Client`](crate::Client) and the `bench remote` load generator
//! both drive it; a client in another runtime can too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dataplane_edge::cid::{new_cid, CID_BYTES};
use dataplane_edge::framing::{append_frame, AlignedBuf};
use dataplane_edge::protocol::{ErrorCode, ALPNS, FRAME_STREAM_ID, LENGTH_PREFIX_BYTES};
use dataplane_edge::reader::{Event, FrameReader, Staging};
use dataplane_edge::socket::DATAGRAM_BYTES_MAX;
use dataplane_edge::Fingerprint;
use dataplane_frame::{validate, Header};

use crate::ClientError;

/// Stream bytes read at once ahead of the frame reader.
const STAGING_BYTES: usize = 16 * 1024;
/// Frame buffers a connection keeps for reuse ([`ClientConnection::recycle`]).
pub const SPARE_BUFFERS_MAX: usize = 1024;
/// Largest frame buffer kept for reuse: a rare large reply is not hoarded.
pub const SPARE_BUFFER_BYTES_MAX: usize = 4096;

/// How the client checks the server's certificate.
#[derive(Debug, Clone)]
pub enum Verify {
    /// Against the CA certificates in a PEM file, for the configured server name.
    CaFile(PathBuf),
    /// The server's leaf certificate must have this SHA-256 fingerprint (checked when the
    /// handshake completes, before any frame is sent).
    Fingerprint(Fingerprint),
    /// No check at all: anyone on the path can read and change the traffic.
    Insecure,
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The name the server's certificate must carry (and the TLS SNI).
    pub server_name: String,
    /// How to check the server.
    pub verify: Verify,
    /// Certificate chain and key (PEM) for servers that require mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Close after this long without traffic.
    pub idle_timeout: Duration,
    /// Largest reply frame accepted (larger ones are skipped).
    pub frame_bytes_max: usize,
    /// Flow-control window for replies, bytes.
    pub window_bytes: u64,
}

impl ClientConfig {
    /// Defaults: server name `localhost`, 30 s idle timeout, 1 MiB frames.
    pub fn new(verify: Verify) -> ClientConfig {
        ClientConfig {
            server_name: "localhost".to_owned(),
            verify,
            client_cert: None,
            idle_timeout: Duration::from_secs(30),
            frame_bytes_max: dataplane_frame::FRAME_BYTES_MAX,
            window_bytes: 16 << 20,
        }
    }

    /// The quiche configuration a [`ClientConnection`] is made with: for tools that drive
    /// quiche directly with the client's settings (the `quiche-bare` ceiling in benches/).
    ///
    /// **It verifies nothing for [`Verify::Fingerprint`]**: quiche is told not to check
    /// the peer, and [`ClientConnection`] compares the certificate's fingerprint itself
    /// once the handshake completes. A caller that drives quiche with this configuration
    /// must do that check itself (or use [`Verify::CaFile`]).
    pub fn quiche_config(&self) -> Result<quiche::Config, ClientError> {
        let tls = |what: &str, error: quiche::Error| ClientError::Tls(format!("{what}: {error}"));
        let mut quic = quiche::Config::new(quiche::PROTOCOL_VERSION)
            .map_err(|error| tls("configuration", error))?;
        quic.set_application_protos(ALPNS)
            .map_err(|error| tls("ALPN", error))?;
        match &self.verify {
            Verify::CaFile(path) => {
                quic.load_verify_locations_from_file(&path.to_string_lossy())
                    .map_err(|error| tls(&format!("CA file {}", path.display()), error))?;
                quic.verify_peer(true);
            }
            Verify::Fingerprint(_) | Verify::Insecure => quic.verify_peer(false),
        }
        if let Some((cert, key)) = &self.client_cert {
            quic.load_cert_chain_from_pem_file(&cert.to_string_lossy())
                .map_err(|error| tls(&format!("client certificate {}", cert.display()), error))?;
            quic.load_priv_key_from_pem_file(&key.to_string_lossy())
                .map_err(|error| tls(&format!("client key {}", key.display()), error))?;
        }
        quic.set_max_idle_timeout(self.idle_timeout.as_millis() as u64);
        quic.set_max_recv_udp_payload_size(DATAGRAM_BYTES_MAX);
        quic.set_max_send_udp_payload_size(DATAGRAM_BYTES_MAX);
        // Packets start at QUIC's 1,200 bytes and grow to what the path carries (up to
        // DATAGRAM_BYTES_MAX) as probes are acknowledged; the socket never fragments.
        quic.discover_pmtu(true);
        quic.set_initial_max_data(self.window_bytes);
        quic.set_initial_max_stream_data_bidi_local(self.window_bytes);
        quic.set_initial_max_stream_data_bidi_remote(self.window_bytes);
        quic.set_initial_max_streams_bidi(0);
        quic.set_initial_max_streams_uni(0);
        quic.set_max_connection_window(self.window_bytes);
        quic.set_max_stream_window(self.window_bytes);
        quic.set_max_ack_delay(5);
        quic.set_initial_congestion_window_packets(64);
        quic.grease(false);
        Ok(quic)
    }
}

/// A frame received from the server: the validated bytes (16-byte aligned), with the
/// header decoded once, when it was checked. Give it back with
/// [`ClientConnection::recycle`] to reuse its buffer for a later frame.
pub struct ReceivedFrame {
    buf: AlignedBuf,
    header: Header,
    /// The payload is the frame's first bytes (a valid frame's canonical layout).
    payload_bytes: usize,
}

impl std::fmt::Debug for ReceivedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedFrame")
            .field("header", &self.header())
            .field("payload_bytes", &self.payload().len())
            .finish()
    }
}

impl ReceivedFrame {
    /// Checks `buf` (bytes from the network) and decodes its header.
    fn check(buf: AlignedBuf) -> Result<ReceivedFrame, AlignedBuf> {
        let Ok(frame) = validate(buf.as_slice()) else {
            return Err(buf);
        };
        let header = frame.header();
        let payload_bytes = frame.payload().len();
        Ok(ReceivedFrame {
            buf,
            header,
            payload_bytes,
        })
    }

    /// The header.
    pub fn header(&self) -> Header {
        self.header
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_slice()[..self.payload_bytes]
    }

    /// The frame's bytes as they came off the wire.
    pub fn bytes(&self) -> &[u8] {
        self.buf.as_slice()
    }
}

/// A client connection to a dataplane node.
pub struct ClientConnection {
    quic: quiche::Connection,
    local: SocketAddr,
    verify: Verify,
    reader: FrameReader<AlignedBuf>,
    /// Stream bytes read ahead of the reader (one stream read serves many small frames).
    staging: Staging,
    /// Length-prefixed frames not yet taken by quiche.
    out: Vec<u8>,
    out_sent: usize,
    /// Buffers of frames given back ([`ClientConnection::recycle`]), for the next ones.
    spare: Vec<AlignedBuf>,
    established_checked: bool,
    /// Frames the server skipped or that failed validation here.
    pub frames_dropped: u64,
    error: Option<ClientError>,
}

impl std::fmt::Debug for ClientConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConnection")
            .field("trace_id", &self.quic.trace_id())
            .field("established", &self.quic.is_established())
            .finish_non_exhaustive()
    }
}

impl ClientConnection {
    /// Starts a handshake with `peer` from `local`; then send what `poll_transmit` gives.
    pub fn connect(
        config: &ClientConfig,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Result<ClientConnection, ClientError> {
        let mut quic_config = config.quiche_config()?;
        let scid = new_cid(0);
        debug_assert_eq!(scid.len(), CID_BYTES);
        let quic = quiche::connect(
            Some(&config.server_name),
            &quiche::ConnectionId::from_ref(&scid),
            local,
            peer,
            &mut quic_config,
        )
        .map_err(|error| ClientError::Tls(format!("connect: {error}")))?;
        Ok(ClientConnection {
            quic,
            local,
            verify: config.verify.clone(),
            reader: FrameReader::new(config.frame_bytes_max),
            staging: Staging::new(STAGING_BYTES),
            out: Vec::new(),
            out_sent: 0,
            spare: Vec::new(),
            established_checked: false,
            frames_dropped: 0,
            error: None,
        })
    }

    /// Whether the handshake has completed (and the server passed verification).
    pub fn is_established(&self) -> bool {
        self.quic.is_established() && self.established_checked && self.error.is_none()
    }

    /// Whether the connection is over; [`ClientConnection::error`] says why.
    pub fn is_closed(&self) -> bool {
        self.quic.is_closed()
    }

    /// Whether the server has closed the connection (this side only waits out the
    /// draining period now: nothing more can be sent or received).
    pub fn is_draining(&self) -> bool {
        self.quic.is_draining()
    }

    /// Why the connection failed or was closed, if it did.
    pub fn error(&self) -> Option<ClientError> {
        if let Some(error) = &self.error {
            return Some(error.clone());
        }
        if let Some(close) = self.quic.peer_error() {
            return Some(ClientError::closed_by_server(
                close.error_code,
                &close.reason,
                close.is_app,
            ));
        }
        if let Some(close) = self.quic.local_error() {
            return Some(ClientError::closed_locally(
                close.error_code,
                &close.reason,
                close.is_app,
            ));
        }
        if self.quic.is_timed_out() {
            return Some(ClientError::TimedOut);
        }
        if self.quic.is_closed() {
            return Some(ClientError::Closed("connection closed".to_owned()));
        }
        None
    }

    /// The error this side found (the server's certificate did not match the pinned
    /// fingerprint), before the close has finished.
    pub fn local_failure(&self) -> Option<&ClientError> {
        self.error.as_ref()
    }

    /// The local address packets are sent from.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Takes a datagram from the server.
    pub fn handle_datagram(&mut self, datagram: &mut [u8], from: SocketAddr) {
        let info = quiche::RecvInfo {
            from,
            to: self.local,
        };
        if let Err(error) = self.quic.recv(datagram, info) {
            tracing::debug!(%error, "packet refused");
        }
        self.check_established();
    }

    fn check_established(&mut self) {
        if self.established_checked || !self.quic.is_established() {
            return;
        }
        self.established_checked = true;
        if let Verify::Fingerprint(expected) = &self.verify {
            let actual = self.quic.peer_cert().map(Fingerprint::of_der);
            if actual != Some(*expected) {
                let found = actual.map_or("no certificate".to_owned(), |f| f.to_string());
                self.error = Some(ClientError::FingerprintMismatch {
                    expected: expected.to_string(),
                    found,
                });
                let _ = self.quic.close(
                    true,
                    ErrorCode::FingerprintMismatch as u64,
                    b"certificate fingerprint mismatch",
                );
            }
        }
    }

    /// Queues a frame for the server. Returns the bytes queued and not yet sent.
    pub fn queue_frame(&mut self, header: &Header, payload: &[u8]) -> Result<usize, ClientError> {
        append_frame(&mut self.out, header, payload)
            .map_err(|error| ClientError::Frame(error.to_string()))?;
        Ok(self.queued_bytes())
    }

    /// Queues raw bytes on the frame stream as they are (tests of the server's input
    /// checks: malformed frames, bad prefixes).
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Bytes queued for the server that quiche has not taken yet.
    pub fn queued_bytes(&self) -> usize {
        self.out.len() - self.out_sent
    }

    /// The next datagram to send, written into `out`: `(len, destination)`. Call until
    /// `None` after every input.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        if self.is_established() {
            self.push_stream();
        }
        match self.quic.send(out) {
            Ok((len, info)) => Some((len, info.to)),
            Err(quiche::Error::Done) => None,
            Err(error) => {
                tracing::debug!(%error, "send failed");
                None
            }
        }
    }

    fn push_stream(&mut self) {
        while self.out_sent < self.out.len() {
            // Offer no more than quiche can take now: a `stream_send` beyond the
            // connection's flow-control credit queues a DATA_BLOCKED frame on every call,
            // one packet per poll while the server is not reading.
            let room = match self.quic.stream_capacity(FRAME_STREAM_ID) {
                Ok(0) => break,
                Ok(room) => room,
                // Not open yet (the first write opens it): let `stream_send` decide.
                Err(_) => self.out.len() - self.out_sent,
            };
            let end = self.out.len().min(self.out_sent + room);
            match self
                .quic
                .stream_send(FRAME_STREAM_ID, &self.out[self.out_sent..end], false)
            {
                Ok(0) | Err(_) => break,
                Ok(n) => self.out_sent += n,
            }
        }
        if self.out_sent == self.out.len() {
            self.out.clear();
            self.out_sent = 0;
        } else if self.out_sent > 64 * 1024 {
            self.out.drain(..self.out_sent);
            self.out_sent = 0;
        }
    }

    /// The next frame from the server, if a whole one has arrived.
    pub fn poll_frame(&mut self) -> Option<ReceivedFrame> {
        if !self.is_established() {
            return None;
        }
        loop {
            let quic = &mut self.quic;
            let mut source = |out: &mut [u8]| match quic.stream_recv(FRAME_STREAM_ID, out) {
                Ok((n, _fin)) => n,
                Err(_) => 0,
            };
            let staging = &mut self.staging;
            let spare = &mut self.spare;
            match self.reader.next(
                &mut |out: &mut [u8]| staging.read(out, &mut source),
                &mut |frame_bytes| match spare.pop() {
                    Some(mut buf) => {
                        buf.set_len(frame_bytes);
                        Some(buf)
                    }
                    None => Some(AlignedBuf::new(frame_bytes)),
                },
            ) {
                Ok(Event::Frame(buf)) => match ReceivedFrame::check(buf) {
                    Ok(frame) => return Some(frame),
                    Err(buf) => {
                        self.frames_dropped += 1;
                        self.keep_spare(buf);
                    }
                },
                Ok(Event::Skipped { .. }) => {
                    self.frames_dropped += 1;
                }
                Ok(Event::Drained) | Ok(Event::Blocked { .. }) => return None,
                Err(error) => {
                    self.error = Some(ClientError::Protocol(error.to_string()));
                    let _ = self.quic.close(
                        true,
                        ErrorCode::ProtocolViolation as u64,
                        b"bad length prefix",
                    );
                    return None;
                }
            }
        }
    }

    /// Gives a frame's buffer back for a later frame: a client that handles frames as they
    /// come and recycles them receives without allocating. Up to
    /// [`SPARE_BUFFERS_MAX`] buffers of up to [`SPARE_BUFFER_BYTES_MAX`] bytes are kept.
    pub fn recycle(&mut self, frame: ReceivedFrame) {
        self.keep_spare(frame.buf);
    }

    fn keep_spare(&mut self, buf: AlignedBuf) {
        if self.spare.len() < SPARE_BUFFERS_MAX && buf.capacity_bytes() <= SPARE_BUFFER_BYTES_MAX {
            self.spare.push(buf);
        }
    }

    /// When [`ClientConnection::on_timeout`] must be called next.
    pub fn timeout(&self) -> Option<Instant> {
        self.quic.timeout_instant()
    }

    /// Runs expired timers (retransmission, idle); then send what `poll_transmit` gives.
    pub fn on_timeout(&mut self) {
        self.quic.on_timeout();
    }

    /// Closes the connection politely.
    pub fn close(&mut self) {
        let _ = self.quic.close(true, ErrorCode::NoError as u64, b"");
    }

    /// The frame stream's prefix length (re-exported for raw writers).
    pub const LENGTH_PREFIX_BYTES: usize = LENGTH_PREFIX_BYTES;
}

impl ClientConnection {
    /// The server's leaf certificate (DER), once the handshake is done.
    pub fn peer_cert_der(&self) -> Option<&[u8]> {
        self.quic.peer_cert()
    }
}
