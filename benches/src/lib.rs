//! Peer baselines for `dataplane bench` and the `compare` runner.
//!
//! `cargo run --release -p dataplane-benches --bin compare -- cross-shard` runs, per run,
//! the raw cache-line ping-pong (`hardware`, the machine's limit), dataplane's own suite
//! (`dataplane::bench::native`) and the tokio baseline ([`tokio_mpsc`]), then prints the
//! medians with ratios and a PASS/FAIL line per target ([`targets`]).
//!
//! For `remote`, [`quinn_remote`] is the peer baseline and [`quiche_bare`] the ceiling:
//! quiche alone at both ends, which an edge and client on quiche with the same settings
//! cannot exceed.
//!
//! The baseline lives here, not in the `dataplane` crate, so that the product binary does
//! not depend on tokio.
//!
//! ```
//! use dataplane::bench::{Suite, SuiteOptions};
//!
//! let opts = SuiteOptions { seconds: 0.05, ..SuiteOptions::default() };
//! let result = dataplane_benches::tokio_mpsc::run(Suite::Local, &opts)?;
//! assert_eq!(result.system, "tokio-mpsc");
//! assert!(result.throughput_msgs_per_s > 0.0);
//! # anyhow::Ok(())
//! ```
#![warn(missing_docs)]

pub mod quiche_bare;
pub mod quinn_remote;
pub mod targets;
pub mod tokio_mpsc;

/// The tests of this crate that pin busy-polling threads to CPUs 0 and 1 take turns.
#[cfg(test)]
pub(crate) fn tests_serial() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
