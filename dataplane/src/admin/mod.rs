//! The admin endpoint: HTTP/1.1 with JSON bodies on `admin.listen`, served by one
//! unpinned thread, off the data path (`docs/admin.md`).
//!
//! - `GET /health`, `GET /metrics` (OpenMetrics text), `GET /agents`, `GET /agents/{id}`;
//! - `POST /agents` deploys a WASM agent, `PUT /agents/{id}` hot-swaps its module (same id,
//!   same mailbox; a failed swap leaves the old code running), `DELETE /agents/{id}`
//!   undeploys it.
//!
//! [`AdminServer::bind`] is called before the shards start, so a taken port fails start-up
//! at once; [`AdminServer::start`] runs the [`Service`] on its own thread once the node is
//! up. Requests are handled one at a time: modules compile on this thread, and the shards
//! only receive short control jobs (`NodeHandle::call`). A panic while handling a request
//! is caught and answered with a 500; nothing a client sends reaches a shard unchecked.

pub mod api;
pub mod metrics;
mod service;

use std::io::Read as _;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;

pub use service::{Reply, Service, SHARD_JOB_TIMEOUT};

/// Largest request body read, in bytes. A deploy names its module (the node reads the
/// file), so bodies are small; anything larger is refused with 413.
pub const BODY_BYTES_MAX: usize = 1 << 20;

/// A bound, not yet serving, admin listener.
pub struct AdminServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl AdminServer {
    /// Listens on `addr` (port 0 picks a free port: see [`AdminServer::local_addr`]).
    pub fn bind(addr: SocketAddr) -> anyhow::Result<AdminServer> {
        let server = tiny_http::Server::http(addr).map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on admin.listen = {addr}: {error}; choose another address \
                 (--admin-listen IP:PORT) or turn the endpoint off (--admin-disabled)"
            )
        })?;
        let addr = server
            .server_addr()
            .to_ip()
            .context("the admin listener has no IP address")?;
        Ok(AdminServer {
            server: Arc::new(server),
            addr,
        })
    }

    /// The address it listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `service` on a new thread until [`AdminThread::stop`].
    pub fn start(self, service: Service) -> anyhow::Result<AdminThread> {
        let server = Arc::clone(&self.server);
        let thread = std::thread::Builder::new()
            .name("admin".to_owned())
            .spawn(move || serve(&server, service))
            .context("starting the admin thread")?;
        Ok(AdminThread {
            server: self.server,
            thread,
        })
    }
}

/// The running admin thread.
pub struct AdminThread {
    server: Arc<tiny_http::Server>,
    thread: JoinHandle<()>,
}

impl std::fmt::Debug for AdminThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminThread").finish_non_exhaustive()
    }
}

impl AdminThread {
    /// Stops serving (after the request in progress) and joins the thread.
    pub fn stop(self) {
        self.server.unblock();
        if self.thread.join().is_err() {
            tracing::error!("the admin thread panicked");
        }
    }
}

fn serve(server: &tiny_http::Server, mut service: Service) {
    for mut request in server.incoming_requests() {
        let method = request.method().as_str().to_owned();
        let url = request.url().to_owned();
        let body = read_body(&mut request);
        let reply = panic::catch_unwind(AssertUnwindSafe(|| service.handle(&method, &url, body)))
            .unwrap_or_else(|_| {
                tracing::error!(%method, %url, "admin request panicked");
                Reply::error(500, "internal error while handling the request (logged)")
            });
        tracing::debug!(%method, %url, status = reply.status, "admin request");
        if let Err(error) = request.respond(response(reply)) {
            tracing::debug!(%error, "admin client went away before the answer");
        }
    }
}

/// The body, at most [`BODY_BYTES_MAX`] bytes, or the error answer.
fn read_body(request: &mut tiny_http::Request) -> Result<Vec<u8>, Reply> {
    let too_large = || {
        Reply::error(
            413,
            format!("request body larger than {BODY_BYTES_MAX} bytes; a deploy names its module file, the node reads it"),
        )
    };
    if request
        .body_length()
        .is_some_and(|len| len > BODY_BYTES_MAX)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(BODY_BYTES_MAX as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|error| Reply::error(400, format!("cannot read the request body: {error}")))?;
    if body.len() > BODY_BYTES_MAX {
        return Err(too_large());
    }
    Ok(body)
}

fn response(reply: Reply) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let mut response = tiny_http::Response::from_string(reply.body)
        .with_status_code(reply.status)
        .with_header(header("Content-Type", reply.content_type));
    if let Some(allow) = reply.allow {
        response.add_header(header("Allow", allow));
    }
    response
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    // Invariant: the names and values used here are fixed ASCII without line breaks,
    // which tiny_http always accepts.
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid ASCII header")
}
