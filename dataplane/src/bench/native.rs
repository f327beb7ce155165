//! Placeholder: dataplane local and cross-shard suites.
