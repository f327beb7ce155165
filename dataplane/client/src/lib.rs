//! Client library for a dataplane node's QUIC edge (protocol: `docs/protocol.md`).
//!
//! [`Client`] is an async client for ordinary tokio applications: connect, then
//! [`Client::request`] (awaits the reply) or [`Client::send`] (one-way). Many requests may
//! be in flight at once on one connection; replies are matched by correlation id.
//! [`ClientConnection`] is the sans-IO core underneath, for other runtimes and for load
//! generators that drive their own socket.
//!
//! ```no_run
//! use dataplane_client::{Client, ClientConfig, Verify};
//! use dataplane_frame::{AgentId, Performative};
//!
//! # async fn demo() -> Result<(), dataplane_client::ClientError> {
//! let fingerprint = dataplane_edge::Fingerprint::parse("sha256:AB:...").expect("fingerprint");
//! let config = ClientConfig::new(Verify::Fingerprint(fingerprint));
//! let client = Client::connect("127.0.0.1:4433".parse().unwrap(), config).await?;
//! let reply = client
//!     .request(AgentId::from_name("echo"), Performative::Request, b"hello")
//!     .await?;
//! assert_eq!(reply.payload, b"hello");
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod connection;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dataplane_edge::socket::{set_dont_fragment, DATAGRAM_BYTES_MAX};
use dataplane_edge::{ErrorCode, Fingerprint};
use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

pub use connection::{ClientConfig, ClientConnection, ReceivedFrame, Verify};

/// Requests queued in the client before `request` waits for room.
const COMMAND_QUEUE_CAPACITY: usize = 1024;
/// Unsolicited frames (not replies to our requests) kept for `next_message`.
const UNSOLICITED_CAPACITY: usize = 1024;

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// TLS or QUIC set-up failed (certificates, CA file, ALPN).
    #[error("TLS: {0}")]
    Tls(String),
    /// The socket failed.
    #[error("I/O: {0}")]
    Io(String),
    /// No handshake within the connect timeout, or the connection idled out.
    #[error("timed out")]
    TimedOut,
    /// The server's certificate is not the pinned one.
    #[error("server certificate fingerprint {found} does not match the pinned {expected}")]
    FingerprintMismatch {
        /// Pinned.
        expected: String,
        /// Presented.
        found: String,
    },
    /// The server closed the connection.
    #[error("closed by the server: {code_name} {reason}")]
    ClosedByServer {
        /// The close code.
        code: u64,
        /// Its name (our application codes, or the QUIC/TLS transport code).
        code_name: String,
        /// The server's reason text.
        reason: String,
    },
    /// This side closed the connection (after an error here).
    #[error("closed locally: {code_name} {reason}")]
    ClosedLocally {
        /// The close code.
        code: u64,
        /// Its name.
        code_name: String,
        /// The reason.
        reason: String,
    },
    /// The connection is gone.
    #[error("{0}")]
    Closed(String),
    /// The server broke the framing.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A frame could not be encoded (too large).
    #[error("frame: {0}")]
    Frame(String),
    /// The request was answered with an error frame (unknown agent, agent failure,
    /// malformed frame...).
    #[error("error from {from}: {reason}")]
    Remote {
        /// Who answered: the agent addressed, or the node (id 0) for framing errors.
        from: AgentId,
        /// The error text.
        reason: String,
    },
}

impl ClientError {
    fn code_name(code: u64, is_app: bool) -> String {
        if is_app {
            match ErrorCode::from_u64(code) {
                Some(known) => known.to_string(),
                None => format!("application error 0x{code:x}"),
            }
        } else if (0x100..0x200).contains(&code) {
            // CRYPTO_ERROR: 0x100 + TLS alert.
            let alert = code - 0x100;
            let name = match alert {
                42 => " (bad_certificate)",
                46 => " (certificate_unknown)",
                48 => " (unknown_ca)",
                116 => " (certificate_required)",
                120 => " (no_application_protocol)",
                _ => "",
            };
            format!("TLS alert {alert}{name}")
        } else {
            let name = match code {
                0x0 => "NO_ERROR",
                0x1 => "INTERNAL_ERROR",
                0x2 => "CONNECTION_REFUSED",
                0x3 => "FLOW_CONTROL_ERROR",
                0x4 => "STREAM_LIMIT_ERROR",
                0x5 => "STREAM_STATE_ERROR",
                0x7 => "FRAME_ENCODING_ERROR",
                0xa => "PROTOCOL_VIOLATION",
                0xc => "APPLICATION_ERROR",
                _ => "",
            };
            format!("transport error 0x{code:x} {name}")
        }
    }

    pub(crate) fn closed_by_server(code: u64, reason: &[u8], is_app: bool) -> ClientError {
        ClientError::ClosedByServer {
            code,
            code_name: ClientError::code_name(code, is_app),
            reason: String::from_utf8_lossy(reason).into_owned(),
        }
    }

    pub(crate) fn closed_locally(code: u64, reason: &[u8], is_app: bool) -> ClientError {
        ClientError::ClosedLocally {
            code,
            code_name: ClientError::code_name(code, is_app),
            reason: String::from_utf8_lossy(reason).into_owned(),
        }
    }
}

/// A reply (or an unsolicited message) from the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The frame header.
    pub header: Header,
    /// The payload.
    pub payload: Vec<u8>,
}

enum Command {
    Request {
        header: Header,
        payload: Vec<u8>,
        reply: Option<oneshot::Sender<Result<Reply, ClientError>>>,
    },
    Close,
}

/// An async client on one QUIC connection. Cheap to share (`Arc`); dropping the last
/// handle closes the connection.
#[derive(Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    unsolicited: tokio::sync::Mutex<mpsc::Receiver<Reply>>,
    next_correlation: AtomicU64,
    local: SocketAddr,
    server_fingerprint: Option<Fingerprint>,
    /// Why the connection ended, set by its task before it exits.
    ended: Arc<OnceLock<ClientError>>,
}

impl Client {
    /// Connects to `addr` and completes the handshake (10 s at most).
    pub async fn connect(addr: SocketAddr, config: ClientConfig) -> Result<Client, ClientError> {
        Client::connect_timeout(addr, config, Duration::from_secs(10)).await
    }

    /// [`Client::connect`] with a handshake timeout.
    pub async fn connect_timeout(
        addr: SocketAddr,
        config: ClientConfig,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let bind: SocketAddr = if addr.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|error| ClientError::Io(format!("bind {bind}: {error}")))?;
        set_dont_fragment(&socket, bind.is_ipv6())
            .map_err(|error| ClientError::Io(format!("don't-fragment on {bind}: {error}")))?;
        let mut local = socket
            .local_addr()
            .map_err(|error| ClientError::Io(error.to_string()))?;
        if local.ip().is_unspecified() {
            // quiche keys paths by address: use the address the server will see.
            local = SocketAddr::new(
                if addr.ip().is_loopback() {
                    addr.ip()
                } else {
                    local.ip()
                },
                local.port(),
            );
        }
        let connection = ClientConnection::connect(&config, local, addr)?;
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
        let (unsolicited_tx, unsolicited) = mpsc::channel(UNSOLICITED_CAPACITY);
        let (ready_tx, ready_rx) = oneshot::channel();
        let ended = Arc::new(OnceLock::new());
        tokio::spawn(drive(
            connection,
            socket,
            command_rx,
            unsolicited_tx,
            Some(ready_tx),
            Arc::clone(&ended),
        ));
        let server_fingerprint = match tokio::time::timeout(timeout, ready_rx).await {
            Ok(Ok(Ok(fingerprint))) => fingerprint,
            Ok(Ok(Err(error))) => return Err(error),
            Ok(Err(_)) => return Err(ClientError::Closed("client task ended".to_owned())),
            Err(_) => {
                let _ = commands.try_send(Command::Close);
                return Err(ClientError::TimedOut);
            }
        };
        Ok(Client {
            commands,
            unsolicited: tokio::sync::Mutex::new(unsolicited),
            next_correlation: AtomicU64::new(1),
            local,
            server_fingerprint,
            ended,
        })
    }

    /// Why the connection is gone (the server's close code and reason when it closed it).
    fn ended(&self) -> ClientError {
        self.ended
            .get()
            .cloned()
            .unwrap_or_else(|| ClientError::Closed("connection closed".to_owned()))
    }

    /// The local UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The fingerprint of the certificate the server presented.
    pub fn server_fingerprint(&self) -> Option<Fingerprint> {
        self.server_fingerprint
    }

    fn header(&self, to: AgentId, performative: Performative) -> Header {
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        Header {
            to,
            // The node stamps its own id for this connection here.
            from: AgentId(0),
            conversation_id: correlation_id,
            correlation_id,
            performative,
            priority: Priority::Normal,
            flags: Flags::NONE,
        }
    }

    /// Sends a request to agent `to` and waits for its reply. An error frame in answer
    /// (unknown agent, agent failure, malformed request) is [`ClientError::Remote`].
    pub async fn request(
        &self,
        to: AgentId,
        performative: Performative,
        payload: &[u8],
    ) -> Result<Reply, ClientError> {
        let header = self.header(to, performative);
        self.request_with(header, payload).await
    }

    /// [`Client::request`] with a header of the caller's making (its correlation id must
    /// be unique among this client's requests in flight).
    pub async fn request_with(&self, header: Header, payload: &[u8]) -> Result<Reply, ClientError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.commands
            .send(Command::Request {
                header,
                payload: payload.to_vec(),
                reply: Some(reply_tx),
            })
            .await
            .map_err(|_| self.ended())?;
        reply_rx.await.map_err(|_| self.ended())?
    }

    /// Sends a one-way message (no reply is awaited; one may arrive via
    /// [`Client::next_message`]).
    pub async fn send(
        &self,
        to: AgentId,
        performative: Performative,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        let header = self.header(to, performative);
        self.commands
            .send(Command::Request {
                header,
                payload: payload.to_vec(),
                reply: None,
            })
            .await
            .map_err(|_| self.ended())
    }

    /// The next frame that was not a reply to a pending request (messages agents send to
    /// this connection, replies to one-way sends). `None` once the connection is closed.
    pub async fn next_message(&self) -> Option<Reply> {
        self.unsolicited.lock().await.recv().await
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = self.commands.send(Command::Close).await;
    }
}

type Pending = HashMap<u64, oneshot::Sender<Result<Reply, ClientError>>>;

/// The connection's task: socket, timers and commands.
async fn drive(
    mut connection: ClientConnection,
    socket: UdpSocket,
    mut commands: mpsc::Receiver<Command>,
    unsolicited: mpsc::Sender<Reply>,
    mut ready: Option<oneshot::Sender<Result<Option<Fingerprint>, ClientError>>>,
    ended: Arc<OnceLock<ClientError>>,
) {
    let socket = Arc::new(socket);
    let mut pending: Pending = HashMap::new();
    let mut waiting: Vec<Command> = Vec::new();
    let mut out = vec![0u8; DATAGRAM_BYTES_MAX];
    let mut inbuf = vec![0u8; 65536];
    let mut commands_open = true;
    loop {
        if connection.is_established() {
            if let Some(ready) = ready.take() {
                let _ = ready.send(Ok(connection.server_fingerprint()));
            }
            for command in waiting.drain(..) {
                queue(&mut connection, &mut pending, command);
            }
        }
        while let Some(frame) = connection.poll_frame() {
            deliver(frame, &mut pending, &unsolicited);
        }
        while let Some((len, to)) = connection.poll_transmit(&mut out) {
            if let Err(error) = socket.send_to(&out[..len], to).await {
                tracing::debug!(%error, "UDP send failed");
            }
        }
        if let Some(error) = connection.local_failure() {
            if let Some(ready) = ready.take() {
                let _ = ready.send(Err(error.clone()));
            }
        }
        if connection.is_closed() || connection.is_draining() {
            let error = connection
                .error()
                .unwrap_or_else(|| ClientError::Closed("connection closed".to_owned()));
            let _ = ended.set(error.clone());
            if let Some(ready) = ready.take() {
                let _ = ready.send(Err(error.clone()));
            }
            for (_, reply) in pending.drain() {
                let _ = reply.send(Err(error.clone()));
            }
            for command in waiting.drain(..) {
                if let Command::Request {
                    reply: Some(reply), ..
                } = command
                {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            return;
        }
        let timeout = connection.timeout();
        tokio::select! {
            received = socket.recv_from(&mut inbuf) => match received {
                Ok((len, from)) => {
                    connection.handle_datagram(&mut inbuf[..len], from);
                    // Take whatever else is already queued without another wake-up.
                    while let Ok((len, from)) = socket.try_recv_from(&mut inbuf) {
                        connection.handle_datagram(&mut inbuf[..len], from);
                    }
                }
                Err(error) => tracing::debug!(%error, "UDP receive failed"),
            },
            command = commands.recv(), if commands_open => match command {
                Some(Command::Close) | None => {
                    commands_open = false;
                    connection.close();
                }
                Some(command) if connection.is_established() => {
                    queue(&mut connection, &mut pending, command);
                    while let Ok(command) = commands.try_recv() {
                        match command {
                            Command::Close => {
                                commands_open = false;
                                connection.close();
                                break;
                            }
                            command => queue(&mut connection, &mut pending, command),
                        }
                    }
                }
                Some(command) => waiting.push(command),
            },
            () = sleep_until(timeout) => connection.on_timeout(),
        }
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

fn queue(connection: &mut ClientConnection, pending: &mut Pending, command: Command) {
    let Command::Request {
        header,
        payload,
        reply,
    } = command
    else {
        return;
    };
    match connection.queue_frame(&header, &payload) {
        Ok(_) => {
            if let Some(reply) = reply {
                pending.insert(header.correlation_id, reply);
            }
        }
        Err(error) => {
            if let Some(reply) = reply {
                let _ = reply.send(Err(error));
            }
        }
    }
}

fn deliver(frame: ReceivedFrame, pending: &mut Pending, unsolicited: &mpsc::Sender<Reply>) {
    let header = frame.header();
    let reply = Reply {
        header,
        payload: frame.payload().to_vec(),
    };
    if header.flags.contains(Flags::REPLY) {
        if let Some(waiter) = pending.remove(&header.correlation_id) {
            let result = if header.flags.contains(Flags::ERROR) {
                Err(ClientError::Remote {
                    from: header.from,
                    reason: String::from_utf8_lossy(&reply.payload).into_owned(),
                })
            } else {
                Ok(reply)
            };
            let _ = waiter.send(result);
            return;
        }
    }
    // Not ours to match: keep it for `next_message` if there is room.
    let _ = unsolicited.try_send(reply);
}

impl ClientConnection {
    /// The fingerprint of the server's certificate, once the handshake is done.
    pub fn server_fingerprint(&self) -> Option<Fingerprint> {
        self.peer_cert_der().map(Fingerprint::of_der)
    }
}
