//! `dataplane_agent`: the Rust guest SDK for the dataplane agent ABI, version 1.
//!
//! The contract is `docs/agent-abi.md`; this crate is a thin, safe layer over exactly what
//! it says. It has no dependencies and does not need `std` or an allocator (it is
//! `no_std`; agents may use `std` or not), and it compiles with Rust 1.63 (Debian 12's
//! `rustc`, the one that has the `wasm32-unknown-unknown` standard library):
//!
//! ```text
//! rustc --edition 2021 --crate-type rlib --crate-name dataplane_agent \
//!       --target wasm32-unknown-unknown -C opt-level=3 -C panic=abort \
//!       -o libdataplane_agent.rlib dataplane_agent.rs
//! rustc --edition 2021 --crate-type cdylib --target wasm32-unknown-unknown \
//!       -C opt-level=3 -C panic=abort --extern dataplane_agent=libdataplane_agent.rlib \
//!       -o echo.wasm echo.rs
//! ```
//!
//! An agent is a type implementing [`Agent`], exported with [`export_agent!`]:
//!
//! ```ignore
//! use dataplane_agent::{export_agent, reply, Agent, Message, Performative};
//!
//! struct Echo;
//!
//! impl Agent for Echo {
//!     fn init(_config: &[u8]) -> Result<Self, i32> {
//!         Ok(Echo)
//!     }
//!     fn on_message(&mut self, msg: &Message<'_>) -> Result<(), i32> {
//!         if !msg.is_reply() {
//!             reply(Performative::Inform, msg.payload()).map_err(|e| e.code())?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! export_agent!(Echo);
//! ```
//!
//! The macro defines the exports `dp_inbox`, `dp_init`, `dp_on_message`, `dp_on_batch`
//! (several messages per call, docs/agent-abi.md "Batches") and `dp_on_stop`,
//! keeps the agent in a static, and hands each call a [`Message`] view of the inbox: the
//! header parsed into a [`Header`] (48 bytes, little-endian), the payload borrowed in
//! place. Nothing is allocated per message and nothing is formatted.
//!
//! The inbox is a static zero-initialised buffer when the host asks for the default
//! capacity (48 + 65456 bytes): part of the initial memory, so a spawn costs no
//! `memory.grow`. A larger capacity is taken straight from `memory.grow` (rounded up to
//! 64 KiB pages). Either way it never shares memory with the allocator, and its pages stay
//! untouched (not resident) until the host writes a message that reaches them.
//!
//! Outside `wasm32` (unit tests of agent logic on the build machine) the host functions
//! are inert stand-ins: `send` and `reply` succeed and do nothing, `log` discards,
//! `now_ns` and `self_id` return 0, `random` is a fixed sequence. `dp_inbox` refuses.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]

/// The ABI version this SDK speaks (the `1` of `dataplane_v1`).
pub const ABI_VERSION: u32 = 1;

/// The import module of every host function.
pub const IMPORT_MODULE: &str = "dataplane_v1";

/// Bytes of the message header at the start of the inbox and at the `header` address of
/// `send`.
pub const HEADER_BYTES: usize = 48;

// ---------------------------------------------------------------------------------------
// Agent ids.

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The 64-bit FNV-1a hash of `bytes` (the agent id function of the ABI).
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    hash
}

/// An agent's id: the FNV-1a hash of its name. Passed to and from the host as an `i64`
/// carrying the same 64 bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct AgentId(pub u64);

impl AgentId {
    /// The id of the agent named `name`.
    pub const fn from_name(name: &str) -> AgentId {
        AgentId(fnv1a(name.as_bytes()))
    }

    /// The id of the agent whose name is the UTF-8 bytes `name`.
    pub const fn from_name_bytes(name: &[u8]) -> AgentId {
        AgentId(fnv1a(name))
    }

    /// The 64 bits.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// The id of the agent named `name`; usable in constants:
/// `const ECHO: AgentId = agent_id("echo");`.
pub const fn agent_id(name: &str) -> AgentId {
    AgentId::from_name(name)
}

// ---------------------------------------------------------------------------------------
// Header fields.

/// What a message means (FIPA-style), byte 32 of the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Performative {
    /// Asks the addressee to do something; expects a reply.
    Request = 0,
    /// States a fact; also the usual answer to a request.
    Inform = 1,
    /// Asks for information without changing anything.
    Query = 2,
    /// Proposes something.
    Propose = 3,
    /// Accepts a proposal or request.
    Agree = 4,
    /// Declines a request (for example because it is malformed).
    Refuse = 5,
    /// Something went wrong; with the `ERROR` flag the payload says what.
    Failure = 6,
    /// The addressee did not understand the message.
    NotUnderstood = 7,
}

impl Performative {
    /// The performative numbered `value`, if the ABI defines it.
    pub const fn from_u8(value: u8) -> Option<Performative> {
        Some(match value {
            0 => Performative::Request,
            1 => Performative::Inform,
            2 => Performative::Query,
            3 => Performative::Propose,
            4 => Performative::Agree,
            5 => Performative::Refuse,
            6 => Performative::Failure,
            7 => Performative::NotUnderstood,
            _ => return None,
        })
    }

    /// Its number in the ABI.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// Delivery priority, byte 33 of the header. Lower numbers go first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Priority {
    /// Before everything else.
    Critical = 0,
    /// Before normal traffic.
    High = 1,
    /// The default.
    #[default]
    Normal = 2,
    /// After everything else.
    Low = 3,
}

impl Priority {
    /// The priority numbered `value`, if the ABI defines it.
    pub const fn from_u8(value: u8) -> Option<Priority> {
        Some(match value {
            0 => Priority::Critical,
            1 => Priority::High,
            2 => Priority::Normal,
            3 => Priority::Low,
            _ => return None,
        })
    }

    /// Its number in the ABI.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// The header's flag bits (bytes 34..36).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u16);

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);
    /// Bit 0: the message answers an earlier one.
    pub const REPLY: Flags = Flags(1);
    /// Bit 1: the payload is a UTF-8 error description.
    pub const ERROR: Flags = Flags(2);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets of bits.
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }
}

impl core::ops::BitOr for Flags {
    type Output = Flags;

    fn bitor(self, other: Flags) -> Flags {
        self.union(other)
    }
}

// ---------------------------------------------------------------------------------------
// The header and the message view.

#[inline(always)]
fn u64_at(bytes: &[u8; HEADER_BYTES], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// A received message's header, parsed from the 48 little-endian bytes of the ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The addressee (this agent).
    pub to: AgentId,
    /// The sender; replies go there.
    pub from: AgentId,
    /// Groups the messages of one exchange.
    pub conversation_id: u64,
    /// A reply carries its request's value.
    pub correlation_id: u64,
    /// What the message means.
    pub performative: Performative,
    /// Its delivery priority.
    pub priority: Priority,
    /// `REPLY`, `ERROR`.
    pub flags: Flags,
    /// Bytes of payload after the header.
    pub payload_len: u32,
}

impl Header {
    /// Parses the ABI layout; `None` when the performative or the priority is out of range
    /// (the host never delivers such a header).
    pub fn parse(bytes: &[u8; HEADER_BYTES]) -> Option<Header> {
        Some(Header {
            to: AgentId(u64_at(bytes, 0)),
            from: AgentId(u64_at(bytes, 8)),
            conversation_id: u64_at(bytes, 16),
            correlation_id: u64_at(bytes, 24),
            performative: Performative::from_u8(bytes[32])?,
            priority: Priority::from_u8(bytes[33])?,
            flags: Flags(u16::from_le_bytes([bytes[34], bytes[35]])),
            payload_len: u32::from_le_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]),
        })
    }

    /// The ABI layout of this header (the reserved bytes zero).
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[0..8].copy_from_slice(&self.to.0.to_le_bytes());
        out[8..16].copy_from_slice(&self.from.0.to_le_bytes());
        out[16..24].copy_from_slice(&self.conversation_id.to_le_bytes());
        out[24..32].copy_from_slice(&self.correlation_id.to_le_bytes());
        out[32] = self.performative as u8;
        out[33] = self.priority as u8;
        out[34..36].copy_from_slice(&self.flags.0.to_le_bytes());
        out[36..40].copy_from_slice(&self.payload_len.to_le_bytes());
        out
    }
}

/// The message being handled: its header and its payload, borrowed from the inbox for
/// the length of one `on_message` call. Copy out what you want to keep.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    header: Header,
    payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// A message from a parsed header and its payload (the SDK builds these from the
    /// inbox; tests can build their own).
    pub fn new(header: Header, payload: &'a [u8]) -> Message<'a> {
        Message { header, payload }
    }

    /// Parses `bytes` laid out like the inbox: the header, then `payload_len` bytes of
    /// payload. `None` if the header is invalid or `bytes` is too short.
    pub fn parse(bytes: &'a [u8]) -> Option<Message<'a>> {
        let head: &[u8; HEADER_BYTES] = bytes.get(..HEADER_BYTES)?.try_into().ok()?;
        let header = Header::parse(head)?;
        let end = HEADER_BYTES.checked_add(header.payload_len as usize)?;
        let payload = bytes.get(HEADER_BYTES..end)?;
        Some(Message { header, payload })
    }

    /// The whole header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The sender.
    pub fn from(&self) -> AgentId {
        self.header.from
    }

    /// The addressee (this agent).
    pub fn to(&self) -> AgentId {
        self.header.to
    }

    /// What the message means.
    pub fn performative(&self) -> Performative {
        self.header.performative
    }

    /// Its priority.
    pub fn priority(&self) -> Priority {
        self.header.priority
    }

    /// Its flags.
    pub fn flags(&self) -> Flags {
        self.header.flags
    }

    /// The conversation it belongs to.
    pub fn conversation_id(&self) -> u64 {
        self.header.conversation_id
    }

    /// Its correlation id.
    pub fn correlation_id(&self) -> u64 {
        self.header.correlation_id
    }

    /// Whether it answers an earlier message (`REPLY` set). Do not reply to replies.
    pub fn is_reply(&self) -> bool {
        self.header.flags.contains(Flags::REPLY)
    }

    /// Whether the payload is an error description (`ERROR` set).
    pub fn is_error(&self) -> bool {
        self.header.flags.contains(Flags::ERROR)
    }
}

/// The header of a message to send: the fields of the ABI header the sender chooses
/// (`from` and `payload_len` are the host's). Build it with [`OutHeader::new`] and the
/// chaining setters, which are `const`, so whole headers can be constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutHeader {
    /// The addressee.
    pub to: AgentId,
    /// What the message means.
    pub performative: Performative,
    /// Its delivery priority.
    pub priority: Priority,
    /// Flag bits.
    pub flags: Flags,
    /// The conversation it belongs to.
    pub conversation_id: u64,
    /// The value its reply will carry.
    pub correlation_id: u64,
}

impl OutHeader {
    /// A message to `to` meaning `performative`: normal priority, no flags, ids 0.
    pub const fn new(to: AgentId, performative: Performative) -> OutHeader {
        OutHeader {
            to,
            performative,
            priority: Priority::Normal,
            flags: Flags::NONE,
            conversation_id: 0,
            correlation_id: 0,
        }
    }

    /// With priority `priority`.
    pub const fn priority(mut self, priority: Priority) -> OutHeader {
        self.priority = priority;
        self
    }

    /// With flags `flags`.
    pub const fn flags(mut self, flags: Flags) -> OutHeader {
        self.flags = flags;
        self
    }

    /// In conversation `id`.
    pub const fn conversation(mut self, id: u64) -> OutHeader {
        self.conversation_id = id;
        self
    }

    /// With correlation id `id`.
    pub const fn correlation(mut self, id: u64) -> OutHeader {
        self.correlation_id = id;
        self
    }

    /// The ABI layout for a payload of `payload_len` bytes (`from` zero).
    pub fn encode(&self, payload_len: u32) -> [u8; HEADER_BYTES] {
        Header {
            to: self.to,
            from: AgentId(0),
            conversation_id: self.conversation_id,
            correlation_id: self.correlation_id,
            performative: self.performative,
            priority: self.priority,
            flags: self.flags,
            payload_len,
        }
        .encode()
    }
}

// ---------------------------------------------------------------------------------------
// Errors of `send` and `reply`.

/// Why `send` or `reply` sent nothing (the negative codes of the ABI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendError {
    /// -1: an address or length is outside linear memory, or a header field is out of
    /// range. A bug in the agent.
    Invalid,
    /// -2: the addressee's mailbox, the queue to its shard or the frame pool is full.
    /// Retry on a later message; never spin.
    Backpressure,
    /// -3: the payload exceeds `message_bytes_max`.
    TooLarge,
    /// -4: the addressee would live on this shard and is not deployed.
    UnknownAgent,
    /// -5: `reply` outside `dp_on_message`.
    NoMessage,
    /// -6: this call already sent `sends_per_message_max` messages.
    SendLimit,
    /// A code ABI version 1 does not define.
    Other(i32),
}

impl SendError {
    /// The error for a non-zero return code.
    pub const fn from_code(code: i32) -> SendError {
        match code {
            -1 => SendError::Invalid,
            -2 => SendError::Backpressure,
            -3 => SendError::TooLarge,
            -4 => SendError::UnknownAgent,
            -5 => SendError::NoMessage,
            -6 => SendError::SendLimit,
            other => SendError::Other(other),
        }
    }

    /// `Ok` for 0, else the error.
    #[inline]
    pub const fn check(code: i32) -> Result<(), SendError> {
        if code == 0 {
            Ok(())
        } else {
            Err(SendError::from_code(code))
        }
    }

    /// The ABI code, handy as the agent's own error code: `.map_err(SendError::code)?`.
    pub const fn code(self) -> i32 {
        match self {
            SendError::Invalid => -1,
            SendError::Backpressure => -2,
            SendError::TooLarge => -3,
            SendError::UnknownAgent => -4,
            SendError::NoMessage => -5,
            SendError::SendLimit => -6,
            SendError::Other(code) => code,
        }
    }

    /// The ABI's name for it (`"BACKPRESSURE"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            SendError::Invalid => "INVALID",
            SendError::Backpressure => "BACKPRESSURE",
            SendError::TooLarge => "TOO_LARGE",
            SendError::UnknownAgent => "UNKNOWN_AGENT",
            SendError::NoMessage => "NO_MESSAGE",
            SendError::SendLimit => "SEND_LIMIT",
            SendError::Other(_) => "UNKNOWN_CODE",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Host functions.

/// Level of a [`log`] line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i32)]
pub enum Level {
    /// 0.
    Error = 0,
    /// 1.
    Warn = 1,
    /// 2.
    Info = 2,
    /// 3.
    Debug = 3,
    /// 4.
    Trace = 4,
}

#[cfg(target_arch = "wasm32")]
mod host {
    // The `dataplane_v1` imports. Item names are prefixed so they cannot collide with
    // other symbols of the same name (compiler_builtins defines `log`, the f64 logarithm);
    // `link_name` sets the import's field name.
    #[link(wasm_import_module = "dataplane_v1")]
    extern "C" {
        #[link_name = "send"]
        pub fn dp_send(header: *const u8, payload: *const u8, payload_len: usize) -> i32;
        #[link_name = "reply"]
        pub fn dp_reply(performative: i32, payload: *const u8, payload_len: usize) -> i32;
        #[link_name = "log"]
        pub fn dp_log(level: i32, text: *const u8, text_len: usize);
        #[link_name = "now_ns"]
        pub fn dp_now_ns() -> i64;
        #[link_name = "self_id"]
        pub fn dp_self_id() -> i64;
        #[link_name = "random"]
        pub fn dp_random() -> i64;
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    //! Inert stand-ins so agent logic can be unit-tested natively (see the crate docs).
    //! `unsafe` only to match the signatures of the real imports.

    use core::sync::atomic::{AtomicU64, Ordering};

    static RANDOM: AtomicU64 = AtomicU64::new(0);

    pub unsafe fn dp_send(_header: *const u8, _payload: *const u8, _payload_len: usize) -> i32 {
        0
    }
    pub unsafe fn dp_reply(_performative: i32, _payload: *const u8, _payload_len: usize) -> i32 {
        0
    }
    pub unsafe fn dp_log(_level: i32, _text: *const u8, _text_len: usize) {}
    pub unsafe fn dp_now_ns() -> i64 {
        0
    }
    pub unsafe fn dp_self_id() -> i64 {
        0
    }
    pub unsafe fn dp_random() -> i64 {
        // splitmix64 over a counter: a fixed sequence.
        let mut z = RANDOM
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as i64
    }
}

/// Sends a new message with `payload` (copied by the host before it returns).
#[inline]
pub fn send(header: &OutHeader, payload: &[u8]) -> Result<(), SendError> {
    let len = match u32::try_from(payload.len()) {
        Ok(len) => len,
        Err(_) => return Err(SendError::TooLarge),
    };
    let bytes = header.encode(len);
    // SAFETY: both pointers come from live slices of `bytes.len()` and `payload.len()`
    // bytes in this module's linear memory; the host only reads them, during the call.
    let code = unsafe { host::dp_send(bytes.as_ptr(), payload.as_ptr(), payload.len()) };
    SendError::check(code)
}

/// Answers the message being handled: to its sender, in its conversation, with its
/// correlation id and priority, `REPLY` set. Only valid inside `on_message`
/// ([`SendError::NoMessage`] elsewhere).
#[inline]
pub fn reply(performative: Performative, payload: &[u8]) -> Result<(), SendError> {
    // SAFETY: the pointer and length come from a live slice in this module's memory; the
    // host only reads it, during the call.
    let code = unsafe {
        host::dp_reply(
            i32::from(performative.as_u8()),
            payload.as_ptr(),
            payload.len(),
        )
    };
    SendError::check(code)
}

/// Writes a log line at `level` (the host cuts it at 1024 bytes).
#[inline]
pub fn log(level: Level, text: &str) {
    // SAFETY: pointer and length of a live `str` in this module's memory; read only.
    unsafe { host::dp_log(level as i32, text.as_ptr(), text.len()) }
}

/// Monotonic nanoseconds: when the shard started this batch of messages.
#[inline]
pub fn now_ns() -> u64 {
    // SAFETY: no arguments; the host only returns a value.
    unsafe { host::dp_now_ns() as u64 }
}

/// This agent's id.
#[inline]
pub fn self_id() -> AgentId {
    // SAFETY: no arguments; the host only returns a value.
    AgentId(unsafe { host::dp_self_id() } as u64)
}

/// 64 pseudo-random bits from the agent's seeded generator (deterministic for a seed and
/// a message order; not for cryptography).
#[inline]
pub fn random() -> u64 {
    // SAFETY: no arguments; the host only returns a value.
    unsafe { host::dp_random() as u64 }
}

/// The largest payload this agent may receive or send (`message_bytes_max`), known once
/// the host has asked for the inbox; 0 before that.
#[inline]
pub fn max_payload() -> usize {
    rt::capacity().saturating_sub(HEADER_BYTES)
}

// ---------------------------------------------------------------------------------------
// The agent trait and its exports.

/// An agent: state plus a message handler. One instance per deployed agent, driven by the
/// exports [`export_agent!`] defines; calls never overlap.
pub trait Agent: Sized {
    /// Builds the agent from its configuration (UTF-8 text, possibly empty). `Err(code)`
    /// refuses the deployment (or restart) with `code` (0 is reported as
    /// [`sdk_code::ZERO_ERROR`]).
    fn init(config: &[u8]) -> Result<Self, i32>;

    /// Handles one message. `Err(code)` counts the message as failed: unless it was a
    /// reply, its sender gets a `failure` naming `code`. The agent keeps running.
    fn on_message(&mut self, msg: &Message<'_>) -> Result<(), i32>;

    /// Called once before an orderly undeploy or shutdown (not after a trap).
    fn on_stop(&mut self) {}
}

/// Codes the SDK itself returns from `dp_init` and `dp_on_message`: -1000 and below,
/// so they do not collide with an agent's own codes (use small positive ones).
pub mod sdk_code {
    /// The agent returned `Err(0)`, which the ABI would read as success.
    pub const ZERO_ERROR: i32 = -1000;
    /// `dp_on_message` before a successful `dp_init`.
    pub const NOT_INITIALIZED: i32 = -1001;
    /// The header in the inbox has an out-of-range performative or priority.
    pub const BAD_HEADER: i32 = -1002;
    /// `dp_init` or `dp_on_message` before `dp_inbox`.
    pub const NO_INBOX: i32 = -1003;
}

#[inline(always)]
fn nonzero(code: i32) -> i32 {
    if code == 0 {
        sdk_code::ZERO_ERROR
    } else {
        code
    }
}

/// The machinery behind [`export_agent!`]; not a stable interface.
#[doc(hidden)]
pub mod rt {
    use super::{nonzero, sdk_code, Agent, Header, Message, HEADER_BYTES};

    /// Bytes of the static inbox: the default `capacity` (48 + 65456).
    const STATIC_INBOX_BYTES: usize = 48 + 65_456;

    /// The static inbox, in zero-initialised data: its pages stay untouched (not
    /// resident) until a message reaches them.
    #[repr(C, align(8))]
    struct StaticInbox([u8; STATIC_INBOX_BYTES]);

    /// What the SDK keeps between calls, in one static: the capacity the host asked for
    /// last, the inbox's address and capacity, then the static inbox.
    ///
    /// One object, so the small fields share a host page with each other (the alignment
    /// keeps them from straddling one) and with the inbox's first bytes; and `dp_inbox`
    /// writes `requested` before it reads anything. A spawn then makes the host kernel
    /// fault that page in once, writable, instead of faulting in two scattered pages, one
    /// of them twice (first as the shared zero page on a read, then again on the write).
    /// In a fresh pool slot each fault costs 2 to 3 µs (docs/benchmarks.md).
    #[repr(C, align(32))]
    struct Runtime {
        /// The capacity of the last `dp_inbox` request: written first (see above).
        requested: usize,
        /// The inbox's address (null before `dp_inbox`).
        inbox: *mut u8,
        /// The inbox's capacity (0 before `dp_inbox`).
        capacity: usize,
        static_inbox: StaticInbox,
    }

    static mut RT: Runtime = Runtime {
        requested: 0,
        inbox: core::ptr::null_mut(),
        capacity: 0,
        static_inbox: StaticInbox([0; STATIC_INBOX_BYTES]),
    };

    /// The inbox's capacity (0 before `dp_inbox`).
    #[inline(always)]
    pub fn capacity() -> usize {
        // SAFETY: a plain read of a word; the module is single-threaded and nothing holds
        // a reference to the static.
        unsafe { RT.capacity }
    }

    /// Bytes of a WebAssembly page.
    #[cfg(target_arch = "wasm32")]
    const PAGE: usize = 65536;

    /// Fresh zeroed pages for at least `bytes` bytes, straight from `memory.grow`, so
    /// they never overlap the allocator's heap, the stack or static data.
    #[cfg(target_arch = "wasm32")]
    fn grow(bytes: usize) -> *mut u8 {
        let pages = bytes / PAGE + usize::from(bytes % PAGE != 0);
        let old = core::arch::wasm32::memory_grow(0, pages);
        if old == usize::MAX {
            core::ptr::null_mut()
        } else {
            (old * PAGE) as *mut u8
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn grow(_bytes: usize) -> *mut u8 {
        core::ptr::null_mut()
    }

    /// `dp_inbox(capacity)`: the inbox's address, or 0 to refuse.
    pub fn inbox(capacity: i32) -> i32 {
        if capacity < HEADER_BYTES as i32 {
            return 0;
        }
        let capacity = capacity as usize;
        // SAFETY: single-threaded, and the static is only read and written by value here
        // and in `capacity`/`inbox_bytes`, never borrowed.
        unsafe {
            // The first touch of the page is this write (see `Runtime`); the fence keeps
            // the compiler from moving it after the reads below.
            RT.requested = capacity;
            core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
            if RT.inbox.is_null() || RT.capacity < capacity {
                // The default capacity fits the static inbox, which is part of the
                // initial memory: no `memory.grow` (a system call in the host) at spawn.
                // A larger request, or a second one (the ABI asks once), grows memory.
                if RT.inbox.is_null() && capacity <= STATIC_INBOX_BYTES {
                    RT.inbox = core::ptr::addr_of_mut!(RT.static_inbox.0).cast::<u8>();
                    RT.capacity = capacity;
                    return RT.inbox as usize as i32;
                }
                let address = grow(capacity);
                if address.is_null() {
                    return 0;
                }
                RT.inbox = address;
                RT.capacity = capacity;
            }
            RT.inbox as usize as i32
        }
    }

    /// The first `len` inbox bytes (clamped to the capacity), or `None` before
    /// `dp_inbox`.
    ///
    /// # Safety
    ///
    /// The slice must not outlive the current call from the host (the host rewrites the
    /// inbox between calls) and must not be used while anything writes the inbox (only
    /// the host does, between calls).
    #[inline(always)]
    unsafe fn inbox_bytes<'a>(len: usize) -> Option<&'a [u8]> {
        // SAFETY: plain reads of the static (see `inbox`).
        let (address, capacity) = unsafe { (RT.inbox, RT.capacity) };
        if address.is_null() {
            return None;
        }
        // SAFETY: `address` is the start of `capacity` bytes reserved for the inbox alone
        // (the static inbox, or pages `grow` took from `memory.grow`), and linear memory never shrinks; the host
        // filled the first `len` bytes before this call and writes nothing during it; the
        // caller bounds the lifetime to the call.
        Some(unsafe { core::slice::from_raw_parts(address, len.min(capacity)) })
    }

    /// `dp_init(config_len)`.
    pub fn init<A: Agent>(slot: &mut Option<A>, config_len: i32) -> i32 {
        // SAFETY: the slice lives only during this call, in which the host writes nothing.
        let config = match unsafe { inbox_bytes(config_len.max(0) as usize) } {
            Some(config) => config,
            None => return sdk_code::NO_INBOX,
        };
        match A::init(config) {
            Ok(agent) => {
                *slot = Some(agent);
                0
            }
            Err(code) => nonzero(code),
        }
    }

    /// `dp_on_message(payload_len)`.
    #[inline(always)]
    pub fn message<A: Agent>(slot: &mut Option<A>, payload_len: i32) -> i32 {
        let agent = match slot.as_mut() {
            Some(agent) => agent,
            None => return sdk_code::NOT_INITIALIZED,
        };
        let len = HEADER_BYTES.saturating_add(payload_len.max(0) as usize);
        // SAFETY: the slice lives only during this call, in which the host writes nothing.
        let bytes = match unsafe { inbox_bytes(len) } {
            Some(bytes) => bytes,
            None => return sdk_code::NO_INBOX,
        };
        let (head, payload) = match (bytes.get(..HEADER_BYTES), bytes.get(HEADER_BYTES..)) {
            (Some(head), Some(payload)) => (head, payload),
            _ => return sdk_code::BAD_HEADER,
        };
        let header = match head.try_into().ok().and_then(Header::parse) {
            Some(header) => header,
            None => return sdk_code::BAD_HEADER,
        };
        match agent.on_message(&Message::new(header, payload)) {
            Ok(()) => 0,
            Err(code) => nonzero(code),
        }
    }

    /// `dp_on_batch(count)`: `count` messages laid out after an 8-byte prefix, each its
    /// header, its payload and padding to 8. Before each message the progress index (the
    /// prefix's first `u32`) is set to its position, so the host knows which message a
    /// `reply` answers and which one failed. Stops at the first error and returns its
    /// code; the host keeps the messages after it.
    pub fn batch<A: Agent>(slot: &mut Option<A>, count: i32) -> i32 {
        let agent = match slot.as_mut() {
            Some(agent) => agent,
            None => return sdk_code::NOT_INITIALIZED,
        };
        // SAFETY: plain reads of the static (see `inbox`).
        let (address, capacity) = unsafe { (RT.inbox, RT.capacity) };
        if address.is_null() || capacity < BATCH_PREFIX_BYTES {
            return sdk_code::NO_INBOX;
        }
        // SAFETY: the records start after the prefix, inside the `capacity` bytes reserved
        // for the inbox; the host filled them before this call and writes nothing during
        // it. The prefix, which this function writes, is not part of the slice.
        let records = unsafe {
            core::slice::from_raw_parts(
                address.add(BATCH_PREFIX_BYTES),
                capacity - BATCH_PREFIX_BYTES,
            )
        };
        let progress = address.cast::<u32>();
        let mut offset = 0usize;
        for index in 0..count.max(0) as u32 {
            // SAFETY: the inbox is 8-byte aligned and at least 8 bytes long (checked
            // above); nothing else refers to its first word during this call.
            unsafe { core::ptr::write_volatile(progress, index) };
            let header = match records
                .get(offset..offset + HEADER_BYTES)
                .and_then(|head| head.try_into().ok())
                .and_then(Header::parse)
            {
                Some(header) => header,
                None => return sdk_code::BAD_HEADER,
            };
            let len = header.payload_len as usize;
            let start = offset + HEADER_BYTES;
            let payload = match start
                .checked_add(len)
                .and_then(|end| records.get(start..end))
            {
                Some(payload) => payload,
                None => return sdk_code::BAD_HEADER,
            };
            if let Err(code) = agent.on_message(&Message::new(header, payload)) {
                return nonzero(code);
            }
            // In bounds: the payload is, and the padding is less than 8 bytes.
            offset = start + len + (8 - len % 8) % 8;
        }
        0
    }

    /// Bytes before the first message of a batch: progress index, count.
    const BATCH_PREFIX_BYTES: usize = 8;

    /// `dp_on_stop()`.
    pub fn stop<A: Agent>(slot: &mut Option<A>) {
        if let Some(agent) = slot.as_mut() {
            agent.on_stop();
        }
    }
}

/// Defines the module's exports for the agent type `$agent` (which implements
/// [`Agent`]): `dp_inbox`, `dp_init`, `dp_on_message`, `dp_on_batch` and `dp_on_stop`. The instance
/// lives in a static. Use it once, at the crate root of a `cdylib`.
#[macro_export]
macro_rules! export_agent {
    ($agent:ty) => {
        const _: () = {
            static mut DP_AGENT: ::core::option::Option<$agent> = ::core::option::Option::None;

            #[export_name = "dp_inbox"]
            extern "C" fn dp_inbox(capacity: i32) -> i32 {
                $crate::rt::inbox(capacity)
            }

            #[export_name = "dp_init"]
            extern "C" fn dp_init(config_len: i32) -> i32 {
                // SAFETY: the host never overlaps calls into the instance and wasm32 is
                // single-threaded, so this is the only reference to DP_AGENT while it lives.
                let slot = unsafe { &mut *::core::ptr::addr_of_mut!(DP_AGENT) };
                $crate::rt::init::<$agent>(slot, config_len)
            }

            #[export_name = "dp_on_message"]
            extern "C" fn dp_on_message(payload_len: i32) -> i32 {
                // SAFETY: as in `dp_init`: calls never overlap, one thread.
                let slot = unsafe { &mut *::core::ptr::addr_of_mut!(DP_AGENT) };
                $crate::rt::message::<$agent>(slot, payload_len)
            }

            #[export_name = "dp_on_batch"]
            extern "C" fn dp_on_batch(count: i32) -> i32 {
                // SAFETY: as in `dp_init`: calls never overlap, one thread.
                let slot = unsafe { &mut *::core::ptr::addr_of_mut!(DP_AGENT) };
                $crate::rt::batch::<$agent>(slot, count)
            }

            #[export_name = "dp_on_stop"]
            extern "C" fn dp_on_stop() {
                // SAFETY: as in `dp_init`: calls never overlap, one thread.
                let slot = unsafe { &mut *::core::ptr::addr_of_mut!(DP_AGENT) };
                $crate::rt::stop::<$agent>(slot)
            }
        };
    };
}

/// Defines a `#[panic_handler]` that traps (`unreachable`), for `#![no_std]` agents. The
/// host answers the message with a `failure` and restarts the agent. Use it once, at the
/// crate root; `std` agents must not (std has its own).
#[macro_export]
macro_rules! panic_trap {
    () => {
        #[panic_handler]
        fn dp_panic(_info: &::core::panic::PanicInfo<'_>) -> ! {
            ::core::arch::wasm32::unreachable()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_are_fnv1a() {
        assert_eq!(agent_id("echo").get(), 0x3000_e560_2604_4164);
        assert_eq!(agent_id("").get(), FNV_OFFSET);
        const ECHO: AgentId = agent_id("echo");
        assert_eq!(ECHO, AgentId::from_name_bytes(b"echo"));
    }

    #[test]
    fn header_round_trips() {
        let header = Header {
            to: AgentId(0x0102_0304_0506_0708),
            from: AgentId(9),
            conversation_id: 10,
            correlation_id: 11,
            performative: Performative::Propose,
            priority: Priority::Low,
            flags: Flags::REPLY | Flags::ERROR,
            payload_len: 3,
        };
        let bytes = header.encode();
        assert_eq!(bytes[0], 0x08);
        assert_eq!(bytes[32], 3);
        assert_eq!(bytes[33], 3);
        assert_eq!(&bytes[34..36], &[3, 0]);
        assert_eq!(&bytes[36..40], &[3, 0, 0, 0]);
        assert_eq!(&bytes[40..], &[0; 8]);
        assert_eq!(Header::parse(&bytes), Some(header));

        let mut inbox = [0u8; 64];
        inbox[..48].copy_from_slice(&bytes);
        inbox[48..51].copy_from_slice(b"abc");
        let msg = Message::parse(&inbox).unwrap();
        assert_eq!(msg.payload(), b"abc");
        assert!(msg.is_reply() && msg.is_error());
        assert!(Message::parse(&inbox[..50]).is_none());
    }

    #[test]
    fn out_of_range_fields_are_refused() {
        let mut bytes = [0u8; HEADER_BYTES];
        assert!(Header::parse(&bytes).is_some());
        bytes[32] = 8;
        assert!(Header::parse(&bytes).is_none());
        bytes[32] = 0;
        bytes[33] = 4;
        assert!(Header::parse(&bytes).is_none());
    }

    #[test]
    fn out_header_encodes() {
        let h = OutHeader::new(agent_id("echo"), Performative::Query)
            .priority(Priority::High)
            .conversation(5)
            .correlation(6)
            .encode(7);
        let parsed = Header::parse(&h).unwrap();
        assert_eq!(parsed.to, agent_id("echo"));
        assert_eq!(parsed.from, AgentId(0));
        assert_eq!(parsed.performative, Performative::Query);
        assert_eq!(parsed.priority, Priority::High);
        assert_eq!((parsed.conversation_id, parsed.correlation_id), (5, 6));
        assert_eq!(parsed.payload_len, 7);
    }

    #[test]
    fn send_errors_map_codes() {
        for code in -6..=-1 {
            assert_eq!(SendError::from_code(code).code(), code);
        }
        assert_eq!(SendError::check(0), Ok(()));
        assert_eq!(SendError::check(-2), Err(SendError::Backpressure));
        assert_eq!(SendError::from_code(-9), SendError::Other(-9));
    }
}
