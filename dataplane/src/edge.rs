//! Starting the QUIC edge from the configuration: certificates (configured, or the
//! development certificate), then the per-shard servers (`dataplane_edge::server`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use dataplane_control::Config;
use dataplane_edge::server::{io_factory, EdgeConfig, EdgeMetrics};
use dataplane_edge::tls::{default_dev_cert_dir, ensure_dev_cert, fingerprint_of_pem};
use dataplane_edge::Fingerprint;
use dataplane_runtime::IoFactory;

/// The edge, ready to start with the node.
pub struct EdgePlan {
    /// Builds each shard's server.
    pub factory: IoFactory,
    /// Its counters.
    pub metrics: EdgeMetrics,
    /// What to print at start-up.
    pub summary: String,
}

impl std::fmt::Debug for EdgePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgePlan")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// The development certificate directory the configuration names (or the default).
pub fn dev_cert_dir(config: &Config) -> PathBuf {
    config
        .edge
        .dev_cert_dir
        .clone()
        .unwrap_or_else(default_dev_cert_dir)
}

/// Resolves the edge's certificates and builds its factory; `None` when `edge.listen` is
/// `null`.
pub fn plan(config: &Config, shards: usize) -> anyhow::Result<Option<EdgePlan>> {
    let Some(listen) = config.edge.listen else {
        return Ok(None);
    };
    let (cert, key, fingerprint, origin) = match (&config.edge.cert, &config.edge.key) {
        (Some(cert), Some(key)) => {
            let fingerprint = fingerprint_of_pem(cert).context("reading edge.cert")?;
            (
                cert.clone(),
                key.clone(),
                fingerprint,
                "configured".to_owned(),
            )
        }
        _ => {
            let dir = dev_cert_dir(config);
            let (cert, key, fingerprint, generated) = ensure_dev_cert(&dir)
                .with_context(|| format!("development certificate in {}", dir.display()))?;
            let origin = if generated {
                format!("development certificate generated in {}", dir.display())
            } else {
                format!("development certificate from {}", dir.display())
            };
            (cert, key, fingerprint, origin)
        }
    };
    let mut edge = EdgeConfig::new(listen, cert, key);
    edge.client_ca_path = config.edge.client_ca.clone();
    edge.connections_per_shard_max = config.edge.connections_per_shard_max as usize;
    edge.idle_timeout = Duration::from_millis(config.edge.idle_timeout_ms);
    edge.stream_window_bytes = config.edge.stream_window_bytes;
    edge.connection_window_bytes = config.edge.stream_window_bytes;
    edge.egress_bytes_max = config.edge.egress_bytes_max as usize;
    edge.frame_bytes_max = config.shard.frame_bytes_max.get();
    // Fail here, with the file names, rather than once per shard.
    dataplane_edge::server::quiche_server_config(&edge).map_err(anyhow::Error::msg)?;
    let mtls = if edge.client_ca_path.is_some() {
        "; client certificates required"
    } else {
        ""
    };
    let summary = format!(
        "edge: QUIC on {listen} (ALPN dataplane/1), {origin}{mtls}\nedge: certificate fingerprint {fingerprint}"
    );
    let (factory, metrics) = io_factory(edge, shards);
    Ok(Some(EdgePlan {
        factory,
        metrics,
        summary,
    }))
}

/// The fingerprint clients on this machine pin by default: the development certificate
/// in the configured (or default) directory, if it exists.
pub fn local_dev_fingerprint(dir: &std::path::Path) -> Option<Fingerprint> {
    fingerprint_of_pem(&dir.join(dataplane_edge::tls::DEV_CERT_FILE)).ok()
}
