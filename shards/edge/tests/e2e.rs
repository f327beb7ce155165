//! End-to-end tests of the QUIC edge over loopback: a real node (pinned shards, the edge
//! polled by each shard) and real clients (`dataplane-client`).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dataplane_client::{Client, ClientConfig, ClientConnection, ClientError, Verify};
use dataplane_edge::server::{edge_agent_id, io_factory, EdgeConfig, EdgeMetrics};
use dataplane_edge::tls::ensure_dev_cert;
use dataplane_edge::{ErrorCode, Fingerprint};
use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use dataplane_runtime::{IdlePolicy, Node, RuntimeConfig};
use dataplane_shard::{id_on_shard, Agent, AgentError, Context, Message};

mod common;

/// Nodes pin shards to cores 0 and 1: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Echo;

impl Agent for Echo {
    fn on_message(&mut self, m: &Message<'_>, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        if !m.is_reply() {
            ctx.reply(Performative::Inform, m.payload)
                .map_err(|error| AgentError::Failed(error.to_string().into()))?;
        }
        Ok(())
    }
}

/// Answers a request carrying `n` (u32 le) with `n` replies of 2,000 bytes: a server that
/// pushes more than a client reads.
struct Pusher;

impl Agent for Pusher {
    fn on_message(&mut self, m: &Message<'_>, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        let Ok(count) = <[u8; 4]>::try_from(m.payload).map(u32::from_le_bytes) else {
            return Ok(());
        };
        for _ in 0..count {
            // A refusal would be back-pressure; a connection sink never refuses.
            ctx.reply(Performative::Inform, &[7u8; 2000])
                .map_err(|error| AgentError::Failed(error.to_string().into()))?;
        }
        Ok(())
    }
}

/// A pusher agent id on each shard.
fn pusher_ids(shards: usize) -> Vec<AgentId> {
    (0..shards)
        .map(|shard| id_on_shard(AgentId::from_name("pusher").0, shard, shards))
        .collect()
}

/// An echo agent id on each shard.
fn echo_ids(shards: usize) -> Vec<AgentId> {
    (0..shards)
        .map(|shard| id_on_shard(AgentId::from_name("echo").0, shard, shards))
        .collect()
}

struct TestNode {
    node: Option<Node>,
    addr: SocketAddr,
    metrics: EdgeMetrics,
    fingerprint: Fingerprint,
    dir: PathBuf,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            let _ = node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestNode {
    fn counter(&self, f: impl Fn(&dataplane_edge::server::EdgeCounters) -> u64) -> u64 {
        self.metrics.iter().map(f).sum()
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dataplane-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn free_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr").port()
}

fn start(name: &str, shards: usize, tune: impl FnOnce(&mut EdgeConfig, &Path)) -> TestNode {
    let dir = temp_dir(name);
    let (cert, key, fingerprint, _) = ensure_dev_cert(&dir.join("tls")).expect("dev cert");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut edge = EdgeConfig::new(addr, cert, key);
    edge.frame_bytes_max = 4096;
    tune(&mut edge, &dir);
    let cpus: Vec<usize> = (0..shards).collect();
    let mut runtime = RuntimeConfig::new(cpus, IdlePolicy::Park);
    runtime.shard.frame_bytes_max = 64 * 1024;
    let (factory, metrics) = io_factory(edge, shards);
    let agents = Arc::new(move |shard: usize, shards: usize| {
        vec![
            (echo_ids(shards)[shard], Box::new(Echo) as Box<dyn Agent>),
            (
                pusher_ids(shards)[shard],
                Box::new(Pusher) as Box<dyn Agent>,
            ),
        ]
    });
    let node = Node::start_with_io(runtime, agents, Some(factory)).expect("node starts");
    TestNode {
        node: Some(node),
        addr,
        metrics,
        fingerprint,
        dir,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn pinned(node: &TestNode) -> ClientConfig {
    ClientConfig::new(Verify::Fingerprint(node.fingerprint))
}

#[test]
fn handshake_with_the_generated_certificate_and_echo_on_every_shard() {
    let _serial = serial();
    let node = start("echo", 2, |_, _| {});
    rt().block_on(async {
        let client = Client::connect(node.addr, pinned(&node))
            .await
            .expect("connect");
        assert_eq!(client.server_fingerprint(), Some(node.fingerprint));
        // One echo is on the connection's shard, the other behind the ring.
        for (i, echo) in echo_ids(2).into_iter().enumerate() {
            for round in 0..50 {
                let payload = format!("hello {i} {round}");
                let reply = client
                    .request(echo, Performative::Request, payload.as_bytes())
                    .await
                    .expect("reply");
                assert_eq!(reply.payload, payload.as_bytes());
                assert!(reply.header.flags.contains(Flags::REPLY));
                assert_eq!(reply.header.from, echo);
            }
        }
        // Many in flight at once on one connection.
        let futures: Vec<_> = (0..200u32)
            .map(|i| {
                let client = &client;
                let echo = echo_ids(2)[(i % 2) as usize];
                async move {
                    let reply = client
                        .request(echo, Performative::Request, &i.to_le_bytes())
                        .await
                        .expect("reply");
                    assert_eq!(reply.payload, i.to_le_bytes());
                }
            })
            .collect();
        for future in futures {
            future.await;
        }
    });
    assert!(node.counter(|c| c.frames_in.load(Ordering::Relaxed)) >= 300);
}

#[test]
fn a_ca_file_verifies_the_development_certificate() {
    let _serial = serial();
    let node = start("ca", 1, |_, _| {});
    let ca = node
        .dir
        .join("tls")
        .join(dataplane_edge::tls::DEV_CERT_FILE);
    rt().block_on(async {
        let client = Client::connect(node.addr, ClientConfig::new(Verify::CaFile(ca)))
            .await
            .expect("the self-signed certificate verifies against itself");
        let reply = client
            .request(echo_ids(1)[0], Performative::Request, b"ca")
            .await
            .expect("reply");
        assert_eq!(reply.payload, b"ca");
    });
}

#[test]
fn a_wrong_fingerprint_is_refused() {
    let _serial = serial();
    let node = start("wrongfp", 1, |_, _| {});
    let wrong = Fingerprint([0xab; 32]);
    rt().block_on(async {
        let error = Client::connect(node.addr, ClientConfig::new(Verify::Fingerprint(wrong)))
            .await
            .expect_err("must fail");
        assert!(
            matches!(error, ClientError::FingerprintMismatch { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains(&node.fingerprint.to_string()),
            "{error}"
        );
    });
}

#[test]
fn an_unknown_agent_gets_an_error_naming_it() {
    let _serial = serial();
    let node = start("unknown", 2, |_, _| {});
    rt().block_on(async {
        let client = Client::connect(node.addr, pinned(&node))
            .await
            .expect("connect");
        // One unknown id per shard: answered locally and by the owning shard.
        for shard in 0..2 {
            let ghost = id_on_shard(AgentId::from_name("ghost").0, shard, 2);
            let error = client
                .request(ghost, Performative::Request, b"anyone?")
                .await
                .expect_err("unknown agent");
            match error {
                ClientError::Remote { reason, .. } => {
                    assert!(reason.contains(&ghost.to_string()), "{reason}");
                    assert!(reason.contains("unknown agent"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        // The connection still works.
        let reply = client
            .request(echo_ids(2)[0], Performative::Request, b"still here")
            .await
            .expect("reply");
        assert_eq!(reply.payload, b"still here");
    });
}

/// A client cannot pass a datagram off as forwarded by another shard: addressed to any
/// shard's edge agent, it gets an error and the edge takes nothing from it.
#[test]
fn a_client_cannot_inject_forwarded_datagrams() {
    let _serial = serial();
    let node = start("inject", 2, |_, _| {});
    rt().block_on(async {
        let client = Client::connect(node.addr, pinned(&node))
            .await
            .expect("connect");
        // A well-formed forward: the peer's address and the node's, each as family 4,
        // the IPv4-mapped address and the port; then the datagram (a short-header packet
        // for a made-up connection).
        let mut payload = Vec::new();
        for (ip, port) in [([10, 9, 8, 7], 4433u16), ([127, 0, 0, 1], node.addr.port())] {
            payload.push(4u8);
            payload.extend_from_slice(&std::net::Ipv4Addr::from(ip).to_ipv6_mapped().octets());
            payload.extend_from_slice(&port.to_be_bytes());
        }
        payload.extend_from_slice(&[0x40; 64]);
        for shard in 0..2 {
            let edge = edge_agent_id(shard, 2);
            let error = client
                .request(edge, Performative::Request, &payload)
                .await
                .expect_err("an edge takes forwards only from another edge");
            match error {
                ClientError::Remote { reason, .. } => {
                    assert!(reason.contains("only another shard's edge"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            node.counter(|c| c.datagrams_forwarded_in.load(Ordering::Relaxed)),
            0
        );
        let reply = client
            .request(echo_ids(2)[1], Performative::Request, b"still here")
            .await
            .expect("reply");
        assert_eq!(reply.payload, b"still here");
    });
}

/// A node on the wildcard address answers a client from the address the client wrote
/// to, not from the one the kernel would pick (127.0.0.1 here): a client reaching the
/// host on a second address, a virtual IP, or the far side of asymmetric routes
/// otherwise drops every packet of the handshake. The client's port changes midway, so
/// the forwarded packets carry that address too.
#[test]
fn a_node_on_the_wildcard_address_answers_from_the_address_it_was_reached_at() {
    let _serial = serial();
    const TRIES: usize = 32;
    let node = start("wildcard", 2, |edge, _| {
        edge.listen = SocketAddr::from(([0, 0, 0, 0], edge.listen.port()));
        edge.client_address_changes_max = TRIES + 2;
    });
    let reached = SocketAddr::from(([127, 0, 0, 2], node.addr.port()));
    rt().block_on(async {
        let client = tokio::time::timeout(
            Duration::from_secs(5),
            Client::connect(reached, pinned(&node)),
        )
        .await
        .expect("handshake in time")
        .expect("connect");
        for echo in echo_ids(2) {
            let reply = client
                .request(echo, Performative::Request, b"from .2")
                .await
                .expect("reply");
            assert_eq!(reply.payload, b"from .2");
        }
    });
    // A sans-IO client whose port changes until its packets land on the other shard.
    let mut driver = Driver::connect_to(reached, &pinned(&node));
    assert!(driver.connection.is_established());
    let echo = echo_ids(2)[0];
    // One exchange first: a client may change address only once the handshake is
    // confirmed (RFC 9000, section 9), which its own "established" does not yet mean.
    driver
        .connection
        .queue_frame(&request(echo, u64::MAX), b"settled")
        .expect("queue");
    assert_eq!(driver.frames(1)[0].payload(), b"settled");
    for round in 0..TRIES as u64 {
        driver.rebind();
        driver
            .connection
            .queue_frame(&request(echo, round), b"moved")
            .expect("queue");
        let frames = driver.frames(1);
        assert_eq!(frames[0].payload(), b"moved");
        if node.counter(|c| c.datagrams_forwarded_in.load(Ordering::Relaxed)) > 0 {
            return;
        }
    }
    panic!("no port change landed on the other shard in {TRIES} tries");
}

/// Full-size packets over a path with a 1,500-byte MTU, as on ordinary Ethernet: the
/// edge must neither send datagrams the path cannot carry (a GSO train of them fails as
/// a whole) nor rely on IP fragmentation. Loopback's 64 KiB MTU hides both.
#[test]
fn a_flood_gets_through_a_path_with_an_ethernet_mtu() {
    let _serial = serial();
    common::in_own_network_with_mtu(1500, || {
        let node = start("mtu", 1, |_, _| {});
        let echo = echo_ids(1)[0];
        rt().block_on(async {
            let client = Arc::new(
                Client::connect(node.addr, pinned(&node))
                    .await
                    .expect("connect"),
            );
            // 4,000 requests of 1,000 bytes in flight at once: every packet is full.
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..4000u32 {
                let client = Arc::clone(&client);
                tasks.spawn(async move {
                    let mut payload = vec![(i % 251) as u8; 1000];
                    payload[..4].copy_from_slice(&i.to_le_bytes());
                    let reply = client
                        .request(echo, Performative::Request, &payload)
                        .await
                        .expect("reply");
                    assert_eq!(reply.payload, payload);
                });
            }
            let all = async {
                while let Some(done) = tasks.join_next().await {
                    done.expect("request task");
                }
            };
            tokio::time::timeout(Duration::from_secs(20), all)
                .await
                .expect("every reply within 20 s");
        });
    });
}

/// Drives a sans-IO client over a std socket until `done` or the deadline.
struct Driver {
    socket: UdpSocket,
    connection: ClientConnection,
    buf: Vec<u8>,
}

impl Driver {
    fn connect(node: &TestNode, config: &ClientConfig) -> Driver {
        Driver::connect_to(node.addr, config)
    }

    fn connect_to(addr: SocketAddr, config: &ClientConfig) -> Driver {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(2)))
            .expect("timeout");
        let local = socket.local_addr().expect("addr");
        let connection = ClientConnection::connect(config, local, addr).expect("connect");
        let mut driver = Driver {
            socket,
            connection,
            buf: vec![0; 65536],
        };
        driver.run_until(Duration::from_secs(10), |c| {
            c.is_established() || c.is_closed()
        });
        driver
    }

    fn step(&mut self) {
        while let Some((len, to)) = self.connection.poll_transmit(&mut self.buf) {
            self.socket.send_to(&self.buf[..len], to).expect("send");
        }
        match self.socket.recv_from(&mut self.buf) {
            Ok((len, from)) => {
                let mut datagram = self.buf[..len].to_vec();
                self.connection.handle_datagram(&mut datagram, from);
            }
            Err(_) => {
                if self
                    .connection
                    .timeout()
                    .is_some_and(|at| at <= Instant::now())
                {
                    self.connection.on_timeout();
                }
            }
        }
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut ClientConnection) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(&mut self.connection) {
            assert!(Instant::now() < deadline, "timed out");
            self.step();
        }
    }

    /// Collects `n` frames from the server.
    fn frames(&mut self, n: usize) -> Vec<dataplane_client::ReceivedFrame> {
        let mut frames = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while frames.len() < n {
            assert!(
                Instant::now() < deadline,
                "timed out with {} frames; established {}, error {:?}, queued {}",
                frames.len(),
                self.connection.is_established(),
                self.connection.error(),
                self.connection.queued_bytes()
            );
            self.step();
            while let Some(frame) = self.connection.poll_frame() {
                frames.push(frame);
            }
        }
        frames
    }

    /// Moves to a fresh local port, as a NAT rebinding does: the client's QUIC state is
    /// unchanged, only the address the server sees changes.
    fn rebind(&mut self) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(2)))
            .expect("timeout");
        self.socket = socket;
    }
}

fn request(to: AgentId, correlation_id: u64) -> Header {
    Header {
        to,
        from: AgentId(0),
        conversation_id: correlation_id,
        correlation_id,
        performative: Performative::Request,
        priority: Priority::Normal,
        flags: Flags::NONE,
    }
}

/// A client that gives its frames back (`recycle`) gets each new reply intact in a reused
/// buffer, whether the reply is longer or shorter than the frame the buffer held before.
#[test]
fn recycled_buffers_carry_each_new_reply_intact() {
    let _serial = serial();
    let node = start("recycle", 1, |_, _| {});
    let echo = echo_ids(1)[0];
    let mut driver = Driver::connect(&node, &pinned(&node));
    // Long, short, empty, long again: every size change in both directions.
    let lengths = [300usize, 3, 0, 1000, 17, 1000, 1];
    for round in 0..3u64 {
        for (i, &len) in lengths.iter().enumerate() {
            let correlation = round * 100 + i as u64;
            let payload: Vec<u8> = (0..len).map(|b| (b as u64 + correlation) as u8).collect();
            driver
                .connection
                .queue_frame(&request(echo, correlation), &payload)
                .expect("queue");
            let mut frames = driver.frames(1);
            let frame = frames.pop().expect("one reply");
            assert_eq!(frame.header().correlation_id, correlation);
            assert_eq!(
                frame.payload(),
                payload.as_slice(),
                "round {round}, length {len}"
            );
            driver.connection.recycle(frame);
        }
    }
}

#[test]
fn oversized_and_malformed_frames_get_errors_and_the_stream_goes_on() {
    let _serial = serial();
    let node = start("badframes", 1, |_, _| {});
    let echo = echo_ids(1)[0];
    let mut driver = Driver::connect(&node, &pinned(&node));
    assert!(driver.connection.is_established());
    // 1. A valid request, 2. a frame over the edge's 4096-byte limit, 3. garbage of a
    // valid length, 4. a frame cut short by its prefix (invalid), 5. a valid request.
    driver
        .connection
        .queue_frame(&request(echo, 1), b"first")
        .expect("queue");
    driver
        .connection
        .queue_frame(&request(echo, 2), &vec![7u8; 10_000])
        .expect("queue");
    let mut garbage = 64u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xee; 64]);
    driver.connection.queue_raw(&garbage);
    driver.connection.queue_raw(&8u32.to_le_bytes());
    driver.connection.queue_raw(&[1, 2, 3, 4, 5, 6, 7, 8]);
    driver
        .connection
        .queue_frame(&request(echo, 5), b"last")
        .expect("queue");
    let frames = driver.frames(5);
    let by_correlation = |id: u64| {
        frames
            .iter()
            .find(|f| f.header().correlation_id == id)
            .unwrap_or_else(|| panic!("no frame for {id}: {frames:?}"))
    };
    assert_eq!(by_correlation(1).payload(), b"first");
    assert_eq!(by_correlation(5).payload(), b"last");
    let oversized = by_correlation(2);
    assert!(oversized.header().flags.contains(Flags::ERROR));
    let text = String::from_utf8_lossy(oversized.payload());
    assert!(text.contains("exceeds the limit of 4096"), "{text}");
    let malformed: Vec<_> = frames
        .iter()
        .filter(|f| String::from_utf8_lossy(f.payload()).starts_with("malformed frame"))
        .collect();
    assert_eq!(malformed.len(), 2, "{frames:?}");
    assert_eq!(
        node.counter(|c| c.frames_oversized.load(Ordering::Relaxed)),
        1
    );
    assert_eq!(
        node.counter(|c| c.frames_invalid.load(Ordering::Relaxed)),
        2
    );
}

#[test]
fn a_length_prefix_beyond_the_skip_limit_closes_the_connection() {
    let _serial = serial();
    let node = start("hugeprefix", 1, |_, _| {});
    let mut driver = Driver::connect(&node, &pinned(&node));
    driver.connection.queue_raw(&u32::MAX.to_le_bytes());
    driver.run_until(Duration::from_secs(10), |c| c.is_closed());
    match driver.connection.error() {
        Some(ClientError::ClosedByServer { code, .. }) => {
            assert_eq!(code, ErrorCode::FrameTooLarge as u64)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_datagrams_are_counted_and_harmless() {
    let _serial = serial();
    let node = start("garbage", 2, |_, _| {});
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for i in 0..500u32 {
        let len = (i as usize * 7) % 1400 + 1;
        let datagram: Vec<u8> = (0..len).map(|j| (j as u32 * 31 + i) as u8).collect();
        socket.send_to(&datagram, node.addr).expect("send");
    }
    rt().block_on(async {
        let client = Client::connect(node.addr, pinned(&node))
            .await
            .expect("connect");
        let reply = client
            .request(echo_ids(2)[1], Performative::Request, b"after the storm")
            .await
            .expect("reply");
        assert_eq!(reply.payload, b"after the storm");
    });
    let invalid = node.counter(|c| {
        c.datagrams_invalid.load(Ordering::Relaxed)
            + c.datagrams_unknown_connection.load(Ordering::Relaxed)
    });
    assert!(invalid > 0, "garbage counted");
}

/// Each move of the client's port is a NAT rebinding: the same connection id from a new
/// address. The new port hashes to either shard's socket; the test keeps moving until a
/// move landed on the shard that does not own the connection (forwarded through the ring
/// mesh), then moves twice more. quiche follows at most `client_address_changes_max`
/// moves per connection (see docs/decisions/why-client-address-changes-are-limited.md), so the test raises it.
#[test]
fn a_client_whose_port_changes_still_gets_its_replies() {
    let _serial = serial();
    const MOVES_MAX: usize = 24;
    let node = start("rebind", 2, |edge, _| {
        edge.client_address_changes_max = MOVES_MAX + 2;
    });
    let echo = echo_ids(2)[0];
    let mut driver = Driver::connect(&node, &pinned(&node));
    let mut correlation = 0;
    let counters = |node: &TestNode| {
        node.metrics
            .iter()
            .map(|c| format!("{c:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut round = |driver: &mut Driver| {
        correlation += 1;
        if std::env::var_os("E2E_DEBUG").is_some() {
            eprintln!("round {correlation}\n{}", counters(&node));
        }
        let payload = correlation.to_string();
        driver
            .connection
            .queue_frame(&request(echo, correlation), payload.as_bytes())
            .expect("queue");
        let frames = driver.frames(1);
        assert_eq!(frames[0].header().correlation_id, correlation);
        assert_eq!(frames[0].payload(), payload.as_bytes());
    };
    round(&mut driver);
    // A new source port hashes to either shard's socket; keep moving until one move
    // lands on the other shard and must be forwarded (each move: even odds).
    for _ in 0..MOVES_MAX {
        driver.rebind();
        round(&mut driver);
        if node.counter(|c| c.datagrams_forwarded_in.load(Ordering::Relaxed)) > 0 {
            break;
        }
    }
    assert!(
        node.counter(|c| c.datagrams_forwarded_out.load(Ordering::Relaxed)) > 0,
        "no move landed on the other shard"
    );
    for _ in 0..2 {
        driver.rebind();
        round(&mut driver);
    }
    for _ in 0..3 {
        round(&mut driver);
    }
}

/// The error of a connection the node refuses once the handshake is done: in TLS 1.3
/// the client may complete its side first, so it shows at connect or at the first
/// request.
async fn refusal(node: &TestNode, config: ClientConfig) -> ClientError {
    match Client::connect(node.addr, config).await {
        Err(error) => error,
        Ok(client) => client
            .request(echo_ids(1)[0], Performative::Request, b"let me in")
            .await
            .expect_err("refused"),
    }
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    let _serial = serial();
    let dir = temp_dir("mtls-ca");
    let (ca_path, client_cert, client_key) = make_ca_and_client(&dir);
    let node = start("mtls", 1, |edge, _| {
        edge.client_ca_path = Some(ca_path.clone())
    });
    rt().block_on(async {
        let error = refusal(&node, pinned(&node)).await;
        let text = error.to_string();
        assert!(
            text.contains("CERTIFICATE_REQUIRED") || text.contains("TLS alert"),
            "{text}"
        );
        let mut config = pinned(&node);
        config.client_cert = Some((client_cert.clone(), client_key.clone()));
        let client = Client::connect(node.addr, config)
            .await
            .expect("with a certificate");
        let reply = client
            .request(echo_ids(1)[0], Performative::Request, b"trusted")
            .await
            .expect("reply");
        assert_eq!(reply.payload, b"trusted");
    });
    assert!(node.counter(|c| c.connections_certificate_required.load(Ordering::Relaxed)) >= 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CA and a client certificate it signed: `(ca.pem, client.pem, client-key.pem)`.
fn make_ca_and_client(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dataplane test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let mut client_params =
        rcgen::CertificateParams::new(vec!["client.test".to_owned()]).expect("params");
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "client");
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = rcgen::KeyPair::generate().expect("key");
    let client = client_params.signed_by(&client_key, &ca).expect("sign");
    let paths = (
        dir.join("ca.pem"),
        dir.join("client.pem"),
        dir.join("client-key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write");
    std::fs::write(&paths.1, client.pem()).expect("write");
    std::fs::write(&paths.2, client_key.serialize_pem()).expect("write");
    paths
}

#[test]
fn connections_past_the_limit_are_refused_with_server_busy() {
    let _serial = serial();
    let node = start("flood", 1, |edge, _| edge.connections_per_shard_max = 2);
    rt().block_on(async {
        let mut kept = Vec::new();
        for _ in 0..2 {
            kept.push(
                Client::connect(node.addr, pinned(&node))
                    .await
                    .expect("connect"),
            );
        }
        for _ in 0..5 {
            let error = refusal(&node, pinned(&node)).await;
            assert!(
                error.to_string().contains("SERVER_BUSY"),
                "{error}: {:?}",
                node.metrics[0]
            );
        }
        for client in &kept {
            let reply = client
                .request(echo_ids(1)[0], Performative::Request, b"still served")
                .await
                .expect("reply");
            assert_eq!(reply.payload, b"still served");
        }
    });
    assert_eq!(
        node.counter(|c| c.connections_refused.load(Ordering::Relaxed)),
        5
    );
}

/// Replies pushed at a client that does not read, from its own shard and through the ring:
/// past the bound they are dropped and counted, the connection is closed at once, and
/// the ring stays open (another client is served by both shards meanwhile and after).
#[test]
fn replies_pushed_at_a_client_that_does_not_read_never_stall_the_ring() {
    let _serial = serial();
    let node = start("pushed", 2, |edge, _| {
        edge.egress_bytes_max = 64 * 1024;
        edge.stream_window_bytes = 64 * 1024;
        edge.connection_window_bytes = 64 * 1024;
    });
    let mut config = pinned(&node);
    config.window_bytes = 64 * 1024;
    let mut silent = Driver::connect(&node, &config);
    assert!(silent.connection.is_established());
    // 300 replies of 2,000 bytes from each shard's pusher: 1.2 MB against a bound of
    // 2 x 64 KiB + 64 KiB.
    for (i, pusher) in pusher_ids(2).into_iter().enumerate() {
        silent
            .connection
            .queue_frame(&request(pusher, i as u64), &300u32.to_le_bytes())
            .expect("queue");
    }
    // Send the requests, then never read a frame (only acknowledge packets).
    let started = Instant::now();
    silent.run_until(Duration::from_secs(10), |c| {
        c.is_closed() || c.error().is_some()
    });
    let closed_after = started.elapsed();
    assert!(
        node.counter(|c| c.connections_not_reading.load(Ordering::Relaxed)) == 1,
        "{:?}",
        node.metrics
    );
    assert!(node.counter(|c| c.frames_dropped_not_reading.load(Ordering::Relaxed)) > 0);
    assert!(
        closed_after < Duration::from_secs(5),
        "closed after {closed_after:?}"
    );
    // Both shards still serve another client, through the ring too.
    rt().block_on(async {
        let client = Client::connect(node.addr, pinned(&node))
            .await
            .expect("connect");
        for echo in echo_ids(2) {
            let reply = tokio::time::timeout(
                Duration::from_secs(5),
                client.request(echo, Performative::Request, b"still flowing"),
            )
            .await
            .expect("answered in time")
            .expect("reply");
            assert_eq!(reply.payload, b"still flowing");
        }
    });
}

/// Both ends offer quiche only what flow control lets it take: otherwise every blocked
/// write queued a DATA_BLOCKED frame and the blocked side flooded the other with them.
#[test]
fn a_client_that_does_not_read_is_paused_and_loses_nothing() {
    let _serial = serial();
    let node = start("notreading", 1, |edge, _| {
        edge.egress_bytes_max = 64 * 1024;
        edge.stream_window_bytes = 256 * 1024;
        edge.connection_window_bytes = 256 * 1024;
    });
    let echo = echo_ids(1)[0];
    let mut config = pinned(&node);
    // The client's own receive window is small, so unread replies back up in the node.
    config.window_bytes = 64 * 1024;
    let mut driver = Driver::connect(&node, &config);
    let payload = vec![3u8; 2000];
    let total = 1000u64;
    for i in 1..=total {
        driver
            .connection
            .queue_frame(&request(echo, i), &payload)
            .expect("queue");
    }
    // Send without reading for a while: the node stops reading when its queue is full.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        while let Some((len, to)) = driver.connection.poll_transmit(&mut driver.buf) {
            driver.socket.send_to(&driver.buf[..len], to).expect("send");
        }
        if let Ok((len, from)) = driver.socket.recv_from(&mut driver.buf) {
            let mut datagram = driver.buf[..len].to_vec();
            driver.connection.handle_datagram(&mut datagram, from);
        }
    }
    assert!(node.counter(|c| c.reads_paused.load(Ordering::Relaxed)) > 0);
    assert!(!driver.connection.is_closed());
    // Now read: every request is answered, in order.
    let frames = driver.frames(total as usize);
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame.header().correlation_id, i as u64 + 1);
        assert_eq!(frame.payload().len(), payload.len());
    }
}
