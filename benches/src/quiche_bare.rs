//! The ceiling of the `remote` suite: bare quiche at both ends, no frame handling.
//!
//! The server is one quiche connection that writes back every stream byte it reads; the
//! client writes the very bytes `dataplane bench remote` writes (length-prefixed frames to
//! `echo`) and counts the bytes that come back. Both ends use the edge's socket code
//! (`SendBatch` with GSO trains, `RecvBatch` with GRO) and the edge's and client's quiche
//! settings, each on its own pinned thread. What is left is quiche, its crypto and the
//! kernel: a quiche-based edge and client with these settings, one connection and this
//! kind of driver loop cannot move more messages on the same two cores, whatever their
//! own path costs.
//!
//! `compare remote` runs it as the `quiche-bare` row, so the ceiling is measured in the
//! same run as dataplane and quinn (docs/benchmarks.md, "The ceiling: bare quiche").
//! The `quiche-bare` binary also runs one end alone against the real node or the real load
//! generator, to tell which end bounds the flood.
//!
//! Latency: a closed loop, one request in flight (the reply is the request's bytes);
//! throughput: a window of [`WINDOW_REQUESTS`] requests in flight, as in the suite's flood.
//! The first tenth of each workload (at most 200 ms) is warm-up and not recorded.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use dataplane::bench::remote::FLOOD_WINDOW_REQUESTS;
use dataplane::bench::report::Recorder;
use dataplane::bench::BenchResult;
use dataplane_client::{ClientConfig, Verify};
use dataplane_edge::cid::new_cid;
use dataplane_edge::framing::append_frame;
use dataplane_edge::protocol::{FRAME_STREAM_ID, LENGTH_PREFIX_BYTES};
use dataplane_edge::server::{quiche_server_config, EdgeConfig};
use dataplane_edge::socket::{
    bind_client, bind_reuseport, enable_gro, gso_supported, RecvBatch, SendBatch,
};
use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};

/// System name in the report.
pub const SYSTEM_QUICHE_BARE: &str = "quiche-bare";
/// Requests in flight in the flood, as in `dataplane bench remote`.
pub const WINDOW_REQUESTS: usize = FLOOD_WINDOW_REQUESTS as usize;
/// Datagrams per `sendmmsg`.
const BATCH_DATAGRAMS: usize = 64;
/// 64 KiB `recvmmsg` slots with GRO.
const GRO_SLOTS: usize = 16;
/// Stream bytes moved per `stream_recv`.
const CHUNK_BYTES: usize = 64 * 1024;
/// Bytes the server holds for writing back before it compacts its buffer.
const PENDING_COMPACT_BYTES: usize = 512 * 1024;
/// Bytes the server holds for writing back before it stops reading (a client that does
/// not read its replies is then held back by flow control, not by the server's memory).
const PENDING_BYTES_MAX: usize = 4 << 20;
/// Longest a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a closed-loop reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Warm-up cap (the warm-up is a tenth of a workload, at most this).
const WARMUP_MAX: Duration = Duration::from_millis(200);
/// Polls between checks of the clock for quiche's timers and the end of a workload.
const POLLS_PER_CLOCK_CHECK: u64 = 64;

/// The bare echo server: one thread, one connection.
#[derive(Debug)]
pub struct BareServer {
    /// Where it listens.
    pub addr: SocketAddr,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    /// Set to make the server return at its next clock check.
    stop: Arc<AtomicBool>,
    dir: PathBuf,
}

impl BareServer {
    /// Starts it on `cpu`, on `port` of 127.0.0.1 (0: a free one); it serves one
    /// connection until that closes or `serve_for` passes.
    pub fn start(cpu: usize, port: u16, serve_for: Duration) -> anyhow::Result<BareServer> {
        let dir = std::env::temp_dir().join(format!(
            "dataplane-quiche-bare-{}-{port}",
            std::process::id()
        ));
        let (cert, key, _, _) =
            dataplane_edge::tls::ensure_dev_cert(&dir).context("bare server certificate")?;
        let socket = bind_reuseport(SocketAddr::from(([127, 0, 0, 1], port)))?;
        let addr = socket.local_addr()?;
        let config = EdgeConfig::new(addr, cert, key);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("quiche-bare-server".to_owned())
            .spawn(move || serve(cpu, socket, &config, serve_for, &stop_seen))
            .context("starting the bare server")?;
        Ok(BareServer {
            addr,
            thread: Some(thread),
            stop,
            dir,
        })
    }

    /// Has the server return at its next clock check, connection or not.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits until it has served (its connection closed, its time passed, or
    /// [`BareServer::stop`]).
    pub fn join(mut self) -> anyhow::Result<()> {
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow::anyhow!("the bare server panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the bare server on `server_cpu` and the bare client on `client_cpu`: latency
/// (closed loop) for `seconds`, then the flood for `seconds`.
pub fn run(
    server_cpu: usize,
    client_cpu: usize,
    payload_bytes: usize,
    seconds: f64,
) -> anyhow::Result<BenchResult> {
    let serve_for = Duration::from_secs_f64(2.0 * seconds) + HANDSHAKE_TIMEOUT + REPLY_TIMEOUT;
    let server = BareServer::start(server_cpu, 0, serve_for)?;
    let outcome = run_client(client_cpu, server.addr, payload_bytes, seconds);
    // The client has closed its connection, or failed: either way the server is done.
    server.stop();
    let served = server.join();
    let run = outcome?;
    served?;
    Ok(BenchResult::new(
        "remote",
        SYSTEM_QUICHE_BARE,
        1,
        run.replies,
        run.seconds,
        run.latency.latency_ns(),
    ))
}

/// What the bare client measured.
#[derive(Debug)]
pub struct ClientRun {
    /// Closed-loop round trips.
    pub latency: Recorder,
    /// Replies counted in the flood.
    pub replies: u64,
    /// Seconds of the flood counted.
    pub seconds: f64,
    /// QUIC packets the client received while the flood was counted: replies per packet
    /// tell how full the server fills its packets.
    pub packets_in: usize,
}

/// The bare client against `addr` (a bare server or a dataplane node serving `echo`), on
/// its own thread pinned to `cpu`: a closed loop, then the flood, `seconds` each.
pub fn run_client(
    cpu: usize,
    addr: SocketAddr,
    payload_bytes: usize,
    seconds: f64,
) -> anyhow::Result<ClientRun> {
    std::thread::Builder::new()
        .name("quiche-bare-client".to_owned())
        .spawn(move || {
            pin(cpu);
            let mut client = BareClient::connect(addr, payload_bytes)?;
            let latency = client.closed_loop(seconds)?;
            let (replies, seconds, packets_in) = client.flood(seconds)?;
            client.close();
            Ok(ClientRun {
                latency,
                replies,
                seconds,
                packets_in,
            })
        })
        .context("starting the bare client")?
        .join()
        .map_err(|_| anyhow::anyhow!("the bare client panicked"))?
}

fn pin(cpu: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
}

/// Sends everything `conn` has to send.
fn transmit(conn: &mut quiche::Connection, tx: &mut SendBatch, socket: &UdpSocket) {
    loop {
        let Some(buf) = tx.next_buf() else {
            let _ = tx.send(socket);
            continue;
        };
        match conn.send(buf) {
            Ok((len, info)) => tx.commit(len, info.to),
            Err(_) => break,
        }
    }
    if !tx.is_empty() {
        let _ = tx.send(socket);
    }
}

/// Feeds every waiting datagram to `conn`.
fn receive(
    conn: &mut quiche::Connection,
    rx: &mut RecvBatch,
    socket: &UdpSocket,
    local: SocketAddr,
) {
    loop {
        let n = rx.recv(socket).unwrap_or(0);
        for i in 0..n {
            let (datagram, from) = rx.get_mut(i);
            let _ = conn.recv(datagram, quiche::RecvInfo { from, to: local });
        }
        if !rx.is_full() {
            return;
        }
    }
}

fn rx_batch(socket: &UdpSocket) -> RecvBatch {
    if enable_gro(socket) {
        RecvBatch::new(GRO_SLOTS, true)
    } else {
        RecvBatch::new(BATCH_DATAGRAMS, false)
    }
}

/// Waits for the first Initial packet, accepts it, then echoes stream bytes until the
/// connection closes or `serve_for` passes.
fn serve(
    cpu: usize,
    socket: UdpSocket,
    config: &EdgeConfig,
    serve_for: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    pin(cpu);
    let end = Instant::now() + serve_for;
    let mut quic = quiche_server_config(config).map_err(anyhow::Error::msg)?;
    let local = socket.local_addr()?;
    let mut rx = rx_batch(&socket);
    let mut tx = SendBatch::new(BATCH_DATAGRAMS, gso_supported(&socket));
    let mut conn = loop {
        if Instant::now() > end || stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let n = rx.recv(&socket).unwrap_or(0);
        let mut accepted = None;
        for i in 0..n {
            let (datagram, from) = rx.get_mut(i);
            if accepted.is_none() {
                let is_initial = quiche::Header::from_slice(datagram, quiche::MAX_CONN_ID_LEN)
                    .is_ok_and(|header| header.ty == quiche::Type::Initial);
                if !is_initial {
                    continue;
                }
                // The edge's own kind of connection id (16 bytes).
                let scid = new_cid(0);
                let scid = quiche::ConnectionId::from_ref(&scid);
                accepted = Some(quiche::accept(&scid, None, local, from, &mut quic)?);
            }
            if let Some(conn) = accepted.as_mut() {
                let _ = conn.recv(datagram, quiche::RecvInfo { from, to: local });
            }
        }
        if let Some(conn) = accepted {
            break conn;
        }
    };
    let mut pending: Vec<u8> = Vec::with_capacity(2 * PENDING_COMPACT_BYTES);
    let mut pending_from = 0usize;
    let mut chunk = vec![0u8; CHUNK_BYTES];
    let mut polls = 0u64;
    loop {
        receive(&mut conn, &mut rx, &socket, local);
        // Read what came in, behind what still waits to go back.
        while pending.len() - pending_from < PENDING_BYTES_MAX {
            let Ok((len, _fin)) = conn.stream_recv(FRAME_STREAM_ID, &mut chunk) else {
                break;
            };
            pending.extend_from_slice(&chunk[..len]);
        }
        if pending_from < pending.len() {
            if let Ok(sent) = conn.stream_send(FRAME_STREAM_ID, &pending[pending_from..], false) {
                pending_from += sent;
            }
            if pending_from == pending.len() {
                pending.clear();
                pending_from = 0;
            } else if pending_from > PENDING_COMPACT_BYTES {
                pending.drain(..pending_from);
                pending_from = 0;
            }
        }
        transmit(&mut conn, &mut tx, &socket);
        polls += 1;
        if polls.is_multiple_of(POLLS_PER_CLOCK_CHECK) {
            let now = Instant::now();
            if conn.timeout_instant().is_some_and(|at| at <= now) {
                conn.on_timeout();
                transmit(&mut conn, &mut tx, &socket);
            }
            if conn.is_closed() || now > end || stop.load(Ordering::Relaxed) {
                return Ok(());
            }
        }
    }
}

/// A quiche client writing a window of pre-encoded requests and counting reply bytes.
struct BareClient {
    conn: quiche::Connection,
    socket: UdpSocket,
    local: SocketAddr,
    rx: RecvBatch,
    tx: SendBatch,
    /// [`WINDOW_REQUESTS`] requests back to back, written over and over.
    window: Vec<u8>,
    request_bytes: usize,
    chunk: Vec<u8>,
    /// Stream bytes written and read so far.
    sent: u64,
    received: u64,
    /// Next byte of `window` to write.
    offset: usize,
}

impl BareClient {
    fn connect(addr: SocketAddr, payload_bytes: usize) -> anyhow::Result<BareClient> {
        let header = Header {
            to: AgentId::from_name("echo"),
            from: AgentId(0),
            conversation_id: 0,
            correlation_id: 0,
            performative: Performative::Request,
            priority: Priority::Normal,
            flags: Flags::NONE,
        };
        let payload = vec![0x5au8; payload_bytes];
        // One length-prefixed request, as the client library writes it, then the window.
        let mut request = Vec::new();
        append_frame(&mut request, &header, &payload)?;
        let request_bytes = request.len();
        debug_assert!(request_bytes > LENGTH_PREFIX_BYTES);
        let window = request.repeat(WINDOW_REQUESTS);

        let socket = bind_client(SocketAddr::from(([0, 0, 0, 0], 0)))?;
        let mut local = socket.local_addr()?;
        local.set_ip(addr.ip());
        let rx = rx_batch(&socket);
        let tx = SendBatch::new(BATCH_DATAGRAMS, gso_supported(&socket));
        // The client library's own settings; the certificate is not checked (a benchmark).
        let mut quic = ClientConfig::new(Verify::Insecure).quiche_config()?;
        let scid = new_cid(0);
        let scid = quiche::ConnectionId::from_ref(&scid);
        let conn = quiche::connect(Some("localhost"), &scid, local, addr, &mut quic)?;
        let mut client = BareClient {
            conn,
            socket,
            local,
            rx,
            tx,
            window,
            request_bytes,
            chunk: vec![0u8; CHUNK_BYTES],
            sent: 0,
            received: 0,
            offset: 0,
        };
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        while !client.conn.is_established() {
            if Instant::now() > deadline || client.conn.is_closed() {
                bail!(
                    "handshake with {addr} failed: {:?}",
                    client.conn.peer_error()
                );
            }
            client.poll();
            client.timers(Instant::now());
        }
        Ok(client)
    }

    /// Writes requests while fewer than `in_flight_max` are unanswered, moves datagrams
    /// both ways and reads replies.
    fn poll_with(&mut self, in_flight_max: usize) {
        let limit = (in_flight_max * self.request_bytes) as u64;
        // Replies never outnumber requests from an echo; saturate in case a server sends
        // more (an error frame).
        while self.sent.saturating_sub(self.received) < limit {
            let room = (limit - self.sent.saturating_sub(self.received)) as usize;
            let until = (self.offset + room).min(self.window.len());
            match self
                .conn
                .stream_send(FRAME_STREAM_ID, &self.window[self.offset..until], false)
            {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.sent += n as u64;
                    self.offset = (self.offset + n) % self.window.len();
                }
            }
        }
        self.poll();
    }

    fn poll(&mut self) {
        transmit(&mut self.conn, &mut self.tx, &self.socket);
        receive(&mut self.conn, &mut self.rx, &self.socket, self.local);
        while let Ok((len, _)) = self.conn.stream_recv(FRAME_STREAM_ID, &mut self.chunk) {
            self.received += len as u64;
        }
    }

    fn timers(&mut self, now: Instant) {
        if self.conn.timeout_instant().is_some_and(|at| at <= now) {
            self.conn.on_timeout();
        }
    }

    fn check_open(&self) -> anyhow::Result<()> {
        if self.conn.is_closed() {
            bail!("connection closed: {:?}", self.conn.peer_error());
        }
        Ok(())
    }

    /// One request in flight at a time for `seconds`; the round trips after warm-up.
    fn closed_loop(&mut self, seconds: f64) -> anyhow::Result<Recorder> {
        let mut recorder = Recorder::new();
        let start = Instant::now();
        let measure_from = start + Duration::from_secs_f64(seconds / 10.0).min(WARMUP_MAX);
        let end = start + Duration::from_secs_f64(seconds);
        loop {
            let sent_at = Instant::now();
            if sent_at >= end {
                return Ok(recorder);
            }
            let want = self.received + self.request_bytes as u64;
            let mut polls = 0u64;
            while self.received < want {
                self.poll_with(1);
                polls += 1;
                if polls.is_multiple_of(POLLS_PER_CLOCK_CHECK) {
                    let now = Instant::now();
                    self.timers(now);
                    self.check_open()?;
                    if now > end + REPLY_TIMEOUT {
                        bail!("no reply within {REPLY_TIMEOUT:?}");
                    }
                }
            }
            // One request in flight: its reply must be exactly as long (an echo), or the
            // flood's count of replies from bytes would be wrong.
            if self.received != want {
                bail!(
                    "a reply of {} bytes to a request of {} bytes",
                    self.received + self.request_bytes as u64 - want,
                    self.request_bytes
                );
            }
            if sent_at >= measure_from {
                recorder.record_between(sent_at, Instant::now());
            }
        }
    }

    /// A window of requests in flight for `seconds`: (replies counted, seconds counted,
    /// packets received while counting).
    fn flood(&mut self, seconds: f64) -> anyhow::Result<(u64, f64, usize)> {
        let start = Instant::now();
        let measure_from = start + Duration::from_secs_f64(seconds / 10.0).min(WARMUP_MAX);
        let end = start + Duration::from_secs_f64(seconds);
        let mut counted_from: Option<(Instant, u64, usize)> = None;
        let mut polls = 0u64;
        loop {
            self.poll_with(WINDOW_REQUESTS);
            polls += 1;
            if !polls.is_multiple_of(POLLS_PER_CLOCK_CHECK) {
                continue;
            }
            let now = Instant::now();
            self.timers(now);
            self.check_open()?;
            if counted_from.is_none() && now >= measure_from {
                counted_from = Some((now, self.received, self.conn.stats().recv));
            }
            if now >= end {
                let (since, base, packets_base) = counted_from.unwrap_or((start, 0, 0));
                let replies = (self.received - base) / self.request_bytes as u64;
                let packets = self.conn.stats().recv - packets_base;
                return Ok((replies, now.duration_since(since).as_secs_f64(), packets));
            }
        }
    }

    fn close(&mut self) {
        let _ = self.conn.close(true, 0, b"done");
        transmit(&mut self.conn, &mut self.tx, &self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_serial as serial;

    /// Both workloads against the bare server; no timing assertions (the machine is
    /// shared).
    #[test]
    fn the_bare_pair_reports_replies_and_round_trips() {
        let _turn = serial();
        let result = run(0, 1, 32, 0.3).expect("the bare pair runs");
        assert_eq!(
            (result.suite.as_str(), result.system.as_str()),
            ("remote", SYSTEM_QUICHE_BARE)
        );
        assert!(
            result.messages > 0 && result.throughput_msgs_per_s > 0.0,
            "{result:?}"
        );
        assert!(result.latency_ns.p50 > 0, "{result:?}");
    }

    /// Datagrams that are not QUIC, or truncated Initials, are ignored until a real client
    /// comes: the server neither fails nor accepts them as its one connection.
    #[test]
    fn the_bare_server_ignores_garbage_before_its_client() {
        let _turn = serial();
        let server = BareServer::start(0, 0, Duration::from_secs(30)).expect("server starts");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        // A long-header Initial's first byte, then too little to parse; empty; random.
        for garbage in [&[0xc0u8, 0, 0, 0, 1][..], &[], &[0x5a; 1400]] {
            sender.send_to(garbage, server.addr).expect("send");
        }
        let run = run_client(1, server.addr, 32, 0.2).expect("a real client is then served");
        assert!(run.replies > 0, "{run:?}");
        server.stop();
        server.join().expect("the server ends cleanly");
    }

    /// The bare client's requests are real frames: the node's echo agent answers each
    /// with a reply of the same length, so reply bytes count replies.
    #[test]
    fn the_bare_client_is_answered_by_a_real_node() {
        let _turn = serial();
        let node = dataplane::bench::remote::start_server(0).expect("node starts");
        let run = run_client(1, node.addr, 32, 0.3).expect("the bare client runs against the node");
        assert!(
            run.replies > 0 && run.seconds > 0.0 && run.packets_in > 0,
            "{run:?}"
        );
        assert!(run.latency.latency_ns().p50 > 0);
    }
}
