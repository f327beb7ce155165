//! A WASM agent: one wasmtime `Store` and instance behind the shard's [`Agent`] trait,
//! and the host functions of the ABI.
//!
//! The message path is: write the 48-byte header and the payload into the guest's inbox
//! (the one copy), set the epoch deadline, call `dp_on_message`. A guest's `send` reads
//! its header and payload straight out of linear memory into a frame buffer (the one copy
//! out). No allocation on either path.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use dataplane_frame::{AgentId, FrameError, Header};
use dataplane_shard::{Agent, AgentError, BatchOutcome, Context, Message, PoolError, SendError};
use wasmtime::{
    Caller, Linker, Memory, PoolConcurrencyLimitError, Store, StoreLimits, StoreLimitsBuilder,
    Trap, TypedFunc, UpdateDeadline,
};

use crate::abi::{self, code, HEADER_BYTES};
use crate::error::WasmError;
use crate::host::Host;
use crate::module::AgentModule;
use crate::ticker::{CallKind, TickerShared};

/// Per-agent limits (docs/agent-abi.md, "Limits").
#[derive(Debug, Clone)]
pub struct AgentLimits {
    /// Linear memory the agent may grow to.
    pub memory_bytes_max: u64,
    /// How long one call into the agent may run before it is interrupted.
    pub time_per_message: Duration,
    /// Largest payload in or out; the inbox is this plus the header.
    pub message_bytes_max: u32,
    /// Sends and replies per call.
    pub sends_per_message_max: u32,
}

impl Default for AgentLimits {
    fn default() -> Self {
        AgentLimits {
            memory_bytes_max: 16 << 20,
            time_per_message: Duration::from_millis(10),
            message_bytes_max: 64 * 1024 - 80,
            sends_per_message_max: 1024,
        }
    }
}

/// How an agent is started: its module, limits, configuration bytes and random seed.
/// Shared by every restart of the agent.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The module.
    pub module: Arc<AgentModule>,
    /// The limits.
    pub limits: AgentLimits,
    /// The bytes `dp_init` receives.
    pub config: Arc<[u8]>,
    /// Seed of the `random` host function; `None` seeds from the agent id.
    pub seed: Option<u64>,
}

/// What a store carries for the host functions.
pub struct AgentData {
    /// The shard context of the call in progress, null between calls. Set by
    /// [`WasmAgent::call`] just before entering the guest and cleared right after, so
    /// a host function (which only runs inside such a call) finds it valid.
    ctx: *mut Context<'static>,
    memory: Option<Memory>,
    limits: StoreLimits,
    in_message: bool,
    sends_left: u32,
    sends_per_message_max: u32,
    message_bytes_max: u32,
    rng: u64,
    agent: AgentId,
    /// The agent's time limit per call, in nanoseconds.
    time_per_message_ns: u64,
    /// The clock that times calls (the host's).
    clock: quanta::Clock,
    /// When the call in progress started, in `clock`'s raw units (checked against the
    /// limit by the epoch callback). Raw, because reading it is on every message's path.
    call_start_raw: u64,
    /// The batch in progress (`dp_on_batch`), if any.
    batch: BatchState,
}

/// What the host functions and the epoch callback need to know about a `dp_on_batch`
/// call: which message the guest is on (it writes the index at the inbox's start before
/// each message), and since when.
#[derive(Default)]
struct BatchState {
    /// A batch call is in progress.
    active: bool,
    /// The inbox address: the progress index is the `u32` there.
    inbox: usize,
    /// The headers of the batch's messages, in order.
    headers: Vec<Header>,
    /// The message the host functions last acted for (its sends are counted).
    index: u32,
    /// The message the epoch callback last saw, and when it first saw it.
    seen_index: u32,
    seen_raw: u64,
}

impl AgentData {
    /// The progress index the guest wrote at the start of the inbox.
    fn batch_progress(&self, memory: &[u8]) -> Option<u32> {
        let at = self.batch.inbox;
        let bytes = memory.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    }
}

/// Messages the host puts in one `dp_on_batch` call, at most.
pub const BATCH_MESSAGES_MAX: usize = 32;

impl std::fmt::Debug for AgentData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentData")
            .field("agent", &self.agent)
            .field("in_message", &self.in_message)
            .field("sends_left", &self.sends_left)
            .finish_non_exhaustive()
    }
}

impl AgentData {
    /// The context of the call in progress.
    fn ctx(&mut self) -> Option<&mut Context<'static>> {
        // SAFETY: `ctx` is either null or points to the `Context` that `WasmAgent::call`
        // borrowed mutably for the whole guest call during which this host function
        // runs; nothing else touches that context until the call returns. The 'static
        // is never observed: the reference does not escape this host function.
        unsafe { self.ctx.as_mut() }
    }
}

/// Registers the ABI's host functions.
pub(crate) fn define_host_functions(linker: &mut Linker<AgentData>) -> wasmtime::Result<()> {
    let module = abi::IMPORT_MODULE;
    linker.func_wrap(module, "send", host_send)?;
    linker.func_wrap(module, "reply", host_reply)?;
    linker.func_wrap(module, "log", host_log)?;
    linker.func_wrap(
        module,
        "now_ns",
        |mut caller: Caller<'_, AgentData>| -> i64 {
            caller.data_mut().ctx().map_or(0, |ctx| ctx.now_ns() as i64)
        },
    )?;
    linker.func_wrap(module, "self_id", |caller: Caller<'_, AgentData>| -> i64 {
        caller.data().agent.0 as i64
    })?;
    linker.func_wrap(
        module,
        "random",
        |mut caller: Caller<'_, AgentData>| -> i64 {
            splitmix64(&mut caller.data_mut().rng) as i64
        },
    )?;
    Ok(())
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `range` of guest memory, or `None` when any part is outside it.
fn guest_slice(memory: &[u8], address: i32, len: i32) -> Option<&[u8]> {
    let start = usize::try_from(address as u32).ok()?;
    let len = usize::try_from(len).ok()?;
    memory.get(start..start.checked_add(len)?)
}

fn send_code(result: Result<(), SendError>) -> i32 {
    match result {
        Ok(()) => code::OK,
        Err(error) if error.is_backpressure() => code::BACKPRESSURE,
        Err(SendError::UnknownAgent { .. }) => code::UNKNOWN_AGENT,
        Err(SendError::Pool(PoolError::TooLarge { .. }))
        | Err(SendError::Frame(FrameError::TooLarge { .. })) => code::TOO_LARGE,
        Err(_) => code::INVALID,
    }
}

/// Takes one send from the budget, checks the payload length. `Err` is the code.
fn admit_send(data: &mut AgentData, payload_len: i32) -> Result<(), i32> {
    if payload_len < 0 {
        return Err(code::INVALID);
    }
    if payload_len as u32 > data.message_bytes_max {
        return Err(code::TOO_LARGE);
    }
    if data.sends_left == 0 {
        return Err(code::SEND_LIMIT);
    }
    data.sends_left -= 1;
    Ok(())
}

/// In a batch, follows the guest to the message it says it is on (the progress index):
/// `reply` then answers that message, and its sends are counted from zero. `Err` is the
/// code for an index outside the batch or one that went back.
fn follow_batch(caller: &mut Caller<'_, AgentData>) -> Result<(), i32> {
    if !caller.data().batch.active {
        return Ok(());
    }
    let Some(memory) = caller.data().memory else {
        return Err(code::INVALID);
    };
    let Some(index) = caller.data().batch_progress(memory.data(&*caller)) else {
        return Err(code::INVALID);
    };
    let data = caller.data_mut();
    if index == data.batch.index {
        return Ok(());
    }
    let Some(header) = data.batch.headers.get(index as usize).copied() else {
        return Err(code::INVALID);
    };
    if index < data.batch.index {
        return Err(code::INVALID);
    }
    data.batch.index = index;
    data.sends_left = data.sends_per_message_max;
    if let Some(ctx) = data.ctx() {
        ctx.set_current(&Message {
            header,
            payload: &[],
        });
    }
    Ok(())
}

fn host_send(
    mut caller: Caller<'_, AgentData>,
    header: i32,
    payload: i32,
    payload_len: i32,
) -> i32 {
    if let Err(code) = follow_batch(&mut caller) {
        return code;
    }
    if let Err(code) = admit_send(caller.data_mut(), payload_len) {
        return code;
    }
    let Some(memory) = caller.data().memory else {
        return code::INVALID;
    };
    let ctx = caller.data().ctx;
    let memory = memory.data(&caller);
    let Some(header) = guest_slice(memory, header, HEADER_BYTES as i32)
        .and_then(|bytes| <&[u8; HEADER_BYTES]>::try_from(bytes).ok())
        .and_then(abi::read_header)
    else {
        return code::INVALID;
    };
    let Some(payload) = guest_slice(memory, payload, payload_len) else {
        return code::INVALID;
    };
    // SAFETY: as in `AgentData::ctx`: the pointer is the live context of the guest call
    // this host function runs in, or null.
    let Some(ctx) = (unsafe { ctx.as_mut() }) else {
        return code::INVALID;
    };
    send_code(ctx.send_with(header, payload))
}

fn host_reply(
    mut caller: Caller<'_, AgentData>,
    performative: i32,
    payload: i32,
    payload_len: i32,
) -> i32 {
    if !caller.data().in_message {
        return code::NO_MESSAGE;
    }
    let Some(performative) = abi::performative(performative) else {
        return code::INVALID;
    };
    if let Err(code) = follow_batch(&mut caller) {
        return code;
    }
    if let Err(code) = admit_send(caller.data_mut(), payload_len) {
        return code;
    }
    let Some(memory) = caller.data().memory else {
        return code::INVALID;
    };
    let ctx = caller.data().ctx;
    let Some(payload) = guest_slice(memory.data(&caller), payload, payload_len) else {
        return code::INVALID;
    };
    // SAFETY: as in `host_send`.
    let Some(ctx) = (unsafe { ctx.as_mut() }) else {
        return code::INVALID;
    };
    send_code(ctx.reply(performative, payload))
}

/// Longest log line kept.
const LOG_BYTES_MAX: i32 = 1024;

fn host_log(caller: Caller<'_, AgentData>, level: i32, text: i32, text_len: i32) {
    let agent = caller.data().agent;
    let Some(memory) = caller.data().memory else {
        return;
    };
    let Some(bytes) = guest_slice(memory.data(&caller), text, text_len.min(LOG_BYTES_MAX)) else {
        return;
    };
    let text = String::from_utf8_lossy(bytes);
    match level {
        0 => tracing::error!(target: "dataplane::agent", %agent, "{text}"),
        1 => tracing::warn!(target: "dataplane::agent", %agent, "{text}"),
        2 => tracing::info!(target: "dataplane::agent", %agent, "{text}"),
        3 => tracing::debug!(target: "dataplane::agent", %agent, "{text}"),
        _ => tracing::trace!(target: "dataplane::agent", %agent, "{text}"),
    }
}

/// A live instance.
struct Live {
    store: Store<AgentData>,
    memory: Memory,
    on_message: TypedFunc<i32, i32>,
    on_stop: Option<TypedFunc<(), ()>>,
    on_batch: Option<TypedFunc<i32, i32>>,
    /// Address of the inbox in linear memory; `inbox + HEADER_BYTES + message_bytes_max`
    /// was checked to be inside memory, which never shrinks.
    inbox: usize,
}

/// A WASM agent on its shard. Created cheaply anywhere ([`WasmAgent::new`]); the
/// instance is made on the shard, in `on_start`, and again on every restart.
pub struct WasmAgent {
    host: Host,
    spec: AgentSpec,
    id: AgentId,
    live: Option<Live>,
    deadline_ticks: u64,
    /// What this agent's shard (known from `on_start`) tells the epoch ticker.
    ticker: Arc<TickerShared>,
    shard: usize,
}

impl std::fmt::Debug for WasmAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmAgent")
            .field("id", &self.id)
            .field("module", &self.spec.module.name())
            .field("live", &self.live.is_some())
            .finish_non_exhaustive()
    }
}

impl WasmAgent {
    /// An agent `id` running `spec`, not yet instantiated.
    pub fn new(host: &Host, id: AgentId, spec: AgentSpec) -> WasmAgent {
        let tick_ns = host.epoch_tick().as_nanos().max(1);
        // The first look at the clock comes after half the limit in ticks; the callback
        // then looks once a tick until the limit has passed. Ticks come late (the
        // ticker's wake-up), so a first look after the whole limit in ticks would come
        // late by that lateness times the number of ticks.
        let deadline_ticks = u64::try_from(spec.limits.time_per_message.as_nanos() / tick_ns / 2)
            .unwrap_or(u64::MAX)
            .max(1);
        WasmAgent {
            host: host.clone(),
            spec,
            id,
            live: None,
            deadline_ticks,
            ticker: host.ticker(),
            shard: 0,
        }
    }

    /// The module it runs.
    pub fn module(&self) -> &Arc<AgentModule> {
        &self.spec.module
    }

    /// Whether an instance is alive (false before start and after a trap).
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Makes a fresh instance and runs `dp_inbox` and `dp_init`.
    pub fn instantiate(&mut self, ctx: &mut Context<'_>) -> Result<(), WasmError> {
        self.live = None;
        self.shard = ctx.shard();
        let module = &self.spec.module;
        let limits = &self.spec.limits;
        let name = || module.name().to_owned();
        let data = AgentData {
            ctx: std::ptr::null_mut(),
            memory: None,
            limits: StoreLimitsBuilder::new()
                .memory_size(usize::try_from(limits.memory_bytes_max).unwrap_or(usize::MAX))
                .instances(1)
                .memories(1)
                .tables(1)
                .build(),
            in_message: false,
            sends_left: limits.sends_per_message_max,
            sends_per_message_max: limits.sends_per_message_max,
            message_bytes_max: limits.message_bytes_max,
            rng: self.spec.seed.unwrap_or(self.id.0),
            agent: self.id,
            time_per_message_ns: u64::try_from(limits.time_per_message.as_nanos())
                .unwrap_or(u64::MAX),
            clock: self.host.clock().clone(),
            call_start_raw: 0,
            batch: BatchState::default(),
        };
        let mut store = Store::new(self.host.engine(), data);
        store.limiter(|data| &mut data.limits);
        // The epoch only says when to look; the clock decides. A trap never comes before
        // the limit and at most one tick (plus the ticker's wake-up) after it, however
        // late or early the ticks are.
        store.epoch_deadline_callback(|mut context| {
            let now_raw = context.data().clock.raw();
            let mut start_raw = context.data().call_start_raw;
            if context.data().batch.active {
                // Message k > 0 of a batch started at an unknown time before the tick at
                // which the progress index first showed it: timing it from that tick is
                // never early, and late by at most one tick.
                let progress = context
                    .data()
                    .memory
                    .and_then(|memory| context.data().batch_progress(memory.data(&context)));
                let batch = &mut context.data_mut().batch;
                if let Some(index) = progress {
                    if index != batch.seen_index {
                        batch.seen_index = index;
                        batch.seen_raw = now_raw;
                    }
                }
                if batch.seen_index > 0 {
                    start_raw = batch.seen_raw;
                }
            }
            let data = context.data();
            let elapsed_ns = data.clock.delta_as_nanos(start_raw, now_raw);
            Ok(if elapsed_ns >= data.time_per_message_ns {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        arm(&mut store, self.deadline_ticks);
        let instance = module.pre().instantiate(&mut store).map_err(|error| {
            if let Some(full) = error.downcast_ref::<PoolConcurrencyLimitError>() {
                let _ = full;
                WasmError::PoolFull {
                    slots: self.host.config().pool_slots.unwrap_or(0),
                }
            } else if error.downcast_ref::<Trap>().is_some() {
                WasmError::InitTrap {
                    module: name(),
                    reason: format!("{error:#}"),
                }
            } else {
                WasmError::Instantiate {
                    module: name(),
                    reason: format!("{error:#}"),
                }
            }
        })?;
        // The exports were checked against the ABI when the module was loaded.
        let missing = |export: &'static str| WasmError::MissingExport {
            module: name(),
            export,
            expected: "see docs/agent-abi.md".into(),
        };
        let memory = instance
            .get_memory(&mut store, abi::EXPORT_MEMORY)
            .ok_or_else(|| missing(abi::EXPORT_MEMORY))?;
        let inbox_fn = instance
            .get_typed_func::<i32, i32>(&mut store, abi::EXPORT_INBOX)
            .map_err(|_| missing(abi::EXPORT_INBOX))?;
        let init = instance
            .get_typed_func::<i32, i32>(&mut store, abi::EXPORT_INIT)
            .map_err(|_| missing(abi::EXPORT_INIT))?;
        let on_message = instance
            .get_typed_func::<i32, i32>(&mut store, abi::EXPORT_ON_MESSAGE)
            .map_err(|_| missing(abi::EXPORT_ON_MESSAGE))?;
        let on_stop = if module.has_on_stop() {
            instance
                .get_typed_func::<(), ()>(&mut store, abi::EXPORT_ON_STOP)
                .ok()
        } else {
            None
        };
        let on_batch = instance
            .get_typed_func::<i32, i32>(&mut store, abi::EXPORT_ON_BATCH)
            .ok();
        store.data_mut().memory = Some(memory);

        let trap = |error: wasmtime::Error| WasmError::InitTrap {
            module: name(),
            reason: trap_reason(&error, limits),
        };
        let capacity = HEADER_BYTES as u32 + limits.message_bytes_max;
        arm(&mut store, self.deadline_ticks);
        let address = inbox_fn.call(&mut store, capacity as i32).map_err(trap)? as u32;
        let end = u64::from(address) + u64::from(capacity);
        if address == 0 || end > memory.data_size(&store) as u64 {
            return Err(WasmError::Inbox {
                module: name(),
                capacity,
                address,
            });
        }
        let inbox = address as usize;
        let config = &self.spec.config;
        if config.len() > limits.message_bytes_max as usize {
            return Err(WasmError::ConfigTooLarge {
                bytes: config.len(),
                limit_bytes: limits.message_bytes_max as usize,
            });
        }
        memory.data_mut(&mut store)[inbox..inbox + config.len()].copy_from_slice(config);
        let mut live = Live {
            store,
            memory,
            on_message,
            on_stop,
            on_batch,
            inbox,
        };
        let result = call(
            &mut live.store,
            (&self.ticker, self.shard, CallKind::One),
            ctx,
            false,
            self.deadline_ticks,
            |store| init.call(store, config.len() as i32),
        );
        match result {
            Ok(0) => {
                self.live = Some(live);
                Ok(())
            }
            Ok(code) => Err(WasmError::InitFailed {
                module: name(),
                code,
            }),
            Err(error) => Err(trap(error)),
        }
    }
}

/// Writes the longest prefix of `messages` that fits into the inbox in the batch layout
/// (docs/agent-abi.md) and arms the batch state; returns how many messages it wrote.
/// A message over the agent's `message_bytes_max` ends the prefix (it then fails alone,
/// through `on_message`).
fn fill_batch(live: &mut Live, messages: &[Message<'_>], limits: &AgentLimits) -> usize {
    let capacity = HEADER_BYTES + limits.message_bytes_max as usize;
    let inbox = live.inbox;
    let memory = live.memory.data_mut(&mut live.store);
    let Some(area) = memory.get_mut(inbox..inbox + capacity) else {
        return 0;
    };
    let mut offset = abi::BATCH_PREFIX_BYTES;
    let mut count = 0;
    for message in messages.iter().take(BATCH_MESSAGES_MAX) {
        let len = message.payload.len();
        if len > limits.message_bytes_max as usize {
            break;
        }
        let end = offset + abi::batch_record_bytes(len);
        let Some(record) = area.get_mut(offset..end) else {
            break;
        };
        let (header, payload) = record.split_at_mut(HEADER_BYTES);
        if let Ok(header) = <&mut [u8; HEADER_BYTES]>::try_from(header) {
            abi::write_header(header, &message.header, len as u32);
        }
        payload[..len].copy_from_slice(message.payload);
        offset = end;
        count += 1;
    }
    area[..4].copy_from_slice(&0u32.to_le_bytes());
    area[4..8].copy_from_slice(&(count as u32).to_le_bytes());
    let data = live.store.data_mut();
    data.batch.active = count >= 2;
    data.batch.inbox = inbox;
    data.batch.headers.clear();
    data.batch
        .headers
        .extend(messages[..count].iter().map(|message| message.header));
    data.batch.index = 0;
    data.batch.seen_index = 0;
    count
}

/// Runs `f` (one guest call) with the context installed for the host functions, and
/// this shard's call flag raised for the epoch ticker (a store to the shard's own cache
/// line; the ticker reads it once per wake-up).
fn call<R>(
    store: &mut Store<AgentData>,
    (ticker, shard, kind): (&TickerShared, usize, CallKind),
    ctx: &mut Context<'_>,
    in_message: bool,
    deadline_ticks: u64,
    f: impl FnOnce(&mut Store<AgentData>) -> wasmtime::Result<R>,
) -> wasmtime::Result<R> {
    let data = store.data_mut();
    data.ctx = std::ptr::from_mut(ctx).cast::<Context<'static>>();
    data.in_message = in_message;
    data.sends_left = data.sends_per_message_max;
    arm(store, deadline_ticks);
    if kind != CallKind::Batch {
        // A batch's flag was raised by `TickerShared::begin_batch`.
        ticker.set_call(shard, kind);
    }
    let result = f(store);
    ticker.set_call(shard, CallKind::None);
    let data = store.data_mut();
    data.ctx = std::ptr::null_mut();
    data.in_message = false;
    result
}

/// Starts the time limit of one guest call: the epoch deadline brings the first look at
/// the clock near the limit (see the callback installed with the store).
fn arm(store: &mut Store<AgentData>, deadline_ticks: u64) {
    let data = store.data_mut();
    data.call_start_raw = data.clock.raw();
    store.set_epoch_deadline(deadline_ticks);
}

fn trap_reason(error: &wasmtime::Error, limits: &AgentLimits) -> String {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!(
            "wasm trap: interrupt (time_per_message_ms of {} ms exceeded)",
            limits.time_per_message.as_millis()
        ),
        // A trap displays as "wasm trap: <what>" already.
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    }
}

impl WasmAgent {
    /// What a guest call's result means for the message (or the batch's failing one): a
    /// non-zero code fails it, a trap crashes the agent.
    fn outcome(&mut self, result: wasmtime::Result<i32>) -> Result<(), AgentError> {
        match result {
            Ok(0) => Ok(()),
            Ok(code) => Err(AgentError::Failed(Cow::Owned(format!(
                "agent {} returned error {code}",
                self.id
            )))),
            Err(error) => {
                // The instance may be half-way through an update of its state: never
                // call it again. Dropping the store frees its pool slot.
                self.live = None;
                let reason = trap_reason(&error, &self.spec.limits);
                Err(AgentError::Crashed(Cow::Owned(reason)))
            }
        }
    }
}

impl Agent for WasmAgent {
    fn on_start(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        self.instantiate(ctx)
            .map_err(|error| AgentError::Failed(Cow::Owned(error.to_string())))
    }

    fn on_message(
        &mut self,
        message: &Message<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<(), AgentError> {
        let limits = &self.spec.limits;
        let Some(live) = self.live.as_mut() else {
            return Err(AgentError::Crashed("agent has no live instance".into()));
        };
        let payload = message.payload;
        if payload.len() > limits.message_bytes_max as usize {
            return Err(AgentError::Failed(Cow::Owned(format!(
                "message of {} bytes exceeds the agent's message_bytes_max of {}",
                payload.len(),
                limits.message_bytes_max
            ))));
        }
        let inbox = live.inbox;
        let memory = live.memory.data_mut(&mut live.store);
        let end = inbox + HEADER_BYTES + payload.len();
        let Some(slot) = memory.get_mut(inbox..end) else {
            return Err(AgentError::Crashed("inbox outside memory".into()));
        };
        let (header, body) = slot.split_at_mut(HEADER_BYTES);
        if let Ok(header) = <&mut [u8; HEADER_BYTES]>::try_from(header) {
            abi::write_header(header, &message.header, payload.len() as u32);
        }
        body.copy_from_slice(payload);
        let on_message = &live.on_message;
        let result = call(
            &mut live.store,
            (&self.ticker, self.shard, CallKind::One),
            ctx,
            true,
            self.deadline_ticks,
            |store| on_message.call(store, payload.len() as i32),
        );
        self.outcome(result)
    }

    fn batch_messages_max(&self) -> usize {
        match &self.live {
            Some(live) if live.on_batch.is_some() => BATCH_MESSAGES_MAX,
            _ => 1,
        }
    }

    fn on_batch(&mut self, messages: &[Message<'_>], ctx: &mut Context<'_>) -> BatchOutcome {
        let limits = &self.spec.limits;
        let Some(first) = messages.first() else {
            return BatchOutcome {
                handled: 0,
                error: None,
            };
        };
        // A batch only while the epoch ticker is fast enough to time the messages after
        // the first (see `ticker.rs`); otherwise the first alone, and the ticker is told.
        let count = match self.live.as_mut() {
            Some(live)
                if live.on_batch.is_some()
                    && messages.len() > 1
                    && self.ticker.begin_batch(self.shard) =>
            {
                fill_batch(live, messages, limits)
            }
            _ => 0,
        };
        if count < 2 {
            // Nothing to gain (or no batch export): the first message alone, as usual.
            ctx.set_current(first);
            return match self.on_message(first, ctx) {
                Ok(()) => BatchOutcome {
                    handled: 1,
                    error: None,
                },
                Err(error) => BatchOutcome {
                    handled: 0,
                    error: Some(error),
                },
            };
        }
        let ticker = &self.ticker;
        let shard = self.shard;
        let lost = || {
            ticker.set_call(shard, CallKind::None);
            BatchOutcome {
                handled: 0,
                error: Some(AgentError::Crashed("agent has no live instance".into())),
            }
        };
        // `fill_batch` ran, so both exist.
        let Some(live) = self.live.as_mut() else {
            return lost();
        };
        let Some(on_batch) = &live.on_batch else {
            return lost();
        };
        ctx.set_current(first);
        // The epoch callback samples the progress index every tick (see `BatchState`).
        let flags = (&*self.ticker, self.shard, CallKind::Batch);
        let result = call(&mut live.store, flags, ctx, true, 1, |store| {
            on_batch.call(store, count as i32)
        });
        live.store.data_mut().batch.active = false;
        let progress = live
            .store
            .data()
            .batch_progress(live.memory.data(&live.store))
            .map_or(0, |index| (index as usize).min(count - 1));
        match self.outcome(result) {
            Ok(()) => BatchOutcome {
                handled: count,
                error: None,
            },
            // The failure is the message the progress index names.
            Err(error) => BatchOutcome {
                handled: progress,
                error: Some(error),
            },
        }
    }

    fn restart(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        self.instantiate(ctx)
            .map_err(|error| AgentError::Crashed(Cow::Owned(error.to_string())))
    }

    fn on_stop(&mut self, ctx: &mut Context<'_>) {
        if let Some(mut live) = self.live.take() {
            if let Some(on_stop) = &live.on_stop {
                let _ = call(
                    &mut live.store,
                    (&self.ticker, self.shard, CallKind::One),
                    ctx,
                    false,
                    self.deadline_ticks,
                    |store| on_stop.call(store, ()),
                );
            }
        }
    }
}
