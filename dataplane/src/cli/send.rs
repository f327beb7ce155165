//! `dataplane send`: one request to an agent over the QUIC edge; prints the reply.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use dataplane_client::{Client, ClientConfig, ClientError, Verify};
use dataplane_edge::Fingerprint;
use dataplane_frame::{AgentId, Performative};

/// The edge address clients use by default (the node's default `edge.listen`).
pub const DEFAULT_ADDR: &str = "127.0.0.1:4433";

/// How a client finds and trusts a node: shared by `send` and `bench remote`.
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeClientArgs {
    /// The node's QUIC edge, HOST:PORT
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_ADDR, env = "DATAPLANE_ADDR")]
    pub addr: String,
    /// Trust servers whose certificate chains to these CA certificates (PEM)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["fingerprint", "insecure"])]
    pub ca: Option<PathBuf>,
    /// Trust only the server certificate with this SHA-256 fingerprint
    /// (as the node prints it: sha256:AB:CD:...)
    #[arg(long, value_name = "SHA256", conflicts_with = "insecure")]
    pub fingerprint: Option<String>,
    /// Do not verify the server at all (anyone on the path can read and change traffic)
    #[arg(long)]
    pub insecure: bool,
    /// The name the server certificate must carry [default: the host of --addr, or
    /// localhost for an IP address]
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Client certificate (PEM), for nodes that require mutual TLS
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM)
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Development certificate directory whose certificate is pinned when neither --ca,
    /// --fingerprint nor --insecure is given [default: the node's default, e.g.
    /// ~/.local/share/dataplane/tls]
    #[arg(long, value_name = "DIR")]
    pub dev_cert_dir: Option<PathBuf>,
}

impl EdgeClientArgs {
    /// The address to connect to (IPv4 first, as the node listens on 127.0.0.1 by
    /// default) and the client configuration.
    pub fn resolve(&self) -> anyhow::Result<(SocketAddr, ClientConfig)> {
        let mut addrs: Vec<SocketAddr> = self
            .addr
            .to_socket_addrs()
            .with_context(|| {
                format!(
                    "--addr {}: not HOST:PORT, or the host is unknown",
                    self.addr
                )
            })?
            .collect();
        addrs.sort_by_key(|addr| !addr.is_ipv4());
        let Some(&addr) = addrs.first() else {
            bail!("--addr {}: no address", self.addr);
        };
        let verify = if self.insecure {
            Verify::Insecure
        } else if let Some(ca) = &self.ca {
            Verify::CaFile(ca.clone())
        } else if let Some(text) = &self.fingerprint {
            Verify::Fingerprint(Fingerprint::parse(text)?)
        } else {
            let dir = self
                .dev_cert_dir
                .clone()
                .unwrap_or_else(dataplane_edge::tls::default_dev_cert_dir);
            match crate::edge::local_dev_fingerprint(&dir) {
                Some(fingerprint) => Verify::Fingerprint(fingerprint),
                None => bail!(
                    "no way to verify the server: pass --ca FILE, --fingerprint SHA256 (the node \
                     prints it at start-up) or --insecure; no development certificate in {}",
                    dir.display()
                ),
            }
        };
        let mut config = ClientConfig::new(verify);
        config.server_name = match &self.server_name {
            Some(name) => name.clone(),
            None => {
                let host = self.addr.rsplit_once(':').map_or("", |(host, _)| host);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
                    "localhost".to_owned()
                } else {
                    host.to_owned()
                }
            }
        };
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            config.client_cert = Some((cert.clone(), key.clone()));
        }
        Ok((addr, config))
    }
}

/// `dataplane send`.
#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// Where and how to connect.
    #[command(flatten)]
    pub edge: EdgeClientArgs,
    /// The agent: its name (as configured), or a raw id as 0x followed by 16 hex digits
    #[arg(long, value_name = "AGENT")]
    pub to: String,
    /// The message's performative
    #[arg(long, value_enum, default_value = "request")]
    pub performative: PerformativeArg,
    /// Seconds to wait for the connection and the reply
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Print the reply's header on standard error
    #[arg(long, short)]
    pub verbose: bool,
    /// The payload (UTF-8 text; use - to read bytes from standard input)
    pub payload: String,
}

/// Performatives by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[allow(missing_docs)]
pub enum PerformativeArg {
    Request,
    Inform,
    Query,
    Propose,
    Agree,
    Refuse,
    Failure,
    NotUnderstood,
}

impl From<PerformativeArg> for Performative {
    fn from(value: PerformativeArg) -> Performative {
        match value {
            PerformativeArg::Request => Performative::Request,
            PerformativeArg::Inform => Performative::Inform,
            PerformativeArg::Query => Performative::Query,
            PerformativeArg::Propose => Performative::Propose,
            PerformativeArg::Agree => Performative::Agree,
            PerformativeArg::Refuse => Performative::Refuse,
            PerformativeArg::Failure => Performative::Failure,
            PerformativeArg::NotUnderstood => Performative::NotUnderstood,
        }
    }
}

/// An agent name or `0x` + 16 hex digits.
pub fn parse_agent(text: &str) -> anyhow::Result<AgentId> {
    if let Some(hex) = text.strip_prefix("0x") {
        let raw = u64::from_str_radix(hex, 16)
            .with_context(|| format!("agent {text:?}: not 0x followed by hex digits"))?;
        return Ok(AgentId(raw));
    }
    if text.is_empty() {
        bail!("--to: empty agent name");
    }
    Ok(AgentId::from_name(text))
}

/// Runs `dataplane send`: prints the reply payload on stdout, or the error on stderr and
/// fails.
pub fn send(args: &SendArgs) -> anyhow::Result<()> {
    let (addr, config) = args.edge.resolve()?;
    let to = parse_agent(&args.to)?;
    let payload: Vec<u8> = if args.payload == "-" {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the payload from standard input")?;
        bytes
    } else {
        args.payload.clone().into_bytes()
    };
    let timeout = Duration::from_secs_f64(args.timeout.max(0.001));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let reply = runtime.block_on(async {
        let client = Client::connect_timeout(addr, config, timeout)
            .await
            .map_err(|error| describe(&error, &args.to, addr))?;
        let reply = tokio::time::timeout(
            timeout,
            client.request(to, args.performative.into(), &payload),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no reply from {} within {timeout:?}", args.to))?
        .map_err(|error| describe(&error, &args.to, addr))?;
        client.close().await;
        Ok::<_, anyhow::Error>(reply)
    })?;
    if args.verbose {
        eprintln!("{:?}", reply.header);
    }
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&reply.payload)?;
    if !reply.payload.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    Ok(())
}

fn describe(error: &ClientError, agent: &str, addr: SocketAddr) -> anyhow::Error {
    match error {
        ClientError::Remote { reason, .. } => {
            anyhow::anyhow!("agent {agent}: {reason}")
        }
        ClientError::TimedOut => anyhow::anyhow!(
            "no answer from {addr}: is a node running there with its edge on (edge.listen)?"
        ),
        other => anyhow::anyhow!("{addr}: {other}"),
    }
}
