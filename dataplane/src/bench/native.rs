//! Placeholder: dataplane local and cross-shard suites.

pub fn run(_suite: super::Suite, _opts: &super::SuiteOptions) -> anyhow::Result<super::BenchResult> { anyhow::bail!("dataplane suites not built yet") }
