//! The peer baseline of the `remote` suite: QUIC with quinn over tokio, what a user would
//! pick instead of dataplane's quiche-based edge.
//!
//! **Wire format**, both directions of one bidirectional stream per connection: a `u32`
//! little-endian length, then exactly that many bytes of a `dataplane_frame` frame.
//!
//! **Server** ([`spawn_server`]): one thread pinned to a CPU running a tokio current-thread
//! runtime and one quinn endpoint (ALPN `dataplane/1`, a self-signed certificate made by
//! rcgen at start). Per connection it accepts one stream and does what the node's echo agent
//! does: every frame is copied into a [`FRAME_ALIGN`]-aligned buffer and checked with
//! [`dataplane_frame::validate`] (bytes from the network), and every frame that is not a
//! reply gets `header.reply_to(Performative::Inform)` with the same payload. All replies made
//! from one read go out in one `write_all`.
//!
//! **Client** ([`run`]): one thread pinned to a CPU running a tokio current-thread runtime,
//! N connections with one stream each. Request `i` of a connection carries `i` in
//! `correlation_id`; replies come back in order and are checked against it.
//! - closed loop (no rate): one request in flight per connection; latency = reply read −
//!   request written.
//! - open loop (rate R msgs/s in total): request `i` of connection `k` is request `i·N + k`
//!   of one [`OpenLoopSchedule`] at R, so the connections interleave. The sender busy-polls
//!   (`yield_now`: tokio's timer has 1 ms granularity), writes every request that is due in
//!   one `write_all`, never skips one, and then yields; latency = reply read − *intended*
//!   send time, so a stall is charged to every request it delays (no coordinated omission).
//!
//! Latency is a round trip. The first tenth of the run (at most 200 ms) is warm-up: requests
//! due (or sent) then are not recorded, as in `dataplane::bench::native`. Throughput =
//! recorded replies / (last recorded reply − end of warm-up): the offered rate while the
//! server keeps up, the server's capacity beyond.
//!
//! The client does **not** verify the server's certificate: [`AcceptAnyCertificate`] accepts
//! any certificate (it still checks the handshake signatures), so the client can load a
//! server on another machine without sharing files. A benchmark shortcut, nothing more.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _};
use dataplane::bench::report::{OpenLoopSchedule, Recorder};
use dataplane::bench::BenchResult;
use dataplane_frame::{
    encode_into, encoded_len, validate, AgentId, ArchivedFrame, Flags, Header, Performative,
    Priority, FRAME_ALIGN, FRAME_BYTES_MAX, PAYLOAD_BYTES_MAX,
};
use quinn::{ConnectionError, ReadError, WriteError};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

/// ALPN protocol both sides require.
pub const ALPN: &[u8] = b"dataplane/1";
/// Suite name in the report.
pub const SUITE_REMOTE: &str = "remote";
/// System name in the report.
pub const SYSTEM_QUINN: &str = "quinn";
/// Most connections one run opens.
pub const CONNECTIONS_MAX: usize = 1024;
/// Bytes of the length prefix before every frame.
const LENGTH_PREFIX_BYTES: usize = 4;
/// Initial size of a stream's read buffer; it grows (to one maximal frame) only for frames
/// that do not fit.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Requests an open-loop sender writes at most per batch: after a stall, the backlog goes out
/// in several writes instead of one unbounded buffer.
const SEND_BATCH_REQUESTS_MAX: usize = 1024;
/// Warm-up cap (the warm-up is a tenth of the run, at most this).
const WARMUP_MAX: Duration = Duration::from_millis(200);
/// Time a run may take beyond its duration before it is declared hung.
const WORKLOAD_GRACE: Duration = Duration::from_secs(20);
/// Name in the self-signed certificate and in the client's connect call.
const SERVER_NAME: &str = "localhost";
/// `SO_RCVBUF` and `SO_SNDBUF` both sides ask for (Linux caps them at `net.core.rmem_max` /
/// `wmem_max`, 4 MiB here). The 208 KiB default holds only a few hundred small datagrams,
/// about 3 ms of traffic at 100k packets/s: a server thread descheduled for longer drops
/// packets and quinn's loss recovery turns that into millisecond tails (measured: 24 % of
/// the client's packets lost at 200k requests/s).
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(READ_BUFFER_BYTES > LENGTH_PREFIX_BYTES);

/// What [`run`] does.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Server to load; `None` starts one in this process with [`spawn_server`].
    pub server_addr: Option<SocketAddr>,
    /// CPU of the in-process server thread (unused with `server_addr`). Default 0.
    pub server_cpu: usize,
    /// CPU of the client thread. Default 1.
    pub client_cpu: usize,
    /// Connections, one stream each. Default 1.
    pub connections: usize,
    /// Total open-loop rate in requests per second over all connections; `None` is closed
    /// loop with one request in flight per connection. Default `None`.
    pub rate_msgs_per_s: Option<u64>,
    /// Seconds during which requests are sent (warm-up included). Default 2.
    pub seconds: f64,
    /// Payload bytes per request and reply. Default 32.
    pub payload_bytes: usize,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            server_addr: None,
            server_cpu: 0,
            client_cpu: 1,
            connections: 1,
            rate_msgs_per_s: None,
            seconds: 2.0,
            payload_bytes: 32,
        }
    }
}

/// A running in-process server; dropping it (or [`ServerHandle::stop`]) closes the endpoint
/// and joins the thread.
#[derive(Debug)]
pub struct ServerHandle {
    endpoint: quinn::Endpoint,
    cert_der: CertificateDer<'static>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl ServerHandle {
    /// The server's self-signed certificate (DER), for a client that wants to trust it.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Closes the endpoint, waits for the server thread and returns its error, if any.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        self.endpoint.close(0u32.into(), b"server stopped");
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow!("the quinn server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Starts the echo server on `127.0.0.1` (a free port) on a thread pinned to `cpu`.
pub fn spawn_server(cpu: usize) -> anyhow::Result<(SocketAddr, ServerHandle)> {
    spawn_server_on(cpu, (Ipv4Addr::LOCALHOST, 0).into())
}

/// Starts the echo server on `bind_addr` (e.g. `0.0.0.0:4433` for a remote client) on a
/// thread pinned to `cpu`, and returns once it listens.
pub fn spawn_server_on(
    cpu: usize,
    bind_addr: SocketAddr,
) -> anyhow::Result<(SocketAddr, ServerHandle)> {
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
        .context("generating the self-signed certificate")?;
    let cert_der = certified.cert.der().clone();
    let key_der = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let config = server_config(cert_der.clone(), key_der)?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("quinn-server".into())
        .spawn(move || serve(cpu, bind_addr, config, ready_tx))
        .context("spawning the quinn server thread")?;
    let Ok(endpoint) = ready_rx.recv() else {
        // The thread ended before it listened; its result says why.
        let result = thread
            .join()
            .map_err(|_| anyhow!("the quinn server thread panicked"))?;
        return Err(result
            .err()
            .unwrap_or_else(|| anyhow!("the quinn server ended before it listened")));
    };
    let handle = ServerHandle {
        endpoint,
        cert_der,
        thread: Some(thread),
    };
    let addr = handle
        .endpoint
        .local_addr()
        .context("reading the server address")?;
    Ok((addr, handle))
}

/// Runs one benchmark against a server (started here unless `opts.server_addr` is set) and
/// reports it as suite `remote`, system `quinn`, 1 shard (the server's one thread).
pub fn run(opts: &RemoteOptions) -> anyhow::Result<BenchResult> {
    ensure!(
        (1..=CONNECTIONS_MAX).contains(&opts.connections),
        "connections must be 1..={CONNECTIONS_MAX}, not {}",
        opts.connections
    );
    ensure!(
        opts.payload_bytes <= PAYLOAD_BYTES_MAX,
        "payload of {} bytes exceeds {PAYLOAD_BYTES_MAX}",
        opts.payload_bytes
    );
    ensure!(
        opts.seconds.is_finite() && opts.seconds > 0.0 && opts.seconds < 3600.0,
        "seconds must be in (0, 3600), not {}",
        opts.seconds
    );
    ensure!(opts.rate_msgs_per_s != Some(0), "rate must be positive");
    let (server_addr, server) = match opts.server_addr {
        Some(addr) => (addr, None),
        None => {
            let (addr, handle) = spawn_server(opts.server_cpu)?;
            (addr, Some(handle))
        }
    };
    let client_opts = opts.clone();
    let client = std::thread::Builder::new()
        .name("quinn-client".into())
        .spawn(move || run_client(&client_opts, server_addr))
        .context("spawning the quinn client thread")?;
    let result = client
        .join()
        .map_err(|_| anyhow!("the quinn client thread panicked"))?;
    if let Some(server) = server {
        server.stop().context("stopping the quinn server")?;
    }
    result
}

// --- server ----------------------------------------------------------------------------

fn server_config(
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
) -> anyhow::Result<quinn::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with ring")?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key.into())
        .context("installing the server certificate")?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(crypto).context("QUIC server crypto")?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
}

/// The server thread: listens, hands the endpoint to `ready`, serves until it is closed.
fn serve(
    cpu: usize,
    bind_addr: SocketAddr,
    config: quinn::ServerConfig,
    ready: std::sync::mpsc::Sender<quinn::Endpoint>,
) -> anyhow::Result<()> {
    pin_current_thread(cpu)?;
    current_thread_runtime()?.block_on(async move {
        let endpoint = endpoint(bind_addr, Some(config))
            .with_context(|| format!("binding the quinn server to {bind_addr}"))?;
        if ready.send(endpoint.clone()).is_err() {
            return Ok(()); // spawn_server_on gave up waiting: nobody to serve.
        }
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let peer = incoming.remote_address();
                if let Err(error) = serve_connection(incoming).await {
                    eprintln!("quinn server: connection from {peer}: {error:#}");
                }
            });
        }
        endpoint.wait_idle().await;
        Ok(())
    })
}

/// Echoes the frames of the connection's one stream until the client finishes or closes.
async fn serve_connection(incoming: quinn::Incoming) -> anyhow::Result<()> {
    let connection = incoming.await.context("handshake")?;
    let (mut send, mut recv) = match connection.accept_bi().await {
        Ok(streams) => streams,
        Err(error) if is_normal_close(&error) => return Ok(()),
        Err(error) => return Err(error).context("accepting the stream"),
    };
    let mut reader = FrameReader::new();
    let mut reply = AlignedBuffer::default();
    let mut replies = Vec::new();
    loop {
        match reader.fill(&mut recv).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(ReadError::ConnectionLost(error)) if is_normal_close(&error) => return Ok(()),
            Err(error) => return Err(error).context("reading requests"),
        }
        while let Some(request) = reader.next_frame()? {
            if request.flags().contains(Flags::REPLY) {
                continue; // The echo agent ignores replies.
            }
            let header = request.header().reply_to(Performative::Inform);
            let payload = request.payload();
            let out = reply.slice_mut(encoded_len(payload.len()));
            let frame_bytes = encode_into(&header, payload, out).context("encoding a reply")?;
            push_frame(&mut replies, &out[..frame_bytes]);
        }
        if !replies.is_empty() {
            match send.write_all(&replies).await {
                Ok(()) => replies.clear(),
                Err(WriteError::ConnectionLost(error)) if is_normal_close(&error) => return Ok(()),
                Err(error) => return Err(error).context("writing replies"),
            }
        }
    }
    ensure!(reader.is_empty(), "the request stream ended inside a frame");
    send.finish().context("finishing the reply stream")?;
    // Dropping the last handle would close the connection at once and could lose the last
    // replies: wait for the client to close it.
    connection.closed().await;
    Ok(())
}

fn is_normal_close(error: &ConnectionError) -> bool {
    matches!(
        error,
        ConnectionError::ApplicationClosed(_) | ConnectionError::LocallyClosed
    )
}

// --- client ----------------------------------------------------------------------------

/// What all connections of one run share.
#[derive(Debug, Clone, Copy)]
struct Plan {
    connections: u64,
    /// Replies to requests due (open loop) or sent (closed loop) before this are not recorded.
    measure_from: Instant,
    /// No request is due or sent from here on.
    end: Instant,
    /// Open loop only.
    schedule: Option<OpenLoopSchedule>,
}

impl Plan {
    /// Intended send time of request `sequence` of connection `connection_index`.
    fn due(&self, schedule: &OpenLoopSchedule, connection_index: u64, sequence: u64) -> Instant {
        schedule.due(sequence * self.connections + connection_index)
    }
}

/// One connection's share of the result.
#[derive(Debug, Default)]
struct ConnectionReport {
    recorder: Recorder,
    replies_recorded: u64,
    last_reply: Option<Instant>,
}

impl ConnectionReport {
    /// Records the reply to a request meant for `since`, unless that was during warm-up.
    fn record(&mut self, since: Instant, received_at: Instant, measure_from: Instant) {
        if since >= measure_from {
            self.recorder.record_between(since, received_at);
            self.replies_recorded += 1;
            self.last_reply = Some(received_at);
        }
    }
}

/// The client thread: pins itself, connects, runs the workload within its time limit.
fn run_client(opts: &RemoteOptions, server_addr: SocketAddr) -> anyhow::Result<BenchResult> {
    pin_current_thread(opts.client_cpu)?;
    let limit = Duration::from_secs_f64(opts.seconds) + WORKLOAD_GRACE;
    current_thread_runtime()?.block_on(async {
        tokio::time::timeout(limit, load(opts, server_addr))
            .await
            .map_err(|_| anyhow!("the run did not finish within {limit:?}"))?
    })
}

async fn load(opts: &RemoteOptions, server_addr: SocketAddr) -> anyhow::Result<BenchResult> {
    let bind_addr: SocketAddr = if server_addr.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let mut endpoint = endpoint(bind_addr, None).context("binding the client socket")?;
    endpoint.set_default_client_config(client_config()?);
    let mut connections = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        let connection = endpoint
            .connect(server_addr, SERVER_NAME)
            .context("starting a connection")?
            .await
            .with_context(|| format!("connecting to {server_addr}"))?;
        let (send, recv) = connection.open_bi().await.context("opening the stream")?;
        connections.push((connection, send, recv));
    }

    let start = Instant::now();
    let duration = Duration::from_secs_f64(opts.seconds);
    let plan = Plan {
        connections: opts.connections as u64,
        measure_from: start + (duration / 10).min(WARMUP_MAX),
        end: start + duration,
        schedule: opts
            .rate_msgs_per_s
            .map(|rate| OpenLoopSchedule::new(start, rate)),
    };
    let payload: Arc<[u8]> = vec![0xA5; opts.payload_bytes].into();
    let mut tasks = tokio::task::JoinSet::new();
    let mut handles = Vec::with_capacity(connections.len());
    for (index, (connection, send, recv)) in (0u64..).zip(connections) {
        tasks.spawn(drive_connection(
            plan,
            index,
            Arc::clone(&payload),
            send,
            recv,
        ));
        handles.push(connection);
    }
    let mut recorder = Recorder::new();
    let mut messages = 0;
    let mut last_reply = plan.measure_from;
    while let Some(joined) = tasks.join_next().await {
        let report = joined.context("a connection task panicked")??;
        recorder.merge(&report.recorder);
        messages += report.replies_recorded;
        last_reply = last_reply.max(report.last_reply.unwrap_or(last_reply));
    }
    for connection in &handles {
        connection.close(0u32.into(), b"done");
    }
    endpoint.wait_idle().await;
    let seconds = last_reply.duration_since(plan.measure_from).as_secs_f64();
    Ok(BenchResult::new(
        SUITE_REMOTE,
        SYSTEM_QUINN,
        1,
        messages,
        seconds,
        recorder.latency_ns(),
    ))
}

/// Runs one connection's workload to the end of its reply stream.
async fn drive_connection(
    plan: Plan,
    index: u64,
    payload: Arc<[u8]>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> anyhow::Result<ConnectionReport> {
    let mut encoder = RequestEncoder::new(index);
    let mut reader = FrameReader::new();
    let Some(schedule) = plan.schedule else {
        return closed_loop(plan, &payload, &mut encoder, &mut reader, send, recv).await;
    };
    // Open loop: the sender runs as its own task so that replies are read while it waits.
    let sender_payload = Arc::clone(&payload);
    let sender = tokio::spawn(async move {
        let sent = open_loop_send(
            plan,
            schedule,
            index,
            &sender_payload,
            &mut encoder,
            &mut send,
        )
        .await;
        send.finish().context("finishing the request stream")?;
        sent
    });
    let mut report = ConnectionReport::default();
    let mut expected = 0;
    loop {
        let more = reader.fill(&mut recv).await.context("reading replies")?;
        let received_at = Instant::now(); // Everything this read returned arrived by now.
        while let Some(reply) = reader.next_frame()? {
            check_reply(reply, expected, payload.len())?;
            report.record(
                plan.due(&schedule, index, expected),
                received_at,
                plan.measure_from,
            );
            expected += 1;
        }
        if !more {
            break;
        }
    }
    ensure!(reader.is_empty(), "the reply stream ended inside a frame");
    let sent = sender.await.context("the sender task panicked")??;
    ensure!(
        expected == sent,
        "{sent} requests sent, {expected} replies received"
    );
    Ok(report)
}

/// Writes every request that is due, in one batch, then yields; until the schedule ends.
/// Returns the number of requests sent.
async fn open_loop_send(
    plan: Plan,
    schedule: OpenLoopSchedule,
    index: u64,
    payload: &[u8],
    encoder: &mut RequestEncoder,
    send: &mut quinn::SendStream,
) -> anyhow::Result<u64> {
    let mut sequence = 0;
    loop {
        let now = Instant::now();
        let mut due = plan.due(&schedule, index, sequence);
        if due >= plan.end {
            return Ok(sequence);
        }
        while due <= now && due < plan.end && encoder.requests < SEND_BATCH_REQUESTS_MAX {
            encoder.push(sequence, payload)?;
            sequence += 1;
            due = plan.due(&schedule, index, sequence);
        }
        encoder.write(send).await?;
        tokio::task::yield_now().await;
    }
}

/// One request in flight: write, read its reply, record, repeat until the end.
async fn closed_loop(
    plan: Plan,
    payload: &[u8],
    encoder: &mut RequestEncoder,
    reader: &mut FrameReader,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> anyhow::Result<ConnectionReport> {
    let mut report = ConnectionReport::default();
    let mut sequence = 0;
    loop {
        let sent_at = Instant::now();
        if sent_at >= plan.end {
            break;
        }
        encoder.push(sequence, payload)?;
        encoder.write(&mut send).await?;
        let received_at = loop {
            if let Some(reply) = reader.next_frame()? {
                check_reply(reply, sequence, payload.len())?;
                break Instant::now();
            }
            if !reader.fill(&mut recv).await.context("reading replies")? {
                bail!("the server ended the reply stream before reply {sequence}");
            }
        };
        report.record(sent_at, received_at, plan.measure_from);
        sequence += 1;
    }
    send.finish().context("finishing the request stream")?;
    let more = reader.fill(&mut recv).await.context("reading replies")?;
    ensure!(
        !more && reader.is_empty(),
        "unexpected bytes after the last reply"
    );
    Ok(report)
}

/// The reply must answer request `sequence` (replies come back in order) with an echo.
fn check_reply(reply: &ArchivedFrame, sequence: u64, payload_bytes: usize) -> anyhow::Result<()> {
    ensure!(
        reply.correlation_id() == sequence,
        "reply to request {} while {sequence} was next",
        reply.correlation_id()
    );
    ensure!(
        reply.flags().contains(Flags::REPLY)
            && reply.performative() == Performative::Inform
            && reply.payload().len() == payload_bytes,
        "reply {sequence} is not an inform echo of {payload_bytes} bytes: {reply:?}"
    );
    Ok(())
}

/// Encodes length-prefixed requests of one connection into a batch.
struct RequestEncoder {
    header: Header,
    frame: AlignedBuffer,
    batch: Vec<u8>,
    requests: usize,
}

impl RequestEncoder {
    fn new(connection_index: u64) -> Self {
        Self {
            header: Header {
                to: AgentId::from_name("echo"),
                from: AgentId::from_name("quinn-client"),
                conversation_id: connection_index,
                correlation_id: 0,
                performative: Performative::Request,
                priority: Priority::Normal,
                flags: Flags::NONE,
            },
            frame: AlignedBuffer::default(),
            batch: Vec::new(),
            requests: 0,
        }
    }

    fn push(&mut self, sequence: u64, payload: &[u8]) -> anyhow::Result<()> {
        self.header.correlation_id = sequence;
        let out = self.frame.slice_mut(encoded_len(payload.len()));
        let frame_bytes = encode_into(&self.header, payload, out).context("encoding a request")?;
        push_frame(&mut self.batch, &out[..frame_bytes]);
        self.requests += 1;
        Ok(())
    }

    /// Writes the batch (if any) in one `write_all` and empties it.
    async fn write(&mut self, send: &mut quinn::SendStream) -> anyhow::Result<()> {
        if self.requests > 0 {
            send.write_all(&self.batch)
                .await
                .context("writing requests")?;
            self.batch.clear();
            self.requests = 0;
        }
        Ok(())
    }
}

fn client_config() -> anyhow::Result<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with ring")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(crypto).context("QUIC client crypto")?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// Accepts any server certificate but checks the handshake signatures with it: the benchmark
/// client trusts whatever server it is pointed at. Never use outside benchmarks.
#[derive(Debug)]
pub struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// --- both sides ------------------------------------------------------------------------

/// Splits a stream into length-prefixed frames and validates each one.
struct FrameReader {
    /// Bytes `start..end` are read and not yet consumed.
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    /// Where a frame is copied to be validated (validation needs [`FRAME_ALIGN`]).
    frame: AlignedBuffer,
}

impl FrameReader {
    fn new() -> Self {
        Self {
            buffer: vec![0; READ_BUFFER_BYTES],
            start: 0,
            end: 0,
            frame: AlignedBuffer::default(),
        }
    }

    /// Whether no partial frame is pending.
    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Reads whatever the stream has ready (at least one byte); `false` at its end.
    /// Call only after [`FrameReader::next_frame`] returned `None`.
    async fn fill(&mut self, recv: &mut quinn::RecvStream) -> Result<bool, ReadError> {
        self.buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.end == self.buffer.len() {
            // One incomplete frame fills the buffer; next_frame checked its length against
            // FRAME_BYTES_MAX, so this stops at twice that.
            self.buffer.resize(self.buffer.len() * 2, 0);
        }
        match recv.read(&mut self.buffer[self.end..]).await? {
            Some(bytes) => {
                self.end += bytes;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The next complete frame, validated; `None` when more bytes are needed.
    fn next_frame(&mut self) -> anyhow::Result<Option<&ArchivedFrame>> {
        let unread = &self.buffer[self.start..self.end];
        let Some(prefix) = unread.first_chunk::<LENGTH_PREFIX_BYTES>() else {
            return Ok(None);
        };
        let frame_bytes = u32::from_le_bytes(*prefix) as usize;
        ensure!(
            frame_bytes <= FRAME_BYTES_MAX,
            "length prefix {frame_bytes} exceeds FRAME_BYTES_MAX ({FRAME_BYTES_MAX})"
        );
        let Some(bytes) = unread.get(LENGTH_PREFIX_BYTES..LENGTH_PREFIX_BYTES + frame_bytes) else {
            return Ok(None);
        };
        let frame = self.frame.slice_mut(frame_bytes);
        frame.copy_from_slice(bytes);
        self.start += LENGTH_PREFIX_BYTES + frame_bytes;
        validate(frame)
            .map(Some)
            .with_context(|| format!("invalid frame of {frame_bytes} bytes"))
    }
}

/// A reusable byte buffer that hands out slices starting at a multiple of [`FRAME_ALIGN`].
#[derive(Debug, Default)]
struct AlignedBuffer {
    bytes: Vec<u8>,
}

impl AlignedBuffer {
    fn slice_mut(&mut self, len: usize) -> &mut [u8] {
        if self.bytes.len() < len + FRAME_ALIGN {
            self.bytes = vec![0; (len + FRAME_ALIGN).next_power_of_two()];
        }
        let misalignment = self.bytes.as_ptr().addr() % FRAME_ALIGN;
        let offset = (FRAME_ALIGN - misalignment) % FRAME_ALIGN;
        &mut self.bytes[offset..offset + len]
    }
}

/// Appends the length prefix and `frame` (at most [`FRAME_BYTES_MAX`] bytes: it comes from
/// `encode_into`, so the length fits the `u32`).
fn push_frame(out: &mut Vec<u8>, frame: &[u8]) {
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(frame);
}

/// A quinn endpoint on a UDP socket with [`SOCKET_BUFFER_BYTES`] buffers; a server when
/// `server_config` is given. Call inside the tokio runtime that will drive it.
fn endpoint(
    bind_addr: SocketAddr,
    server_config: Option<quinn::ServerConfig>,
) -> anyhow::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(bind_addr),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    socket.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    socket.bind(&bind_addr.into())?;
    let runtime = Arc::new(quinn::TokioRuntime);
    let config = quinn::EndpointConfig::default();
    Ok(quinn::Endpoint::new(
        config,
        server_config,
        socket.into(),
        runtime,
    )?)
}

fn pin_current_thread(cpu: usize) -> anyhow::Result<()> {
    ensure!(
        core_affinity::set_for_current(core_affinity::CoreId { id: cpu }),
        "cannot pin the thread to CPU {cpu}"
    );
    Ok(())
}

fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(correlation_id: u64, payload: &[u8]) -> Vec<u8> {
        let mut encoder = RequestEncoder::new(0);
        encoder.push(correlation_id, payload).expect("encodes");
        encoder.batch
    }

    #[test]
    fn reader_reassembles_frames_split_across_reads() {
        let mut stream = encoded(7, b"first");
        stream.extend(encoded(8, &[0xA5; 300]));
        let mut reader = FrameReader::new();
        let mut ids = Vec::new();
        // Feed the bytes in 5-byte reads, as a stream may deliver them.
        for piece in stream.chunks(5) {
            reader.buffer[reader.end..reader.end + piece.len()].copy_from_slice(piece);
            reader.end += piece.len();
            while let Some(frame) = reader.next_frame().expect("valid frames") {
                ids.push((frame.correlation_id(), frame.payload().len()));
            }
        }
        assert_eq!(ids, [(7, 5), (8, 300)]);
        assert!(reader.is_empty());
    }

    #[test]
    fn reader_rejects_oversized_prefix_and_invalid_frame() {
        let mut reader = FrameReader::new();
        reader.buffer[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        reader.end = 4;
        assert!(reader.next_frame().is_err());

        let mut reader = FrameReader::new();
        let mut bytes = encoded(1, b"x");
        let version_index = bytes.len() - 8;
        bytes[version_index] = 99;
        reader.buffer[..bytes.len()].copy_from_slice(&bytes);
        reader.end = bytes.len();
        let error = reader.next_frame().expect_err("bad version is rejected");
        assert!(format!("{error:#}").contains("invalid frame"), "{error:#}");
    }

    #[test]
    fn aligned_buffer_slices_are_aligned() {
        let mut buffer = AlignedBuffer::default();
        for len in [0, 1, 48, 1000, 70_000] {
            let slice = buffer.slice_mut(len);
            assert_eq!(slice.len(), len);
            assert_eq!(slice.as_ptr().addr() % FRAME_ALIGN, 0);
        }
    }

    /// Closed and open loop against the in-process server; no timing assertions (the
    /// machine is shared).
    #[test]
    fn runs_report_every_reply() {
        let _turn = crate::tests_serial();
        for rate_msgs_per_s in [None, Some(20_000)] {
            let opts = RemoteOptions {
                connections: 2,
                rate_msgs_per_s,
                seconds: 0.3,
                ..RemoteOptions::default()
            };
            let result = run(&opts).expect("the quinn baseline runs");
            assert_eq!(
                (result.suite.as_str(), result.system.as_str()),
                ("remote", "quinn")
            );
            assert!(
                result.messages > 0 && result.throughput_msgs_per_s > 0.0,
                "{result:?}"
            );
            assert!(result.latency_ns.p50 > 0, "{result:?}");
        }
    }
}
