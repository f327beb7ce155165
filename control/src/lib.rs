//! The node configuration of dataplane: one validated [`Config`], read from a YAML file
//! (or the embedded default), with command-line [`Overrides`] on top.
//!
//! Layers, last wins: the embedded default ([`EMBEDDED_DEFAULT_YAML`]) for any key a file
//! leaves out, the `--config` file, then flags. The result is validated once, field by
//! field and then across fields; afterwards the rules hold by type ([`PowerOfTwo`],
//! [`std::num::NonZeroUsize`], [`CpuList`], [`AgentId`], ...), so no later code checks them
//! again. A bad input is refused with a [`ConfigError`] that names the field, the value and
//! the rule; nothing here panics on input.
//!
//! Unknown keys are refused, so a typo cannot silently fall back to a default. The YAML
//! crate is `serde-saphyr` (see `docs/decisions/why-yaml-crate.md`); every key, default and
//! unit is listed in `docs/configuration.md`.
//!
//! ```
//! use dataplane_control::{Config, ConfigError, Overrides, ShardCount};
//!
//! // A file needs only the keys it changes.
//! let config = Config::from_yaml_str("shard:\n  ring_capacity_frames: 4096\n", "node.yaml")?;
//! assert_eq!(config.shard.ring_capacity_frames.get(), 4096);
//! assert_eq!(config.node.shards, ShardCount::Auto);
//!
//! // Flags override the file (here: the embedded default).
//! let overrides = Overrides { shards: Some("4".parse()?), ..Overrides::default() };
//! let config = Config::load(None, &overrides)?;
//! assert_eq!(config.node.shards.to_string(), "4");
//!
//! // Errors say which field, which value and why.
//! let error = Config::from_yaml_str("shard:\n  ring_capacity_frames: 1000\n", "node.yaml")
//!     .unwrap_err();
//! assert_eq!(
//!     error.to_string(),
//!     "shard.ring_capacity_frames = 1000: must be a power of two between 2 and 65536"
//! );
//! assert!(matches!(error, ConfigError::Invalid { .. }));
//!
//! // The effective configuration prints as YAML and reads back the same.
//! assert_eq!(Config::from_yaml_str(&config.to_yaml(), "shown")?, config);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod config;
mod error;
pub mod limits;
mod overrides;
mod raw;
mod types;

use std::io::Read;
use std::path::Path;

pub use config::{
    AdminConfig, AgentLimits, AgentSpec, Config, EdgeConfig, LogConfig, NodeConfig, RestartPolicy,
    ShardConfig, WasmAgentSpec, WasmConfig,
};
pub use error::ConfigError;
pub use overrides::Overrides;
pub use types::{
    AgentId, AgentKind, CacheDir, CpuList, IdlePolicy, ModuleSource, ParseValueError, PowerOfTwo,
    ShardCount, TickerPace, WasmProfiling,
};

use raw::RawConfig;

/// The documented default configuration file, compiled in. It deploys one agent, `echo`:
/// the WASM echo agent `builtin:echo`. A test checks that it parses, validates, and equals
/// the defaults in [`limits`].
pub const EMBEDDED_DEFAULT_YAML: &str = include_str!("default.yaml");

/// Name under which errors in [`EMBEDDED_DEFAULT_YAML`] are reported.
pub const EMBEDDED_DEFAULT_SOURCE_NAME: &str = "<embedded default>";

/// Largest configuration file read, in bytes; a larger one is refused before parsing.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;

impl Config {
    /// The embedded default configuration ([`EMBEDDED_DEFAULT_YAML`]).
    #[must_use]
    pub fn embedded_default() -> Config {
        // Invariant: the embedded file is valid; `tests::embedded_default_is_valid` checks it.
        Self::from_yaml_str(EMBEDDED_DEFAULT_YAML, EMBEDDED_DEFAULT_SOURCE_NAME)
            .expect("the embedded default configuration is valid")
    }

    /// Parses and validates YAML `text`; `source` names it in errors (usually the path).
    /// Keys the text leaves out take their embedded defaults.
    pub fn from_yaml_str(text: &str, source: &str) -> Result<Config, ConfigError> {
        Self::from_raw(&parse_raw(text, source)?)
    }

    /// Reads the file at `path` (or the embedded default when `None`), applies
    /// `overrides`, and validates the result.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut raw = match path {
            Some(path) => parse_raw(&read_file(path)?, &path.display().to_string())?,
            None => parse_raw(EMBEDDED_DEFAULT_YAML, EMBEDDED_DEFAULT_SOURCE_NAME)?,
        };
        overrides.apply_to(&mut raw);
        Self::from_raw(&raw)
    }

    /// The configuration as YAML, in the file's layout; [`Config::from_yaml_str`] reads it
    /// back to an equal `Config`.
    #[must_use]
    pub fn to_yaml(&self) -> String {
        // Invariant: every field is a number, string, sequence or map with string keys,
        // which YAML serialization accepts.
        serde_saphyr::to_string(self).expect("a Config serializes to YAML")
    }
}

fn parse_raw(text: &str, source: &str) -> Result<RawConfig, ConfigError> {
    serde_saphyr::from_str(text).map_err(|error| ConfigError::parse(source, &error))
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    let io_error = |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let mut text = String::new();
    file.take(CONFIG_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(io_error)?;
    if text.len() as u64 > CONFIG_FILE_BYTES_MAX {
        return Err(io_error(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than {CONFIG_FILE_BYTES_MAX} bytes"),
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
