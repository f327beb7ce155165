//! Validated value types: once one of these exists, its rule holds ("parse, don't validate").

use std::ffi::OsStr;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::limits;

/// Why a single value was refused; [`crate::ConfigError::Invalid`] adds the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ParseValueError {
    /// The rule the value breaks, e.g. `must be "auto" or a number between 1 and 1024`.
    pub reason: String,
}

impl ParseValueError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// How many shards (one per core) the node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ShardCount {
    /// One shard per CPU the node may use (the cpuset, or every online CPU).
    #[default]
    Auto,
    /// Exactly this many shards, at most [`limits::SHARDS`]`.max`.
    Exact(NonZeroUsize),
}

impl ShardCount {
    /// The exact count, or `None` for [`ShardCount::Auto`].
    #[must_use]
    pub fn exact(self) -> Option<NonZeroUsize> {
        match self {
            Self::Auto => None,
            Self::Exact(count) => Some(count),
        }
    }
}

impl FromStr for ShardCount {
    type Err = ParseValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bounds = limits::SHARDS;
        let reason = || {
            ParseValueError::new(format!(
                "must be \"auto\" or a number between {} and {}",
                bounds.min, bounds.max
            ))
        };
        if text == "auto" {
            return Ok(Self::Auto);
        }
        let count: u64 = text.parse().map_err(|_| reason())?;
        if !bounds.contains(count) {
            return Err(reason());
        }
        usize::try_from(count)
            .ok()
            .and_then(NonZeroUsize::new)
            .map(Self::Exact)
            .ok_or_else(reason)
    }
}

impl fmt::Display for ShardCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Exact(count) => write!(f, "{count}"),
        }
    }
}

impl Serialize for ShardCount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => serializer.serialize_str("auto"),
            Self::Exact(count) => serializer.serialize_u64(count.get() as u64),
        }
    }
}

impl<'de> Deserialize<'de> for ShardCount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = crate::raw::Scalar::deserialize(deserializer)?;
        text.as_str().parse().map_err(serde::de::Error::custom)
    }
}

/// What a shard does when it has no work.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum IdlePolicy {
    /// Keep polling: lowest wake-up latency, one core at 100 % per shard.
    #[default]
    BusyPoll,
    /// Sleep in the kernel until an event arrives: saves power, costs microseconds.
    Park,
}

impl IdlePolicy {
    /// The spelling used in YAML and on the command line.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BusyPoll => "busy-poll",
            Self::Park => "park",
        }
    }
}

impl FromStr for IdlePolicy {
    type Err = ParseValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "busy-poll" => Ok(Self::BusyPoll),
            "park" => Ok(Self::Park),
            _ => Err(ParseValueError::new("must be busy-poll or park")),
        }
    }
}

impl fmt::Display for IdlePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A power of two, at least 1: a ring capacity whose indices wrap with [`PowerOfTwo::mask`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PowerOfTwo(NonZeroUsize);

impl PowerOfTwo {
    /// `Some` when `value` is a power of two.
    #[must_use]
    pub const fn new(value: usize) -> Option<Self> {
        match NonZeroUsize::new(value) {
            Some(value) if value.is_power_of_two() => Some(Self(value)),
            _ => None,
        }
    }

    /// The value.
    #[must_use]
    pub const fn get(self) -> usize {
        self.0.get()
    }

    /// `value - 1`: `index & mask()` is `index % value`.
    #[must_use]
    pub const fn mask(self) -> usize {
        self.0.get() - 1
    }

    /// The exponent: `1 << log2()` is the value.
    #[must_use]
    pub const fn log2(self) -> u32 {
        self.0.trailing_zeros()
    }
}

impl fmt::Display for PowerOfTwo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A syntax-checked Linux CPU list such as `2-7,10`: comma-separated CPU indices and
/// inclusive ranges, no spaces, no overlaps, each index at most [`limits::CPU_INDEX_MAX`].
///
/// Whether the CPUs exist on this machine is checked at start-up, not here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct CpuList {
    text: String,
    cpus: Vec<usize>,
}

impl CpuList {
    /// The list as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The CPU indices, ascending, without duplicates; never empty.
    #[must_use]
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// How many CPUs the list names (at least 1).
    #[must_use]
    pub fn len(&self) -> NonZeroUsize {
        // Invariant: `from_str` refuses an empty list.
        NonZeroUsize::new(self.cpus.len()).unwrap_or(NonZeroUsize::MIN)
    }

    fn parse_index(text: &str) -> Result<usize, ParseValueError> {
        let index: usize = text.parse().map_err(|_| {
            ParseValueError::new(format!(
                "`{text}` is not a CPU index (expected e.g. 2-7,10)"
            ))
        })?;
        if index > limits::CPU_INDEX_MAX {
            return Err(ParseValueError::new(format!(
                "CPU {index} is above the highest index {}",
                limits::CPU_INDEX_MAX
            )));
        }
        Ok(index)
    }
}

impl FromStr for CpuList {
    type Err = ParseValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(ParseValueError::new(
                "must name at least one CPU, e.g. 2-7,10",
            ));
        }
        let mut seen = vec![false; limits::CPU_INDEX_MAX + 1];
        let mut cpus = Vec::new();
        for item in text.split(',') {
            let (first, last) = match item.split_once('-') {
                Some((first, last)) => (Self::parse_index(first)?, Self::parse_index(last)?),
                None => {
                    let index = Self::parse_index(item)?;
                    (index, index)
                }
            };
            if first > last {
                return Err(ParseValueError::new(format!(
                    "range `{item}` runs backwards"
                )));
            }
            // In bounds: `parse_index` caps both ends at CPU_INDEX_MAX.
            for (cpu, listed) in seen.iter_mut().enumerate().take(last + 1).skip(first) {
                if std::mem::replace(listed, true) {
                    return Err(ParseValueError::new(format!("CPU {cpu} is listed twice")));
                }
                cpus.push(cpu);
            }
        }
        cpus.sort_unstable();
        Ok(Self {
            text: text.to_owned(),
            cpus,
        })
    }
}

impl From<CpuList> for String {
    fn from(list: CpuList) -> Self {
        list.text
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// An agent's name: 1 to [`limits::AGENT_ID_BYTES_MAX`] bytes of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId(String);

impl AgentId {
    /// The id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AgentId {
    type Err = ParseValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let allowed = |byte: u8| byte.is_ascii_alphanumeric() || b"._-".contains(&byte);
        if text.is_empty() || text.len() > limits::AGENT_ID_BYTES_MAX {
            return Err(ParseValueError::new(format!(
                "must be 1 to {} bytes long",
                limits::AGENT_ID_BYTES_MAX
            )));
        }
        if !text.bytes().all(allowed) {
            return Err(ParseValueError::new("may only contain A-Z a-z 0-9 . _ -"));
        }
        Ok(Self(text.to_owned()))
    }
}

impl TryFrom<String> for AgentId {
    type Error = ParseValueError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<AgentId> for String {
    fn from(id: AgentId) -> Self {
        id.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which handler an agent runs: a built-in native handler, or a WebAssembly module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AgentKind {
    /// Native: replies to every message with the same payload.
    Echo,
    /// Native: accepts and drops every message.
    Sink,
    /// Native: counts the messages it receives.
    Counter,
    /// A WebAssembly agent (docs/agent-abi.md); its module, configuration and limits are in
    /// [`crate::AgentSpec::wasm`].
    Wasm,
}

impl AgentKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [AgentKind; 4] = [Self::Echo, Self::Sink, Self::Counter, Self::Wasm];

    /// The built-in native kinds: every kind but [`AgentKind::Wasm`].
    pub const NATIVE: [AgentKind; 3] = [Self::Echo, Self::Sink, Self::Counter];

    /// The spelling used in YAML.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Sink => "sink",
            Self::Counter => "counter",
            Self::Wasm => "wasm",
        }
    }

    /// Whether this is a built-in native handler (not [`AgentKind::Wasm`]).
    #[must_use]
    pub fn is_native(self) -> bool {
        self != Self::Wasm
    }
}

impl FromStr for AgentKind {
    type Err = ParseValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| ParseValueError::new("must be one of echo, sink, counter, wasm"))
    }
}

impl fmt::Display for AgentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a WASM agent's module comes from: `builtin:<name>` or a file path.
///
/// Only the syntax is checked here; the binary resolves built-in names and reads files.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum ModuleSource {
    /// A module compiled into the binary, by name: 1 to
    /// [`limits::BUILTIN_MODULE_NAME_BYTES_MAX`] bytes of `[a-z0-9_-]` (`echo`, `echo-c`,
    /// `pingpong`, ...). Written `builtin:<name>`.
    Builtin(String),
    /// A `.wasm` (or `.wat`) file; a relative path is kept as written.
    File(PathBuf),
}

impl ModuleSource {
    /// The prefix that marks a built-in module.
    pub const BUILTIN_PREFIX: &'static str = "builtin:";
}

impl FromStr for ModuleSource {
    type Err = ParseValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(name) = text.strip_prefix(Self::BUILTIN_PREFIX) {
            let allowed = |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
            let valid = !name.is_empty()
                && name.len() <= limits::BUILTIN_MODULE_NAME_BYTES_MAX
                && name
                    .bytes()
                    .all(|byte| allowed(byte) || b"_-".contains(&byte));
            if !valid {
                return Err(ParseValueError::new(format!(
                    "a built-in module name is 1 to {} bytes of a-z 0-9 _ - (e.g. builtin:echo)",
                    limits::BUILTIN_MODULE_NAME_BYTES_MAX
                )));
            }
            return Ok(Self::Builtin(name.to_owned()));
        }
        parse_path(
            text,
            "must be a file path or builtin:NAME (e.g. builtin:echo)",
        )
        .map(Self::File)
    }
}

impl From<ModuleSource> for String {
    fn from(source: ModuleSource) -> Self {
        source.to_string()
    }
}

impl fmt::Display for ModuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Builtin(name) => write!(f, "{}{name}", Self::BUILTIN_PREFIX),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A path from the configuration: 1 to [`limits::PATH_BYTES_MAX`] bytes, no NUL byte, no
/// leading `~` (nothing expands it). `empty` is the reason given for an empty text.
fn parse_path(text: &str, empty: &str) -> Result<PathBuf, ParseValueError> {
    if text.is_empty() {
        return Err(ParseValueError::new(empty));
    }
    if text.len() > limits::PATH_BYTES_MAX {
        return Err(ParseValueError::new(format!(
            "a path is at most {} bytes long",
            limits::PATH_BYTES_MAX
        )));
    }
    if text.contains('\0') {
        return Err(ParseValueError::new("a path may not contain a NUL byte"));
    }
    if text.starts_with('~') {
        return Err(ParseValueError::new(
            "`~` is not expanded here: write the full path",
        ));
    }
    Ok(PathBuf::from(text))
}

/// `value` as a path when it is an absolute one.
fn absolute(value: Option<&OsStr>) -> Option<&Path> {
    value.map(Path::new).filter(|path| path.is_absolute())
}

/// Where compiled WASM modules are cached (`wasm.cache_dir`, when not `null`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(into = "String")]
pub enum CacheDir {
    /// `auto`: `$XDG_CACHE_HOME/dataplane/modules`, else `$HOME/.cache/dataplane/modules`,
    /// resolved from the environment when used ([`crate::WasmConfig::cache_dir_path`]).
    #[default]
    Auto,
    /// This directory (created if missing); a relative path is kept as written. A directory
    /// literally named `auto` is written `./auto`.
    Path(PathBuf),
}

impl CacheDir {
    /// The directory `self` names, with [`CacheDir::Auto`] resolved from the values of
    /// `XDG_CACHE_HOME` and `HOME`. Each counts only when it is an absolute path (the XDG
    /// rule); `None` when `Auto` finds neither.
    #[must_use]
    pub fn resolve(&self, xdg_cache_home: Option<&OsStr>, home: Option<&OsStr>) -> Option<PathBuf> {
        match self {
            Self::Path(path) => Some(path.clone()),
            Self::Auto => absolute(xdg_cache_home)
                .map(Path::to_path_buf)
                .or_else(|| absolute(home).map(|home| home.join(".cache")))
                .map(|cache| cache.join("dataplane").join("modules")),
        }
    }
}

impl FromStr for CacheDir {
    type Err = ParseValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "auto" {
            return Ok(Self::Auto);
        }
        parse_path(text, "must be auto or a directory path").map(Self::Path)
    }
}

impl From<CacheDir> for String {
    fn from(dir: CacheDir) -> Self {
        dir.to_string()
    }
}

impl fmt::Display for CacheDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// When the WASM epoch ticker takes its fast pace (`wasm.ticker_pace`), which batches
/// of messages for one agent need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TickerPace {
    /// Fast while batches run or wait: an idle node stays quiet.
    #[default]
    Adaptive,
    /// Always fast: batches from the first message after a quiet spell.
    Fast,
}

impl TickerPace {
    /// The spelling used in YAML.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Adaptive => "adaptive",
            Self::Fast => "fast",
        }
    }
}

impl FromStr for TickerPace {
    type Err = ParseValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "adaptive" => Ok(Self::Adaptive),
            "fast" => Ok(Self::Fast),
            _ => Err(ParseValueError::new("must be adaptive or fast")),
        }
    }
}

impl fmt::Display for TickerPace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How JIT-compiled WASM code is named for profilers (`wasm.profiling`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum WasmProfiling {
    /// No profiler support.
    #[default]
    None,
    /// Write `/tmp/perf-<pid>.map`, read by `perf report` and flame graphs.
    #[value(name = "perfmap")]
    PerfMap,
    /// Write a jitdump file, for `perf inject --jit`.
    #[value(name = "jitdump")]
    JitDump,
}

impl WasmProfiling {
    /// The spelling used in YAML and on the command line.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::PerfMap => "perfmap",
            Self::JitDump => "jitdump",
        }
    }
}

impl FromStr for WasmProfiling {
    type Err = ParseValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(Self::None),
            "perfmap" => Ok(Self::PerfMap),
            "jitdump" => Ok(Self::JitDump),
            _ => Err(ParseValueError::new("must be none, perfmap or jitdump")),
        }
    }
}

impl fmt::Display for WasmProfiling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shard_count_parses_auto_and_numbers() {
        assert_eq!("auto".parse(), Ok(ShardCount::Auto));
        assert_eq!(
            "4".parse::<ShardCount>().map(|c| c.to_string()),
            Ok("4".to_owned())
        );
        for bad in ["0", "-1", "1025", "Auto", "", "4.0"] {
            let error = bad.parse::<ShardCount>().unwrap_err();
            assert_eq!(
                error.reason, "must be \"auto\" or a number between 1 and 1024",
                "{bad}"
            );
        }
    }

    #[test]
    fn cpu_list_accepts_linux_syntax() {
        let list: CpuList = "2-7,10".parse().unwrap();
        assert_eq!(list.cpus(), &[2, 3, 4, 5, 6, 7, 10]);
        assert_eq!(list.len().get(), 7);
        assert_eq!(list.to_string(), "2-7,10");
        let list: CpuList = "10,0".parse().unwrap();
        assert_eq!(list.cpus(), &[0, 10]);
    }

    #[test]
    fn cpu_list_refuses_bad_syntax() {
        let cases = [
            ("", "must name at least one CPU, e.g. 2-7,10"),
            ("2-", "`` is not a CPU index (expected e.g. 2-7,10)"),
            ("2 ,3", "`2 ` is not a CPU index (expected e.g. 2-7,10)"),
            ("7-2", "range `7-2` runs backwards"),
            ("1-3,2", "CPU 2 is listed twice"),
            ("8192", "CPU 8192 is above the highest index 8191"),
            ("a", "`a` is not a CPU index (expected e.g. 2-7,10)"),
        ];
        for (text, reason) in cases {
            assert_eq!(
                text.parse::<CpuList>().unwrap_err().reason,
                reason,
                "{text:?}"
            );
        }
    }

    #[test]
    fn power_of_two_helpers() {
        let ring = PowerOfTwo::new(1024).unwrap();
        assert_eq!((ring.get(), ring.mask(), ring.log2()), (1024, 1023, 10));
        assert_eq!(PowerOfTwo::new(0), None);
        assert_eq!(PowerOfTwo::new(1000), None);
    }

    #[test]
    fn agent_id_rules() {
        assert!("echo-1.a_B".parse::<AgentId>().is_ok());
        assert!("a".repeat(64).parse::<AgentId>().is_ok());
        assert_eq!(
            "".parse::<AgentId>().unwrap_err().reason,
            "must be 1 to 64 bytes long"
        );
        assert!("a".repeat(65).parse::<AgentId>().is_err());
        let error = "a b".parse::<AgentId>().unwrap_err();
        assert_eq!(error.reason, "may only contain A-Z a-z 0-9 . _ -");
        assert!("é".parse::<AgentId>().is_err());
    }

    #[test]
    fn enums_round_trip_through_text() {
        for policy in [IdlePolicy::BusyPoll, IdlePolicy::Park] {
            assert_eq!(policy.to_string().parse(), Ok(policy));
        }
        for kind in AgentKind::ALL {
            assert_eq!(kind.to_string().parse(), Ok(kind));
        }
        for profiling in [
            WasmProfiling::None,
            WasmProfiling::PerfMap,
            WasmProfiling::JitDump,
        ] {
            assert_eq!(profiling.to_string().parse(), Ok(profiling));
        }
        assert!("spin".parse::<IdlePolicy>().is_err());
        assert!("native".parse::<AgentKind>().is_err());
        assert!("perf-map".parse::<WasmProfiling>().is_err());
        for pace in [TickerPace::Adaptive, TickerPace::Fast] {
            assert_eq!(pace.to_string().parse(), Ok(pace));
        }
        assert!("slow".parse::<TickerPace>().is_err());
        assert_eq!(AgentKind::NATIVE.len() + 1, AgentKind::ALL.len());
        assert!(AgentKind::NATIVE.iter().all(|kind| kind.is_native()));
        assert!(!AgentKind::Wasm.is_native());
    }

    #[test]
    fn module_source_syntax() {
        let builtin = |name: &str| Ok(ModuleSource::Builtin(name.to_owned()));
        assert_eq!("builtin:echo".parse(), builtin("echo"));
        assert_eq!("builtin:echo-c".parse(), builtin("echo-c"));
        assert_eq!("builtin:order_book2".parse(), builtin("order_book2"));
        let name = "a".repeat(64);
        assert_eq!(format!("builtin:{name}").parse(), builtin(&name));
        for bad in [
            "builtin:",
            "builtin:Echo",
            "builtin:echo.wasm",
            "builtin: echo",
        ] {
            let error = bad.parse::<ModuleSource>().unwrap_err();
            assert_eq!(
                error.reason,
                "a built-in module name is 1 to 64 bytes of a-z 0-9 _ - (e.g. builtin:echo)",
                "{bad}"
            );
        }
        assert!(format!("builtin:{name}a").parse::<ModuleSource>().is_err());
        assert_eq!(
            "agents/echo.wasm".parse(),
            Ok(ModuleSource::File("agents/echo.wasm".into()))
        );
        assert_eq!(
            "/opt/a b/x.wasm".parse(),
            Ok(ModuleSource::File("/opt/a b/x.wasm".into()))
        );
        // Only the exact lowercase prefix marks a built-in; anything else is a path.
        assert_eq!(
            "Builtin:echo".parse(),
            Ok(ModuleSource::File("Builtin:echo".into()))
        );
        for text in ["builtin:echo-c", "x/y.wasm"] {
            assert_eq!(text.parse::<ModuleSource>().unwrap().to_string(), text);
        }
        let reasons = [
            (
                "",
                "must be a file path or builtin:NAME (e.g. builtin:echo)",
            ),
            ("~/a.wasm", "`~` is not expanded here: write the full path"),
            ("a\0b", "a path may not contain a NUL byte"),
        ];
        for (text, reason) in reasons {
            assert_eq!(
                text.parse::<ModuleSource>().unwrap_err().reason,
                reason,
                "{text:?}"
            );
        }
        let long = "a".repeat(4097);
        assert_eq!(
            long.parse::<ModuleSource>().unwrap_err().reason,
            "a path is at most 4096 bytes long"
        );
    }

    #[test]
    fn cache_dir_parses_and_resolves() {
        assert_eq!("auto".parse(), Ok(CacheDir::Auto));
        assert_eq!("./auto".parse(), Ok(CacheDir::Path("./auto".into())));
        assert_eq!(
            "".parse::<CacheDir>().unwrap_err().reason,
            "must be auto or a directory path"
        );
        assert!("~/.cache".parse::<CacheDir>().is_err());
        let os = |text: &'static str| Some(OsStr::new(text));
        let auto = CacheDir::Auto;
        assert_eq!(
            auto.resolve(os("/xdg"), os("/home/u")),
            Some("/xdg/dataplane/modules".into())
        );
        assert_eq!(
            auto.resolve(None, os("/home/u")),
            Some("/home/u/.cache/dataplane/modules".into())
        );
        // XDG: a relative or empty value is ignored.
        assert_eq!(
            auto.resolve(os("rel"), os("/home/u")),
            Some("/home/u/.cache/dataplane/modules".into())
        );
        assert_eq!(
            auto.resolve(os(""), os("/home/u")),
            Some("/home/u/.cache/dataplane/modules".into())
        );
        assert_eq!(auto.resolve(None, None), None);
        assert_eq!(auto.resolve(os(""), os("")), None);
        let path = CacheDir::Path("rel/cache".into());
        assert_eq!(path.resolve(os("/xdg"), None), Some("rel/cache".into()));
        assert_eq!(path.to_string(), "rel/cache");
    }
}
