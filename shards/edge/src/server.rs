//! The per-shard QUIC server: one UDP socket and one set of connections per shard.
//!
//! Built by [`io_factory`] on each shard's thread and polled by the shard's driver
//! ([`ShardIo`]). Nothing here is shared between shards except the counters (written by
//! their own shard only).
//!
//! A connection is addressed like an agent: at accept the edge deploys a *sink* for it
//! ([`Shard::deploy_sink`], under its *connection id*, an [`AgentId`] that routes to this
//! shard). Frames read from the client's stream are stamped with that id as their sender
//! and routed by the shard like any other frame ([`Shard::handle_incoming`]: handled on
//! arrival, local mailbox or ring, no re-encoding); replies sent to the connection id, from
//! this shard or through the ring, go straight into the sink, which appends them to the
//! connection's stream output. Datagrams whose connection id names another shard (the client's
//! address changed and the kernel's `SO_REUSEPORT` hash moved it) are wrapped in a frame
//! for that shard's *edge agent* and travel through the ring mesh.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane_frame::{AgentId, Flags, Header, Performative, Priority, FRAME_FIXED_BYTES};
use dataplane_runtime::{IoFactory, ShardIo};
use dataplane_shard::{
    id_on_shard, owner_shard, Agent, AgentError, Context, Incoming, IncomingFrame, Message, Shard,
    Sink, SinkFull,
};

use crate::cid::{new_cid, owner_of, CID_BYTES};
use crate::protocol::{ErrorCode, ALPNS, FRAME_STREAM_ID, STREAMS_BIDI_MAX};
use crate::reader::{Event, FrameReader, Staging};
use crate::socket::{
    bind_reuseport, enable_destinations, enable_gro, gso_supported, RecvBatch, SendBatch,
    DATAGRAM_BYTES_MAX,
};

/// Bytes of an encoded socket address in a forwarded datagram's frame.
const ADDR_BYTES: usize = 19;
/// Bytes before the datagram in a forwarded one: the peer's address, then ours.
const FORWARD_HEADER_BYTES: usize = 2 * ADDR_BYTES;
/// Socket reads per poll at most (each up to a batch of datagrams).
const RECV_ROUNDS_PER_POLL: usize = 4;
/// Default of [`EdgeConfig::client_address_changes_max`].
pub const CLIENT_ADDRESS_CHANGES_MAX: usize = 7;
/// Stream bytes read from quiche at once ahead of the frame reader.
const STAGING_BYTES: usize = 16 * 1024;
/// `recvmmsg` slots of 64 KiB when the socket has GRO.
const RECV_GRO_SLOTS: usize = 16;
/// How often every connection's timers are looked at.
const SWEEP_INTERVAL_NS: u64 = 1_000_000;
/// Frames read from one connection per service call, so that one busy client does not
/// hold up the others (the rest wait in quiche's buffers for the next poll).
const FRAMES_READ_PER_SERVICE: usize = 256;
/// Connections being closed, beyond the live limit, that a shard keeps while they drain.
const CLOSING_CONNECTIONS_MAX: usize = 1024;

/// The edge's settings (one per node; each shard applies them to its own socket).
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// The node's QUIC address; every shard binds it.
    pub listen: SocketAddr,
    /// Certificate chain (PEM).
    pub cert_path: PathBuf,
    /// Private key (PEM).
    pub key_path: PathBuf,
    /// With a CA file, clients must present a certificate it signed (mutual TLS).
    pub client_ca_path: Option<PathBuf>,
    /// Connections one shard serves at once; more are closed with `SERVER_BUSY`.
    pub connections_per_shard_max: usize,
    /// A connection idle this long is closed.
    pub idle_timeout: Duration,
    /// Flow-control window of a connection, bytes.
    pub connection_window_bytes: u64,
    /// Flow-control window of the frame stream, bytes.
    pub stream_window_bytes: u64,
    /// Reply bytes queued for one connection before the edge stops reading its requests;
    /// twice this plus a stream window closes it with `NOT_READING`.
    pub egress_bytes_max: usize,
    /// Largest frame accepted from a client (the shard's frame limit or less).
    pub frame_bytes_max: usize,
    /// Datagrams read per `recvmmsg` and sent per `sendmmsg`.
    pub batch_datagrams: usize,
    /// Datagrams forwarded from other shards waiting on this one before more are dropped.
    pub forward_queue_datagrams_max: usize,
    /// Changes of a client's address (NAT rebindings, port changes) one connection
    /// survives; after that, packets from a new address are dropped (a quiche limit).
    pub client_address_changes_max: usize,
}

impl EdgeConfig {
    /// Defaults for `listen` with the given certificate and key.
    pub fn new(listen: SocketAddr, cert_path: PathBuf, key_path: PathBuf) -> EdgeConfig {
        EdgeConfig {
            listen,
            cert_path,
            key_path,
            client_ca_path: None,
            connections_per_shard_max: 4096,
            idle_timeout: Duration::from_secs(30),
            connection_window_bytes: 16 << 20,
            stream_window_bytes: 8 << 20,
            egress_bytes_max: 8 << 20,
            frame_bytes_max: 64 * 1024,
            batch_datagrams: 32,
            forward_queue_datagrams_max: 1024,
            client_address_changes_max: CLIENT_ADDRESS_CHANGES_MAX,
        }
    }
}

/// Counters of one shard's edge, written by that shard only (relaxed atomics, so the
/// metrics endpoint can read them from another thread).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct EdgeCounters {
    /// UDP datagrams read from the socket.
    pub datagrams_in: AtomicU64,
    /// UDP datagrams written.
    pub datagrams_out: AtomicU64,
    /// Datagrams that are not QUIC, or that quiche refused.
    pub datagrams_invalid: AtomicU64,
    /// Datagrams for connections this shard does not know (dropped).
    pub datagrams_unknown_connection: AtomicU64,
    /// Datagrams sent to their owning shard through the ring mesh.
    pub datagrams_forwarded_out: AtomicU64,
    /// Datagrams received from other shards.
    pub datagrams_forwarded_in: AtomicU64,
    /// Forwarded datagrams dropped (ring or queue full).
    pub datagrams_forward_dropped: AtomicU64,
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections refused with `SERVER_BUSY` (or dropped past the closing limit).
    pub connections_refused: AtomicU64,
    /// Connections closed (any reason).
    pub connections_closed: AtomicU64,
    /// Connections closed for not reading their replies.
    pub connections_not_reading: AtomicU64,
    /// Connections closed for a missing client certificate.
    pub connections_certificate_required: AtomicU64,
    /// Connections closed for breaking the framing.
    pub connections_protocol_violation: AtomicU64,
    /// Frames accepted from clients.
    pub frames_in: AtomicU64,
    /// Frames queued for clients (replies and error frames).
    pub frames_out: AtomicU64,
    /// Frames that failed validation (answered with an error frame).
    pub frames_invalid: AtomicU64,
    /// Frames over the size limit (skipped, answered with an error frame).
    pub frames_oversized: AtomicU64,
    /// Frames for unknown agents (answered with an error frame).
    pub frames_rejected: AtomicU64,
    /// Times reading a stream paused for back-pressure (mailbox, ring or pool full).
    pub reads_paused: AtomicU64,
    /// Frames for a client that stopped reading, dropped (its connection is being closed).
    pub frames_dropped_not_reading: AtomicU64,
}

/// Counters of [`EdgeCounters`].
pub const EDGE_COUNTERS: usize = 20;

impl EdgeCounters {
    fn bump(counter: &AtomicU64) {
        EdgeCounters::add(counter, 1);
    }

    /// Adds `n`. Each shard's block has one writer, the shard's own thread, so a load and
    /// a store are enough (readers see every value in order); an atomic read-modify-write
    /// would be a locked instruction, about 20 cycles, on every frame.
    fn add(counter: &AtomicU64, n: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Every counter as `(name, help, value)`, for exporters (`/metrics`).
    pub fn values(&self) -> [(&'static str, &'static str, u64); EDGE_COUNTERS] {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        [
            (
                "datagrams_in",
                "UDP datagrams read from the socket",
                read(&self.datagrams_in),
            ),
            (
                "datagrams_out",
                "UDP datagrams written",
                read(&self.datagrams_out),
            ),
            (
                "datagrams_invalid",
                "Datagrams that are not QUIC, or that quiche refused",
                read(&self.datagrams_invalid),
            ),
            (
                "datagrams_unknown_connection",
                "Datagrams for connections this shard does not know (dropped)",
                read(&self.datagrams_unknown_connection),
            ),
            (
                "datagrams_forwarded_out",
                "Datagrams sent to their owning shard through the ring mesh",
                read(&self.datagrams_forwarded_out),
            ),
            (
                "datagrams_forwarded_in",
                "Datagrams received from other shards",
                read(&self.datagrams_forwarded_in),
            ),
            (
                "datagrams_forward_dropped",
                "Forwarded datagrams dropped (ring or queue full)",
                read(&self.datagrams_forward_dropped),
            ),
            (
                "connections_accepted",
                "Connections accepted",
                read(&self.connections_accepted),
            ),
            (
                "connections_refused",
                "Connections refused with SERVER_BUSY (or dropped past the closing limit)",
                read(&self.connections_refused),
            ),
            (
                "connections_closed",
                "Connections closed (any reason)",
                read(&self.connections_closed),
            ),
            (
                "connections_not_reading",
                "Connections closed for not reading their replies",
                read(&self.connections_not_reading),
            ),
            (
                "connections_certificate_required",
                "Connections closed for a missing client certificate",
                read(&self.connections_certificate_required),
            ),
            (
                "connections_protocol_violation",
                "Connections closed for breaking the framing",
                read(&self.connections_protocol_violation),
            ),
            (
                "frames_in",
                "Frames accepted from clients",
                read(&self.frames_in),
            ),
            (
                "frames_out",
                "Frames queued for clients (replies and error frames)",
                read(&self.frames_out),
            ),
            (
                "frames_invalid",
                "Frames that failed validation (answered with an error frame)",
                read(&self.frames_invalid),
            ),
            (
                "frames_oversized",
                "Frames over the size limit (skipped, answered with an error frame)",
                read(&self.frames_oversized),
            ),
            (
                "frames_rejected",
                "Frames for unknown agents (answered with an error frame)",
                read(&self.frames_rejected),
            ),
            (
                "reads_paused",
                "Times reading a stream paused for back-pressure (mailbox, ring or pool full)",
                read(&self.reads_paused),
            ),
            (
                "frames_dropped_not_reading",
                "Frames for a client that stopped reading, dropped (its connection is being closed)",
                read(&self.frames_dropped_not_reading),
            ),
        ]
    }
}

/// The counters of every shard's edge, indexed by shard.
pub type EdgeMetrics = Arc<[EdgeCounters]>;

/// The [`IoFactory`] that starts the edge on every shard, and the counters it writes.
pub fn io_factory(config: EdgeConfig, shards: usize) -> (IoFactory, EdgeMetrics) {
    let metrics: EdgeMetrics = (0..shards).map(|_| EdgeCounters::default()).collect();
    let config = Arc::new(config);
    let for_factory = Arc::clone(&metrics);
    let factory: IoFactory = Arc::new(move |core: &mut Shard, now_ns: u64| {
        Edge::start(Arc::clone(&config), Arc::clone(&for_factory), core, now_ns)
            .map(|edge| Box::new(edge) as Box<dyn ShardIo>)
    });
    (factory, metrics)
}

/// The id of shard `shard`'s edge agent, which receives datagrams forwarded to it.
pub fn edge_agent_id(shard: usize, shards: usize) -> AgentId {
    id_on_shard(AgentId::from_name("$edge").0, shard, shards)
}

/// State the edge shares with the agents it deploys on its shard (same thread).
#[derive(Default)]
struct Shared {
    /// Datagrams forwarded by other shards: `(datagram, peer address, the address the
    /// peer sent it to)`.
    forwarded: VecDeque<(Vec<u8>, SocketAddr, SocketAddr)>,
    forward_queue_max: usize,
    forward_dropped: u64,
    /// Connection slots with new egress bytes.
    ready: Vec<usize>,
}

/// Reply bytes waiting for a connection's stream.
struct Egress {
    slot: usize,
    /// Length-prefixed frames; `sent..` not yet taken by quiche.
    bytes: Vec<u8>,
    sent: usize,
    frames: u64,
}

impl Egress {
    fn queued_bytes(&self) -> usize {
        self.bytes.len() - self.sent
    }
}

/// Appends a frame for a client to its egress bytes; a frame that cannot be encoded (the
/// node built it, so only a bug gets here) is logged and left out.
fn append_frame(out: &mut Vec<u8>, header: &Header, payload: &[u8]) {
    if let Err(error) = crate::framing::append_frame(out, header, payload) {
        tracing::warn!(%error, "frame for a client not encoded");
    }
}

/// The sink standing for one client connection: what is sent to its id goes to the
/// client, appended to the connection's egress as it is sent.
///
/// It never refuses. Past its bound the client has stopped reading and the edge closes
/// the connection (`read_frames`); what comes meanwhile is dropped and counted. A refusal
/// would be back-pressure on the sender, and for a frame that came through the ring mesh
/// that stalls the whole ring, every sender on that shard, until the connection is gone.
struct ConnectionSink {
    egress: Rc<RefCell<Egress>>,
    shared: Rc<RefCell<Shared>>,
    metrics: EdgeMetrics,
    shard: usize,
    /// Egress bytes past which frames are dropped: the point at which the edge closes
    /// the connection for not reading.
    capacity_bytes: usize,
}

impl Sink for ConnectionSink {
    fn deliver(&mut self, header: &Header, payload: &[u8]) -> Result<(), SinkFull> {
        let mut egress = self.egress.borrow_mut();
        if egress.queued_bytes() > self.capacity_bytes {
            EdgeCounters::bump(&self.metrics[self.shard].frames_dropped_not_reading);
            // Have the edge look at the connection now, so it is closed at once rather
            // than at the client's next packet or timer.
            self.shared.borrow_mut().ready.push(egress.slot);
            return Ok(());
        }
        let was_empty = egress.queued_bytes() == 0;
        match crate::framing::append_frame(&mut egress.bytes, header, payload) {
            Ok(_) => egress.frames += 1,
            // The shard checks every frame it routes (size, flags), so only a bug gets here.
            Err(error) => tracing::warn!(%error, "frame for a client not encoded"),
        }
        if was_empty {
            self.shared.borrow_mut().ready.push(egress.slot);
        }
        Ok(())
    }
}

/// The agent that receives datagrams other shards forward to this one.
struct EdgeAgent {
    shared: Rc<RefCell<Shared>>,
    shard: usize,
    shards: usize,
}

impl EdgeAgent {
    /// Whether `from` is another shard's edge agent: the only sender whose datagrams are
    /// trusted to carry the peer address they claim. A client frame's `from` is set by its
    /// ingress shard to the connection's id, and agents send as themselves, so neither can
    /// pass for an edge (every shard's edge id is taken by that shard's edge).
    fn is_peer_edge(&self, from: AgentId) -> bool {
        let sender = owner_shard(from, self.shards);
        sender != self.shard && from == edge_agent_id(sender, self.shards)
    }
}

impl Agent for EdgeAgent {
    fn on_message(
        &mut self,
        message: &Message<'_>,
        _ctx: &mut Context<'_>,
    ) -> Result<(), AgentError> {
        // Otherwise a client could address its shard's edge and have any datagram taken as
        // if it came from an address of its choosing.
        if !self.is_peer_edge(message.from()) {
            return Err(AgentError::Failed(
                "only another shard's edge may forward datagrams".into(),
            ));
        }
        let Some((peer, local, datagram)) = decode_forwarded(message.payload) else {
            return Err(AgentError::Failed("malformed forwarded datagram".into()));
        };
        let mut shared = self.shared.borrow_mut();
        if shared.forwarded.len() >= shared.forward_queue_max {
            shared.forward_dropped += 1;
            return Ok(());
        }
        shared.forwarded.push_back((datagram.to_vec(), peer, local));
        Ok(())
    }
}

/// A datagram for another shard: `peer`'s address, the address it was sent to
/// (`local`), then the datagram.
fn encode_forwarded(out: &mut Vec<u8>, peer: SocketAddr, local: SocketAddr, datagram: &[u8]) {
    out.clear();
    for addr in [peer, local] {
        match addr {
            SocketAddr::V4(v4) => {
                out.push(4);
                out.extend_from_slice(&v4.ip().to_ipv6_mapped().octets());
            }
            SocketAddr::V6(v6) => {
                out.push(6);
                out.extend_from_slice(&v6.ip().octets());
            }
        }
        out.extend_from_slice(&addr.port().to_be_bytes());
    }
    out.extend_from_slice(datagram);
}

fn decode_addr(bytes: &[u8]) -> Option<SocketAddr> {
    let bytes: &[u8; ADDR_BYTES] = bytes.get(..ADDR_BYTES)?.try_into().ok()?;
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&bytes[1..17]);
    let v6 = std::net::Ipv6Addr::from(octets);
    let port = u16::from_be_bytes([bytes[17], bytes[18]]);
    let ip = match bytes[0] {
        4 => std::net::IpAddr::V4(v6.to_ipv4_mapped()?),
        6 => std::net::IpAddr::V6(v6),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// `(peer, local, datagram)` of a forwarded datagram, or `None` if malformed.
fn decode_forwarded(payload: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let peer = decode_addr(payload)?;
    let local = decode_addr(payload.get(ADDR_BYTES..)?)?;
    Some((peer, local, &payload[FORWARD_HEADER_BYTES..]))
}

struct Connection {
    quic: quiche::Connection,
    id: AgentId,
    reader: FrameReader<IncomingFrame>,
    /// A frame read but not yet accepted by the shard (back-pressure).
    pending: Option<IncomingFrame>,
    egress: Rc<RefCell<Egress>>,
    /// Connection ids that map to this slot.
    cids: Vec<Vec<u8>>,
    /// Whether the established-connection checks (client certificate) ran.
    checked: bool,
    /// Already counted as closing (no more reads).
    closing: bool,
    /// Refused (limit): close once its first packet has been processed.
    refuse: bool,
    /// Stream bytes read ahead (staged) but not yet taken by the reader when it last
    /// stopped; empty (and unallocated) in the steady state.
    leftover: Vec<u8>,
    /// The client ended the frame stream.
    fin: bool,
}

/// One shard's QUIC server.
pub struct Edge {
    config: Arc<EdgeConfig>,
    metrics: EdgeMetrics,
    shard: usize,
    shards: usize,
    socket: UdpSocket,
    /// The same socket (a dup) seen by glommio, only to wait for readability when parked.
    readiness: glommio::net::UdpSocket,
    local: SocketAddr,
    /// Whether the socket is on a wildcard address and reports where each datagram was
    /// sent ([`enable_destinations`]): then replies name their source address.
    destinations: bool,
    quic: quiche::Config,
    slots: Vec<Option<Connection>>,
    free_slots: Vec<usize>,
    by_cid: HashMap<Vec<u8>, usize>,
    live: usize,
    shared: Rc<RefCell<Shared>>,
    edge_id: AgentId,
    rx: RecvBatch,
    tx: SendBatch,
    /// Stream bytes read ahead of the frame reader, shared by the shard's connections.
    staging: Staging,
    forward_buf: Vec<u8>,
    touched: Vec<usize>,
    /// Connections with frames left to read after their last service call.
    again: Vec<usize>,
    next_sweep_ns: u64,
    next_timer_ns: Option<u64>,
    stopping: bool,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("shard", &self.shard)
            .field("local", &self.local)
            .field("connections", &self.live)
            .finish_non_exhaustive()
    }
}

/// The quiche configuration every shard builds for itself.
pub fn quiche_server_config(config: &EdgeConfig) -> Result<quiche::Config, String> {
    let mut quic = quiche::Config::new(quiche::PROTOCOL_VERSION)
        .map_err(|error| format!("QUIC configuration: {error}"))?;
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    quic.load_cert_chain_from_pem_file(&path(&config.cert_path))
        .map_err(|error| format!("certificate {}: {error}", config.cert_path.display()))?;
    quic.load_priv_key_from_pem_file(&path(&config.key_path))
        .map_err(|error| format!("private key {}: {error}", config.key_path.display()))?;
    if let Some(ca) = &config.client_ca_path {
        quic.load_verify_locations_from_file(&path(ca))
            .map_err(|error| format!("client CA {}: {error}", ca.display()))?;
        quic.verify_peer(true);
    } else {
        quic.verify_peer(false);
    }
    quic.set_application_protos(ALPNS)
        .map_err(|error| format!("ALPN: {error}"))?;
    quic.set_max_idle_timeout(config.idle_timeout.as_millis() as u64);
    quic.set_max_recv_udp_payload_size(DATAGRAM_BYTES_MAX);
    quic.set_max_send_udp_payload_size(DATAGRAM_BYTES_MAX);
    // Packets start at QUIC's 1,200 bytes and grow to what the path carries (up to
    // DATAGRAM_BYTES_MAX) as probes are acknowledged; the socket never fragments.
    quic.discover_pmtu(true);
    quic.set_initial_max_data(config.connection_window_bytes);
    quic.set_initial_max_stream_data_bidi_remote(config.stream_window_bytes);
    quic.set_initial_max_stream_data_bidi_local(config.stream_window_bytes);
    quic.set_initial_max_streams_bidi(STREAMS_BIDI_MAX);
    quic.set_initial_max_streams_uni(0);
    quic.set_max_connection_window(config.connection_window_bytes);
    quic.set_max_stream_window(config.stream_window_bytes);
    // Replies are sent as soon as they exist; acks are not worth delaying on loopback
    // or a LAN, and a short ack delay keeps the client's send window open.
    quic.set_max_ack_delay(5);
    quic.set_initial_congestion_window_packets(64);
    quic.set_disable_active_migration(false);
    // quiche keeps a path per client address and never frees one whose connection id
    // the client still uses (a NAT rebinding keeps it), so a connection can follow at
    // most `limit - 1` address changes; the limit bounds the paths too. See
    // docs/decisions/why-client-address-changes-are-limited.md.
    quic.set_active_connection_id_limit(config.client_address_changes_max as u64 + 1);
    quic.grease(false);
    Ok(quic)
}

impl Edge {
    fn start(
        config: Arc<EdgeConfig>,
        metrics: EdgeMetrics,
        core: &mut Shard,
        now_ns: u64,
    ) -> Result<Edge, String> {
        let shard = core.id();
        let shards = core.config().shards;
        let quic = quiche_server_config(&config)?;
        let socket = bind_reuseport(config.listen)
            .map_err(|error| format!("QUIC listen address {}: {error}", config.listen))?;
        let local = socket
            .local_addr()
            .map_err(|error| format!("QUIC socket: {error}"))?;
        // SAFETY: `dup` returns a new descriptor we own (or -1, checked); glommio takes
        // ownership of it and closes it when the readiness socket drops.
        let readiness = unsafe {
            let fd = libc::dup(socket.as_raw_fd());
            if fd < 0 {
                return Err(format!("QUIC socket: {}", std::io::Error::last_os_error()));
            }
            glommio::net::UdpSocket::from_raw_fd(fd)
        };
        let shared = Rc::new(RefCell::new(Shared {
            forward_queue_max: config.forward_queue_datagrams_max,
            ..Shared::default()
        }));
        let edge_id = edge_agent_id(shard, shards);
        core.deploy(
            edge_id,
            Box::new(EdgeAgent {
                shared: Rc::clone(&shared),
                shard,
                shards,
            }),
            now_ns,
        )
        .map_err(|error| format!("edge agent: {error}"))?;
        // GRO slots hold up to 64 KiB each: fewer of them keep the memory per shard at
        // about 1 MiB while each may carry a whole train of datagrams.
        let rx = if enable_gro(&socket) {
            RecvBatch::new(RECV_GRO_SLOTS, true)
        } else {
            RecvBatch::new(config.batch_datagrams, false)
        };
        // On a wildcard address the host may have several: answer each client from the
        // one it wrote to (else the kernel picks by route, and the client drops replies
        // from an address it does not know).
        let destinations =
            local.ip().is_unspecified() && enable_destinations(&socket, local.is_ipv6());
        let rx = if destinations {
            rx.with_destinations()
        } else {
            rx
        };
        let tx = SendBatch::new(config.batch_datagrams, gso_supported(&socket));
        Ok(Edge {
            shard,
            shards,
            socket,
            readiness,
            local,
            destinations,
            quic,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_cid: HashMap::new(),
            live: 0,
            shared,
            edge_id,
            rx,
            tx,
            staging: Staging::new(STAGING_BYTES),
            forward_buf: Vec::with_capacity(DATAGRAM_BYTES_MAX + FORWARD_HEADER_BYTES),
            touched: Vec::new(),
            again: Vec::new(),
            next_sweep_ns: now_ns + SWEEP_INTERVAL_NS,
            next_timer_ns: None,
            stopping: false,
            metrics,
            config,
        })
    }

    fn counters(&self) -> &EdgeCounters {
        &self.metrics[self.shard]
    }

    /// The address this shard's socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Our address as a client's packet named it: the socket's, or on a wildcard
    /// socket the one the packet was sent to.
    fn local_for(&self, destination: Option<IpAddr>) -> SocketAddr {
        match destination {
            Some(ip) if self.destinations => SocketAddr::new(ip, self.local.port()),
            _ => self.local,
        }
    }

    /// The source address to send from to reach a client at our address `local`: only
    /// a wildcard socket names one.
    fn source(&self, local: SocketAddr) -> Option<IpAddr> {
        self.destinations.then_some(local.ip())
    }

    fn handle_datagram(
        &mut self,
        core: &mut Shard,
        datagram: &mut [u8],
        peer: SocketAddr,
        local: SocketAddr,
        forwarded: bool,
    ) {
        let header = match quiche::Header::from_slice(datagram, CID_BYTES) {
            Ok(header) => header,
            Err(_) => {
                EdgeCounters::bump(&self.counters().datagrams_invalid);
                return;
            }
        };
        // Initial and 0-RTT packets carry the client's own choice of id: only packets
        // addressed to an id we issued are steered.
        let steerable = matches!(header.ty, quiche::Type::Short | quiche::Type::Handshake);
        if steerable && !forwarded {
            if let Some(owner) = owner_of(&header.dcid) {
                let owner = usize::from(owner);
                if owner != self.shard {
                    if self.stopping {
                        // The owner is closing its connections too, and may already
                        // have stopped reading its rings: a frame sent now could only
                        // wait there until its drain timed out.
                        EdgeCounters::bump(&self.counters().datagrams_forward_dropped);
                    } else if owner < self.shards {
                        self.forward(core, owner, peer, local, datagram);
                    } else {
                        EdgeCounters::bump(&self.counters().datagrams_unknown_connection);
                    }
                    return;
                }
            }
        }
        let slot = match self.by_cid.get(header.dcid.as_ref()) {
            Some(&slot) => slot,
            None if header.ty == quiche::Type::Initial => {
                match self.accept(core, &header, datagram, peer, local) {
                    Some(slot) => slot,
                    None => return,
                }
            }
            None => {
                EdgeCounters::bump(&self.counters().datagrams_unknown_connection);
                return;
            }
        };
        let Some(connection) = self.slots[slot].as_mut() else {
            return;
        };
        let info = quiche::RecvInfo {
            from: peer,
            to: local,
        };
        if let Err(error) = connection.quic.recv(datagram, info) {
            if error != quiche::Error::Done {
                EdgeCounters::bump(&self.metrics[self.shard].datagrams_invalid);
                tracing::debug!(shard = self.shard, %error, "QUIC packet refused");
            }
        }
        self.touch(slot);
    }

    fn touch(&mut self, slot: usize) {
        if !self.touched.contains(&slot) {
            self.touched.push(slot);
        }
    }

    fn forward(
        &mut self,
        core: &mut Shard,
        owner: usize,
        peer: SocketAddr,
        local: SocketAddr,
        datagram: &[u8],
    ) {
        encode_forwarded(&mut self.forward_buf, peer, local, datagram);
        let header = Header {
            to: edge_agent_id(owner, self.shards),
            from: self.edge_id,
            conversation_id: 0,
            correlation_id: 0,
            performative: Performative::Inform,
            priority: Priority::High,
            flags: Flags::NONE,
        };
        match core.handle_send(&header, &self.forward_buf) {
            Ok(()) => EdgeCounters::bump(&self.counters().datagrams_forwarded_out),
            Err(_) => EdgeCounters::bump(&self.counters().datagrams_forward_dropped),
        }
    }

    /// A new connection from an Initial packet, or `None` (refused, or not valid).
    fn accept(
        &mut self,
        core: &mut Shard,
        header: &quiche::Header<'_>,
        datagram: &[u8],
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Option<usize> {
        if !quiche::version_is_supported(header.version) {
            let source = self.source(local);
            let out = self.tx.next_buf()?;
            if let Ok(len) = quiche::negotiate_version(&header.scid, &header.dcid, out) {
                self.tx.commit_from(len, peer, source);
            }
            return None;
        }
        // Clients must pad Initial packets to 1200 bytes (RFC 9000 14.1).
        if datagram.len() < 1200 {
            EdgeCounters::bump(&self.counters().datagrams_invalid);
            return None;
        }
        let busy = self.live >= self.config.connections_per_shard_max || self.stopping;
        if busy && self.slots.len() - self.free_slots.len() >= self.live + CLOSING_CONNECTIONS_MAX {
            // Too many connections are already being refused: drop silently.
            EdgeCounters::bump(&self.counters().connections_refused);
            return None;
        }
        let scid = new_cid(self.shard as u16);
        let quic = match quiche::accept(
            &quiche::ConnectionId::from_ref(&scid),
            None,
            local,
            peer,
            &mut self.quic,
        ) {
            Ok(quic) => quic,
            Err(error) => {
                tracing::debug!(shard = self.shard, %error, "QUIC accept failed");
                EdgeCounters::bump(&self.counters().datagrams_invalid);
                return None;
            }
        };
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let egress = Rc::new(RefCell::new(Egress {
            slot,
            bytes: Vec::new(),
            sent: 0,
            frames: 0,
        }));
        let mut id = AgentId(0);
        let mut refused = busy;
        if !busy {
            let start = u64::from_le_bytes(scid[8..16].try_into().unwrap_or([0; 8]));
            id = id_on_shard(start, self.shard, self.shards);
            let sink = ConnectionSink {
                egress: Rc::clone(&egress),
                shared: Rc::clone(&self.shared),
                metrics: Arc::clone(&self.metrics),
                shard: self.shard,
                capacity_bytes: not_reading_bytes(&self.config),
            };
            if let Err(error) = core.deploy_sink(id, Box::new(sink)) {
                tracing::debug!(shard = self.shard, %error, "connection sink not deployed");
                refused = true;
            }
        }
        let mut connection = Connection {
            quic,
            id,
            reader: FrameReader::new(self.config.frame_bytes_max),
            pending: None,
            egress,
            cids: vec![scid.to_vec(), header.dcid.to_vec()],
            checked: false,
            closing: false,
            refuse: refused,
            leftover: Vec::new(),
            fin: false,
        };
        if refused {
            EdgeCounters::bump(&self.counters().connections_refused);
            connection.id = AgentId(0);
        } else {
            EdgeCounters::bump(&self.counters().connections_accepted);
            self.live += 1;
        }
        for cid in &connection.cids {
            self.by_cid.insert(cid.clone(), slot);
        }
        self.slots[slot] = Some(connection);
        Some(slot)
    }

    /// Reads, writes and sends for one connection; removes it once closed.
    fn service(&mut self, core: &mut Shard, slot: usize, now_ns: u64) -> usize {
        let mut work = 0;
        let counters = &self.metrics[self.shard];
        let Some(connection) = self.slots[slot].as_mut() else {
            return 0;
        };
        if connection.quic.is_established() && !connection.checked && !connection.refuse {
            connection.checked = true;
            if self.config.client_ca_path.is_some() && connection.quic.peer_cert().is_none() {
                EdgeCounters::bump(&counters.connections_certificate_required);
                close(
                    connection,
                    ErrorCode::CertificateRequired,
                    "a client certificate is required",
                );
            }
        }
        // A refused connection is closed as soon as its handshake completes: only then
        // does the client get our code and reason (during the handshake an application
        // close is reduced to a bare APPLICATION_ERROR, RFC 9000 10.2.3).
        if connection.refuse && connection.quic.is_established() {
            connection.refuse = false;
            close(
                connection,
                ErrorCode::ServerBusy,
                "the shard serves its maximum number of connections",
            );
        }
        // Replies first: they make room for the requests read next.
        work += write_egress(connection, counters);
        if !connection.closing && connection.quic.is_established() {
            let staging = &mut self.staging;
            staging.load(&mut connection.leftover);
            work += read_frames(connection, core, &self.config, counters, staging, now_ns);
            staging.save(&mut connection.leftover);
            work += write_egress(connection, counters);
            // Stopped by the per-call cap or by back-pressure in the shard: look again
            // next poll. (Stopped because replies pile up: the client's acknowledgements
            // and window updates will touch the connection when it reads.)
            let unread = connection.pending.is_some()
                || !connection.leftover.is_empty()
                || (connection.quic.stream_readable(FRAME_STREAM_ID)
                    && connection.egress.borrow().queued_bytes() <= self.config.egress_bytes_max);
            if unread && !self.again.contains(&slot) {
                self.again.push(slot);
            }
        }
        // Packets out.
        loop {
            if self.tx.is_full() {
                flush(&mut self.tx, &self.socket, counters);
            }
            let Some(out) = self.tx.next_buf() else {
                break;
            };
            match connection.quic.send(out) {
                Ok((len, info)) => {
                    let source = self.destinations.then_some(info.from.ip());
                    self.tx.commit_from(len, info.to, source);
                    work += 1;
                }
                Err(quiche::Error::Done) => break,
                Err(error) => {
                    tracing::debug!(shard = self.shard, %error, "QUIC send failed");
                    let _ = connection.quic.close(false, 0x1, b"internal error");
                    break;
                }
            }
        }
        if connection.quic.is_closed() {
            self.remove(core, slot, now_ns);
        }
        work
    }

    fn remove(&mut self, core: &mut Shard, slot: usize, now_ns: u64) {
        let Some(mut connection) = self.slots[slot].take() else {
            return;
        };
        for cid in &connection.cids {
            if self.by_cid.get(cid) == Some(&slot) {
                self.by_cid.remove(cid);
            }
        }
        if let Some(frame) = connection.pending.take() {
            core.discard_incoming(frame);
        }
        if let Some(frame) = connection.reader.take_partial() {
            core.discard_incoming(frame);
        }
        if connection.id != AgentId(0) {
            core.undeploy(connection.id, now_ns);
            self.live -= 1;
        }
        EdgeCounters::bump(&self.counters().connections_closed);
        self.free_slots.push(slot);
    }

    /// Looks at every connection's timers (at most every `SWEEP_INTERVAL_NS`).
    fn sweep(&mut self, core: &mut Shard, now_ns: u64) -> usize {
        let now = Instant::now();
        let mut earliest: Option<Duration> = None;
        let mut work = 0;
        for slot in 0..self.slots.len() {
            let Some(connection) = self.slots[slot].as_mut() else {
                continue;
            };
            if let Some(at) = connection.quic.timeout_instant() {
                if at <= now {
                    connection.quic.on_timeout();
                    work += self.service(core, slot, now_ns);
                } else {
                    let left = at - now;
                    earliest = Some(earliest.map_or(left, |e| e.min(left)));
                }
            }
        }
        let next = earliest.map(|left| now_ns + left.as_nanos() as u64);
        self.next_timer_ns = next;
        self.next_sweep_ns = next.map_or(now_ns + SWEEP_INTERVAL_NS, |at| {
            at.min(now_ns + SWEEP_INTERVAL_NS)
        });
        work
    }
}

fn close(connection: &mut Connection, code: ErrorCode, reason: &str) {
    connection.closing = true;
    let _ = connection.quic.close(true, code as u64, reason.as_bytes());
}

fn flush(tx: &mut SendBatch, socket: &UdpSocket, counters: &EdgeCounters) {
    if tx.is_empty() {
        return;
    }
    match tx.send(socket) {
        Ok(sent) => {
            EdgeCounters::add(&counters.datagrams_out, sent as u64);
        }
        Err(error) => tracing::debug!(%error, "UDP send failed"),
    }
}

/// Moves frames from the client's stream into the shard until the stream is drained or
/// back-pressure says stop.
fn read_frames(
    connection: &mut Connection,
    core: &mut Shard,
    config: &EdgeConfig,
    counters: &EdgeCounters,
    staging: &mut Staging,
    now_ns: u64,
) -> usize {
    let mut work = 0;
    loop {
        // Replies pile up: stop reading requests until the client reads. Requests read
        // before the pause may still add up to a stream window of replies (for a 1:1
        // agent such as echo); only a queue past that means the agents push more than
        // the client reads.
        let queued = connection.egress.borrow().queued_bytes();
        if queued > config.egress_bytes_max || work >= FRAMES_READ_PER_SERVICE {
            if queued > not_reading_bytes(config) {
                EdgeCounters::bump(&counters.connections_not_reading);
                close(connection, ErrorCode::NotReading, "replies not read");
            } else if queued > config.egress_bytes_max {
                EdgeCounters::bump(&counters.reads_paused);
            }
            return work;
        }
        if let Some(frame) = connection.pending.take() {
            if !submit(connection, core, frame, counters, now_ns) {
                return work;
            }
            work += 1;
        }
        let event = {
            let Connection {
                quic, reader, fin, ..
            } = &mut *connection;
            let mut source = |out: &mut [u8]| match quic.stream_recv(FRAME_STREAM_ID, out) {
                Ok((n, stream_fin)) => {
                    *fin |= stream_fin;
                    n
                }
                Err(_) => 0,
            };
            reader.next(
                &mut |out: &mut [u8]| staging.read(out, &mut source),
                &mut |frame_bytes| core.alloc_incoming(frame_bytes).ok(),
            )
        };
        match event {
            Ok(Event::Frame(frame)) => {
                if !submit(connection, core, frame, counters, now_ns) {
                    return work;
                }
                work += 1;
            }
            Ok(Event::Skipped {
                frame_bytes,
                to,
                correlation_id,
            }) => {
                EdgeCounters::bump(&counters.frames_oversized);
                let reason = format!(
                    "frame of {frame_bytes} bytes exceeds the limit of {} bytes",
                    config.frame_bytes_max
                );
                let header = error_header(connection.id, to, correlation_id);
                append_frame(
                    &mut connection.egress.borrow_mut().bytes,
                    &header,
                    reason.as_bytes(),
                );
                work += 1;
            }
            Ok(Event::Drained) => {
                if connection.fin && !connection.reader.at_boundary() {
                    EdgeCounters::bump(&counters.connections_protocol_violation);
                    close(
                        connection,
                        ErrorCode::ProtocolViolation,
                        "stream ended inside a frame",
                    );
                }
                return work;
            }
            Ok(Event::Blocked { .. }) => {
                EdgeCounters::bump(&counters.reads_paused);
                return work;
            }
            Err(error) => {
                EdgeCounters::bump(&counters.connections_protocol_violation);
                close(connection, ErrorCode::FrameTooLarge, &error.to_string());
                return work;
            }
        }
    }
}

/// Egress bytes past which a connection is closed for not reading its replies (and its
/// sink refuses more). Requests read before reads paused (at `egress_bytes_max`) may still
/// add a stream window of replies, so only a queue past twice that means the client does
/// not read.
fn not_reading_bytes(config: &EdgeConfig) -> usize {
    2 * config.egress_bytes_max + config.stream_window_bytes as usize
}

/// The header of an error frame the edge sends a client about its request.
fn error_header(connection_id: AgentId, about: AgentId, correlation_id: u64) -> Header {
    Header {
        to: connection_id,
        from: about,
        conversation_id: 0,
        correlation_id,
        performative: Performative::Failure,
        priority: Priority::High,
        flags: Flags(Flags::REPLY.0 | Flags::ERROR.0),
    }
}

/// Hands one frame to the shard. Returns false if it must wait (kept as `pending`).
fn submit(
    connection: &mut Connection,
    core: &mut Shard,
    mut frame: IncomingFrame,
    counters: &EdgeCounters,
    now_ns: u64,
) -> bool {
    // The raw fields, for an error reply if the frame turns out invalid.
    let (raw_to, raw_correlation) = {
        let bytes = frame.buffer_mut();
        if bytes.len() >= FRAME_FIXED_BYTES {
            let root = bytes.len() - FRAME_FIXED_BYTES;
            let word = |at: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&bytes[root + at..root + at + 8]);
                u64::from_le_bytes(w)
            };
            (AgentId(word(0)), word(24))
        } else {
            (AgentId(0), 0)
        }
    };
    match core.handle_incoming(frame, connection.id, now_ns) {
        Incoming::Accepted(_) => {
            EdgeCounters::bump(&counters.frames_in);
            true
        }
        Incoming::Busy(frame) => {
            EdgeCounters::bump(&counters.reads_paused);
            connection.pending = Some(frame);
            false
        }
        Incoming::Invalid(error) => {
            EdgeCounters::bump(&counters.frames_invalid);
            let reason = format!("malformed frame: {error}");
            let header = error_header(connection.id, raw_to, raw_correlation);
            append_frame(
                &mut connection.egress.borrow_mut().bytes,
                &header,
                reason.as_bytes(),
            );
            true
        }
        Incoming::Rejected { header, error } => {
            EdgeCounters::bump(&counters.frames_rejected);
            if !header.flags.contains(Flags::REPLY) {
                let mut reply = header.reply_to(Performative::Failure);
                reply.flags = Flags(Flags::REPLY.0 | Flags::ERROR.0);
                let reason = error.to_string();
                append_frame(
                    &mut connection.egress.borrow_mut().bytes,
                    &reply,
                    reason.as_bytes(),
                );
            }
            true
        }
    }
}

/// Hands queued reply bytes to quiche (as much as flow control allows).
fn write_egress(connection: &mut Connection, counters: &EdgeCounters) -> usize {
    let mut egress = connection.egress.borrow_mut();
    if egress.queued_bytes() == 0 {
        return 0;
    }
    let mut work = 0;
    while egress.sent < egress.bytes.len() {
        let start = egress.sent;
        // Never offer quiche more than it can take now: a `stream_send` beyond the
        // connection's flow-control credit queues a DATA_BLOCKED frame every time, and a
        // peer that stopped reading would get one packet per call.
        let room = match connection.quic.stream_capacity(FRAME_STREAM_ID) {
            Ok(0) => break,
            Ok(room) => room,
            // Not open yet (the first write opens it): let `stream_send` decide.
            Err(_) => egress.bytes.len() - start,
        };
        let end = egress.bytes.len().min(start + room);
        match connection
            .quic
            .stream_send(FRAME_STREAM_ID, &egress.bytes[start..end], false)
        {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                egress.sent += n;
                work += 1;
            }
        }
    }
    let frames = std::mem::take(&mut egress.frames);
    EdgeCounters::add(&counters.frames_out, frames);
    if egress.sent == egress.bytes.len() {
        egress.bytes.clear();
        egress.sent = 0;
    } else if egress.sent > 64 * 1024 {
        let sent = egress.sent;
        egress.bytes.drain(..sent);
        egress.sent = 0;
    }
    work
}

impl ShardIo for Edge {
    fn poll(&mut self, core: &mut Shard, now_ns: u64) -> usize {
        let mut work = 0;
        // Datagrams other shards forwarded to us.
        loop {
            let next = self.shared.borrow_mut().forwarded.pop_front();
            let Some((mut datagram, peer, local)) = next else {
                break;
            };
            EdgeCounters::bump(&self.counters().datagrams_forwarded_in);
            self.handle_datagram(core, &mut datagram, peer, local, true);
            work += 1;
        }
        // The socket.
        for _ in 0..RECV_ROUNDS_PER_POLL {
            let got = match self.rx.recv(&self.socket) {
                Ok(got) => got,
                Err(error) => {
                    tracing::debug!(shard = self.shard, %error, "UDP receive failed");
                    0
                }
            };
            if got == 0 {
                break;
            }
            EdgeCounters::add(&self.counters().datagrams_in, got as u64);
            // Taken out while its datagrams are handled (the default holds no memory).
            let mut rx = std::mem::take(&mut self.rx);
            for i in 0..got {
                let local = self.local_for(rx.destination(i));
                let (datagram, peer) = rx.get_mut(i);
                self.handle_datagram(core, datagram, peer, local, false);
            }
            self.rx = rx;
            work += got;
            if !self.rx.is_full() {
                break;
            }
        }
        // Connections with new replies from their agents, and with frames left unread.
        let ready = std::mem::take(&mut self.shared.borrow_mut().ready);
        for slot in ready {
            self.touch(slot);
        }
        for slot in std::mem::take(&mut self.again) {
            self.touch(slot);
        }
        let mut touched = std::mem::take(&mut self.touched);
        for &slot in &touched {
            work += self.service(core, slot, now_ns);
        }
        touched.clear();
        self.touched = touched;
        if now_ns >= self.next_sweep_ns {
            work += self.sweep(core, now_ns);
        }
        let dropped = std::mem::take(&mut self.shared.borrow_mut().forward_dropped);
        if dropped > 0 {
            EdgeCounters::add(&self.counters().datagrams_forward_dropped, dropped);
        }
        let counters = &self.metrics[self.shard];
        flush(&mut self.tx, &self.socket, counters);
        work
    }

    fn next_timer_ns(&self) -> Option<u64> {
        self.next_timer_ns
    }

    fn readable(&self) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(async move {
            let mut byte = [0u8; 1];
            let _ = self.readiness.peek_from(&mut byte).await;
        })
    }

    fn shutdown(&mut self, core: &mut Shard, now_ns: u64) {
        self.stopping = true;
        for slot in 0..self.slots.len() {
            if let Some(connection) = self.slots[slot].as_mut() {
                close(
                    connection,
                    ErrorCode::ShuttingDown,
                    "the node is shutting down",
                );
                // A closing connection reads no more frames: the buffers it held for
                // them go back now, not after QUIC's closing period, so that the shard's
                // drain (which waits for every buffer) does not wait on them.
                if let Some(frame) = connection.pending.take() {
                    core.discard_incoming(frame);
                }
                if let Some(frame) = connection.reader.take_partial() {
                    core.discard_incoming(frame);
                }
                self.service(core, slot, now_ns);
            }
        }
        let counters = &self.metrics[self.shard];
        flush(&mut self.tx, &self.socket, counters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_datagrams_round_trip_their_addresses() {
        let mut buf = Vec::new();
        let ours: SocketAddr = "10.0.0.2:4433".parse().expect("addr");
        for peer in ["127.0.0.1:4433", "[::1]:9", "[2001:db8::7]:65535"] {
            let peer: SocketAddr = peer.parse().expect("addr");
            for local in [ours, peer] {
                encode_forwarded(&mut buf, peer, local, b"quic");
                let (got_peer, got_local, datagram) = decode_forwarded(&buf).expect("decode");
                assert_eq!((got_peer, got_local), (peer, local));
                assert_eq!(datagram, b"quic");
            }
        }
        assert!(decode_forwarded(&[9; 60]).is_none());
        assert!(decode_forwarded(&[4; 5]).is_none());
        encode_forwarded(&mut buf, ours, ours, b"");
        assert!(decode_forwarded(&buf[..FORWARD_HEADER_BYTES - 1]).is_none());
        assert!(decode_forwarded(&buf).is_some());
    }

    /// A short-header packet for a connection id that shard `owner` issued.
    fn misrouted_packet(owner: u16) -> Vec<u8> {
        let mut packet = vec![0x40];
        packet.extend_from_slice(&crate::cid::new_cid(owner));
        packet.extend_from_slice(&[0x5a; 40]);
        packet
    }

    /// Records `(from, payload)` of each message, as shard 1's edge agent.
    struct Keep(Kept);

    /// What [`Keep`] was given: `(from, payload)`.
    type Kept = Rc<RefCell<Vec<(AgentId, Vec<u8>)>>>;

    impl Agent for Keep {
        fn on_message(
            &mut self,
            message: &Message<'_>,
            _ctx: &mut Context<'_>,
        ) -> Result<(), AgentError> {
            self.0
                .borrow_mut()
                .push((message.from(), message.payload.to_vec()));
            Ok(())
        }
    }

    /// Sends `packet` to `edge` from `client` and polls the edge until it has read it
    /// (the datagram crossed loopback) or 2 s pass.
    fn receive(edge: &mut Edge, core: &mut Shard, client: &UdpSocket, packet: &[u8]) {
        let before = edge.counters().datagrams_in.load(Ordering::Relaxed);
        client.send_to(packet, edge.local_addr()).expect("send");
        let deadline = Instant::now() + Duration::from_secs(2);
        while edge.counters().datagrams_in.load(Ordering::Relaxed) == before
            && Instant::now() < deadline
        {
            edge.poll(core, 0);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A packet for another shard's connection is forwarded to that shard's edge agent
    /// through the rings; once this shard is stopping it is dropped and counted instead,
    /// since the owner may have stopped reading its rings and the frame could only wait
    /// out the drain there.
    #[test]
    fn misrouted_packets_are_forwarded_and_dropped_once_stopping() {
        let dir =
            std::env::temp_dir().join(format!("dataplane-edge-misrouted-{}", std::process::id()));
        let (cert, key, _, _) = crate::tls::ensure_dev_cert(&dir).expect("dev cert");
        let config = Arc::new(EdgeConfig::new(([127, 0, 0, 1], 0).into(), cert, key));
        let executor = glommio::LocalExecutorBuilder::default()
            .make()
            .expect("executor");
        executor.run(async move {
            let metrics: EdgeMetrics = (0..2).map(|_| EdgeCounters::default()).collect();
            let mut core = Shard::new(dataplane_shard::ShardConfig::new(0, 2));
            let mut edge =
                Edge::start(config, Arc::clone(&metrics), &mut core, 0).expect("edge starts");
            let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);

            let packet = misrouted_packet(1);
            receive(&mut edge, &mut core, &client, &packet);
            assert_eq!(read(&metrics[0].datagrams_forwarded_out), 1);
            // Shard 1, with a stand-in for its edge agent that keeps what it is given.
            let mut owner = Shard::new(dataplane_shard::ShardConfig::new(1, 2));
            let taken = Kept::default();
            owner
                .deploy(edge_agent_id(1, 2), Box::new(Keep(Rc::clone(&taken))), 0)
                .expect("deploy");
            let mut items = Vec::new();
            core.poll_transmit(1, |item| {
                items.push(item);
                Ok(())
            });
            assert_eq!(items.len(), 1, "one frame for shard 1's edge");
            for item in items {
                owner.handle_ring_item(item).expect("taken");
            }
            owner.poll_deliver(0, 16);
            let (from, payload) = taken.borrow_mut().pop().expect("forwarded");
            assert_eq!(from, edge_agent_id(0, 2));
            let (peer, local, datagram) = decode_forwarded(&payload).expect("well formed");
            assert_eq!(peer, client.local_addr().expect("addr"));
            assert_eq!(local, edge.local_addr());
            assert_eq!(datagram, packet.as_slice());
            // The buffer goes home, as the rings would carry it.
            owner.poll_transmit(0, |item| core.handle_ring_item(item));

            // An owner past the node's shards is nobody's: counted, never forwarded.
            receive(&mut edge, &mut core, &client, &misrouted_packet(7));
            assert_eq!(read(&metrics[0].datagrams_unknown_connection), 1);
            assert_eq!(read(&metrics[0].datagrams_forwarded_out), 1);

            edge.shutdown(&mut core, 0);
            receive(&mut edge, &mut core, &client, &misrouted_packet(1));
            assert_eq!(read(&metrics[0].datagrams_in), 3);
            assert_eq!(read(&metrics[0].datagrams_forwarded_out), 1);
            assert_eq!(read(&metrics[0].datagrams_forward_dropped), 1);
            let mut sent = 0;
            core.poll_transmit(1, |_| {
                sent += 1;
                Ok(())
            });
            assert_eq!(sent, 0, "nothing crosses to a stopping owner");
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
