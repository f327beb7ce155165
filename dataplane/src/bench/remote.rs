//! The `remote` suite: request/response over the QUIC edge, from a client process.
//!
//! The server is a node with one shard (an echo agent and the edge) pinned to the first
//! CPU, started in-process unless `--addr` names a running node. The load generator runs
//! on one thread pinned to the second CPU and drives [`ClientConnection`]s (sans-IO) over
//! non-blocking UDP sockets with `recvmmsg`/`sendmmsg`, busy-polling: no async runtime
//! between the measurement and the socket.
//!
//! - latency: closed loop (one request in flight per connection, the next sent when the
//!   reply arrives) without `--rate`; with `--rate R`, open loop: request `i` is due at
//!   `start + i/R`, sent even if earlier ones are unanswered, and its latency is
//!   `reply arrival - due time` (coordinated-omission safe: a stall delays every request
//!   due during it, and they all report it);
//! - throughput: every connection keeps a window of requests in flight; replies per second.
//!   Many small frames share each QUIC packet.
//!
//! The first tenth of each workload (at most 200 ms) is warm-up and not recorded.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use dataplane_client::{ClientConfig, ClientConnection, Verify};
use dataplane_edge::server::{io_factory, EdgeConfig};
use dataplane_edge::socket::{bind_client, enable_gro, gso_supported, RecvBatch, SendBatch};
use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use dataplane_runtime::{IdlePolicy, Node, RuntimeConfig};
use dataplane_shard::Agent;

use super::report::{OpenLoopSchedule, Recorder, SYSTEM_DATAPLANE};
use super::{BenchResult, SuiteOptions};

/// Requests in flight per connection in the throughput workload.
pub const FLOOD_WINDOW_REQUESTS: u64 = 2048;
/// Datagrams per `sendmmsg`, and per `recvmmsg` without GRO.
const BATCH_DATAGRAMS: usize = 64;
/// 64 KiB `recvmmsg` slots with GRO.
const GRO_SLOTS: usize = 16;

/// What the `remote` suite needs besides [`SuiteOptions`].
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// A running node's edge; `None` starts one in-process on the first CPU.
    pub addr: Option<SocketAddr>,
    /// How to verify the node (ignored for the in-process node, whose certificate is
    /// pinned).
    pub client: Option<ClientConfig>,
    /// Connections the load generator opens.
    pub connections: usize,
    /// The agent requests go to.
    pub to: AgentId,
}

/// A node with one shard, an echo agent and the edge, for the benchmark.
pub struct BenchServer {
    node: Option<Node>,
    /// Its edge address.
    pub addr: SocketAddr,
    /// The client configuration that trusts it.
    pub client: ClientConfig,
    dir: std::path::PathBuf,
}

impl std::fmt::Debug for BenchServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            let _ = node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the in-process server on `cpu`: one busy-polling shard, echo as `echo`.
pub fn start_server(cpu: usize) -> anyhow::Result<BenchServer> {
    let dir = std::env::temp_dir().join(format!("dataplane-bench-remote-{}", std::process::id()));
    let (cert, key, fingerprint, _) =
        dataplane_edge::tls::ensure_dev_cert(&dir).context("benchmark certificate")?;
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let edge = EdgeConfig::new(addr, cert, key);
    let (factory, _metrics) = io_factory(edge, 1);
    let mut runtime = RuntimeConfig::new(vec![cpu], IdlePolicy::BusyPoll);
    runtime.shard.mailbox_capacity_frames = 65536;
    runtime.shard.frame_pool_frames_max = 1 << 20;
    let agents = Arc::new(|_shard: usize, _shards: usize| {
        vec![(
            AgentId::from_name("echo"),
            Box::new(crate::agents::Echo) as Box<dyn Agent>,
        )]
    });
    let node = Node::start_with_io(runtime, agents, Some(factory)).context("benchmark node")?;
    Ok(BenchServer {
        node: Some(node),
        addr,
        client: ClientConfig::new(Verify::Fingerprint(fingerprint)),
        dir,
    })
}

/// One connection of the load generator.
struct Conn {
    connection: ClientConnection,
    socket: UdpSocket,
    tx: SendBatch,
    /// Whether the socket has GRO on.
    gro: bool,
    /// Requests sent and not answered.
    in_flight: u64,
    /// Closed loop: when the request in flight was sent.
    sent_at: Instant,
}

impl Conn {
    fn open(addr: SocketAddr, config: &ClientConfig) -> anyhow::Result<Conn> {
        let socket = bind_client(if addr.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        })?;
        let gro = enable_gro(&socket);
        let gso = gso_supported(&socket);
        let mut local = socket.local_addr()?;
        if local.ip().is_unspecified() && addr.ip().is_loopback() {
            local.set_ip(addr.ip());
        }
        let connection = ClientConnection::connect(config, local, addr)?;
        Ok(Conn {
            connection,
            socket,
            tx: SendBatch::new(BATCH_DATAGRAMS, gso),
            gro,
            in_flight: 0,
            sent_at: Instant::now(),
        })
    }

    /// Sends what the connection has to send.
    fn transmit(&mut self) {
        loop {
            let Some(buf) = self.tx.next_buf() else {
                let _ = self.tx.send(&self.socket);
                continue;
            };
            match self.connection.poll_transmit(buf) {
                Some((len, to)) => self.tx.commit(len, to),
                None => break,
            }
        }
        if !self.tx.is_empty() {
            let _ = self.tx.send(&self.socket);
        }
    }

    fn receive(&mut self, rx: &mut RecvBatch) -> usize {
        let mut got = 0;
        loop {
            let n = rx.recv(&self.socket).unwrap_or(0);
            for i in 0..n {
                let (datagram, from) = rx.get_mut(i);
                self.connection.handle_datagram(datagram, from);
            }
            got += n;
            if !rx.is_full() {
                return got;
            }
        }
    }

    fn timers(&mut self, now: Instant) {
        if self.connection.timeout().is_some_and(|at| at <= now) {
            self.connection.on_timeout();
        }
    }
}

/// A receive batch for `conns`: GRO-sized slots if every socket has GRO on.
fn receive_batch(conns: &[Conn]) -> RecvBatch {
    if conns.iter().all(|c| c.gro) {
        RecvBatch::new(GRO_SLOTS, true)
    } else {
        RecvBatch::new(BATCH_DATAGRAMS, false)
    }
}

fn request(to: AgentId, correlation_id: u64) -> Header {
    Header {
        to,
        from: AgentId(0),
        conversation_id: 0,
        correlation_id,
        performative: Performative::Request,
        priority: Priority::Normal,
        flags: Flags::NONE,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Closed,
    Open(u64),
    Flood,
}

/// Runs one workload for `seconds`; returns (replies counted, seconds counted, latency).
fn workload(
    conns: &mut [Conn],
    to: AgentId,
    payload: &[u8],
    seconds: f64,
    mode: Workload,
) -> anyhow::Result<(u64, f64, Recorder)> {
    let mut rx = receive_batch(conns);
    let mut recorder = Recorder::new();
    let start = Instant::now();
    let warmup = Duration::from_secs_f64((seconds / 10.0).min(0.2));
    let end = start + Duration::from_secs_f64(seconds);
    let schedule = OpenLoopSchedule::new(
        start,
        match mode {
            Workload::Open(rate) => rate,
            _ => 1,
        },
    );
    let mut next_index = 0u64;
    let mut counted = 0u64;
    let mut counted_since: Option<Instant> = None;
    let n = conns.len() as u64;
    let mut polls = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Queue what is due.
        match mode {
            Workload::Closed => {
                for (i, conn) in conns.iter_mut().enumerate() {
                    if conn.in_flight == 0 {
                        conn.connection
                            .queue_frame(&request(to, i as u64), payload)?;
                        conn.in_flight = 1;
                        conn.sent_at = now;
                    }
                }
            }
            Workload::Open(_) => {
                while schedule.due(next_index) <= now {
                    let conn = &mut conns[(next_index % n) as usize];
                    conn.connection
                        .queue_frame(&request(to, next_index), payload)?;
                    conn.in_flight += 1;
                    next_index += 1;
                }
            }
            Workload::Flood => {
                for conn in conns.iter_mut() {
                    while conn.in_flight < FLOOD_WINDOW_REQUESTS {
                        conn.connection.queue_frame(&request(to, 0), payload)?;
                        conn.in_flight += 1;
                    }
                }
            }
        }
        for conn in conns.iter_mut() {
            conn.transmit();
            conn.receive(&mut rx);
            let arrived = Instant::now();
            while let Some(frame) = conn.connection.poll_frame() {
                conn.in_flight = conn.in_flight.saturating_sub(1);
                let header = frame.header();
                if header.flags.contains(Flags::ERROR) {
                    bail!(
                        "the node answered with an error: {}",
                        String::from_utf8_lossy(frame.payload())
                    );
                }
                conn.connection.recycle(frame);
                if arrived < start + warmup {
                    continue;
                }
                counted_since.get_or_insert(arrived);
                counted += 1;
                match mode {
                    Workload::Closed => recorder.record_between(conn.sent_at, arrived),
                    Workload::Open(_) => {
                        recorder.record_between(schedule.due(header.correlation_id), arrived)
                    }
                    Workload::Flood => {}
                }
            }
            if conn.connection.is_closed() {
                bail!(
                    "connection closed: {}",
                    conn.connection
                        .error()
                        .map_or("no reason".to_owned(), |e| e.to_string())
                );
            }
        }
        polls += 1;
        if polls.is_multiple_of(64) {
            for conn in conns.iter_mut() {
                conn.timers(now);
            }
        }
    }
    let elapsed = counted_since.map_or(0.0, |since| since.elapsed().as_secs_f64());
    // Let what is in flight drain so the next workload starts clean.
    let drain_until = Instant::now() + Duration::from_millis(500);
    while conns.iter().any(|c| c.in_flight > 0) && Instant::now() < drain_until {
        for conn in conns.iter_mut() {
            conn.transmit();
            conn.receive(&mut rx);
            while let Some(frame) = conn.connection.poll_frame() {
                conn.in_flight = conn.in_flight.saturating_sub(1);
                conn.connection.recycle(frame);
            }
            conn.timers(Instant::now());
        }
    }
    for conn in conns.iter_mut() {
        conn.in_flight = 0;
    }
    Ok((counted, elapsed, recorder))
}

/// Runs the `remote` suite once.
pub fn run(opts: &SuiteOptions, remote: &RemoteOptions) -> anyhow::Result<BenchResult> {
    let cpus = super::pick_cpus(opts, 2);
    let (server_cpu, client_cpu) = match cpus.as_slice() {
        [server, client, ..] => (*server, *client),
        [only] => (*only, *only),
        [] => bail!("no CPU to run on"),
    };
    let server = match remote.addr {
        Some(_) => None,
        None => Some(start_server(server_cpu)?),
    };
    let (addr, config) = match (&server, remote.addr, &remote.client) {
        (Some(server), _, _) => (server.addr, server.client.clone()),
        (None, Some(addr), Some(config)) => (addr, config.clone()),
        (None, _, _) => bail!("--addr needs a way to verify the node"),
    };
    let connections = remote.connections.max(1);
    let to = remote.to;
    let payload = vec![0x5au8; opts.payload_bytes];
    let seconds = opts.seconds;
    let rate = opts.rate_msgs_per_s;
    // The load generator: its own pinned thread.
    let generator = std::thread::Builder::new()
        .name("bench-remote".to_owned())
        .spawn(move || -> anyhow::Result<(f64, u64, f64, Recorder)> {
            core_affinity::set_for_current(core_affinity::CoreId { id: client_cpu });
            let mut conns = (0..connections)
                .map(|_| Conn::open(addr, &config))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut rx = receive_batch(&conns);
            while !conns.iter().all(|c| c.connection.is_established()) {
                if Instant::now() > deadline {
                    bail!("handshake with {addr} did not complete in 10 s");
                }
                for conn in conns.iter_mut() {
                    conn.transmit();
                    conn.receive(&mut rx);
                    conn.timers(Instant::now());
                    if let Some(error) = conn.connection.local_failure() {
                        bail!("{addr}: {error}");
                    }
                    if conn.connection.is_closed() {
                        bail!(
                            "{addr}: {}",
                            conn.connection
                                .error()
                                .map_or(String::new(), |e| e.to_string())
                        );
                    }
                }
            }
            let mode = match rate {
                Some(rate) => Workload::Open(rate),
                None => Workload::Closed,
            };
            let (_, _, latency) = workload(&mut conns, to, &payload, seconds, mode)?;
            let (messages, elapsed, _) =
                workload(&mut conns, to, &payload, seconds, Workload::Flood)?;
            for conn in conns.iter_mut() {
                conn.connection.close();
                conn.transmit();
            }
            let throughput = if elapsed > 0.0 {
                messages as f64 / elapsed
            } else {
                0.0
            };
            Ok((throughput, messages, elapsed, latency))
        })
        .context("starting the load generator")?;
    let (_, messages, elapsed, latency) = generator
        .join()
        .map_err(|_| anyhow::anyhow!("the load generator panicked"))??;
    drop(server);
    Ok(BenchResult::new(
        "remote",
        SYSTEM_DATAPLANE,
        1,
        messages,
        elapsed,
        latency.latency_ns(),
    ))
}
