//! The one error type of configuration loading.

use std::path::PathBuf;

/// Why a configuration was refused.
///
/// Every variant carries what a person needs to fix the input without reading code: the
/// file, the position, or the dotted field name with the offending value and the rule.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Io {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML, or its shape does not match (unknown field, list where a
    /// value belongs, duplicate key, several documents).
    #[error("{source_name}:{line}:{column}: {message}")]
    Parse {
        /// File name, or `<embedded default>`.
        source_name: String,
        /// 1-based line of the problem (0 when the parser did not know).
        line: u64,
        /// 1-based column of the problem (0 when the parser did not know).
        column: u64,
        /// What is wrong there.
        message: String,
    },
    /// A field holds a value that breaks a rule.
    #[error("{field} = {value}: {reason}")]
    Invalid {
        /// Dotted path of the field, e.g. `shard.ring_capacity_frames` or `agents[2].id`.
        field: String,
        /// The value as written (or as it came from a flag).
        value: String,
        /// The rule the value breaks.
        reason: String,
    },
}

impl ConfigError {
    /// Builds [`ConfigError::Invalid`].
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Builds [`ConfigError::Parse`] from the YAML crate's error.
    pub(crate) fn parse(source_name: &str, error: &serde_saphyr::Error) -> Self {
        let error = error.without_snippet();
        let (line, column) = error
            .location()
            .map_or((0, 0), |at| (at.line(), at.column()));
        let mut message = error.to_string();
        // The crate appends the position to its message; ours sits in front already.
        let suffix = format!(" at line {line}, column {column}");
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message.truncate(stripped.len());
        }
        // Every leaf of the raw file is read as a string scalar (see `raw::Scalar`), so the
        // crate's wording for a list or mapping in a leaf's place is put in the user's terms.
        if message == "expected string scalar" {
            message = "expected a single value (number or text), not a list or mapping".to_owned();
        }
        Self::Parse {
            source_name: source_name.to_owned(),
            line,
            column,
            message,
        }
    }
}
