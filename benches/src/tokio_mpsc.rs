//! The peer baseline: the suites written the way a user would write them without dataplane.
//!
//! A tokio multi-thread runtime (1 worker for `local`, 2 for `cross-shard`, each worker
//! pinned to the CPU the dataplane shard of the same index uses), one bounded
//! `tokio::sync::mpsc::channel::<Message>(1024)` per agent (1024 = dataplane's default
//! mailbox capacity), agents as tokio tasks looping on `recv().await`, a directory of
//! senders indexed by agent id, and a payload copied into a fresh `Bytes` for every message.
//! Task placement across the two workers is left to tokio: that is what a user gets.
//!
//! The workloads follow the `dataplane::bench` module docs:
//! - **ping-pong**: A sends a request to B, B replies to `from`'s mailbox, A records the
//!   round trip. With `--rate R` A's sender task sends request `i` at its intended time
//!   (spinning on `Instant` with `yield_now`, since tokio's timer has 1 ms granularity),
//!   carrying the intended time as an offset in `correlation_id`; A's receiver task records
//!   `arrival - intended`.
//! - **flood**: A sends one-way with `send().await` until `opts.seconds` have passed, then a
//!   stop message; B counts. Throughput = messages counted by B / (time B saw the stop
//!   message - time of A's first send). The stop message is not counted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use dataplane::bench::report::{OpenLoopSchedule, Recorder, SYSTEM_TOKIO_MPSC};
use dataplane::bench::{BenchResult, Suite, SuiteOptions};
use tokio::sync::mpsc;

/// Capacity of each agent's channel, in messages: dataplane's default mailbox capacity.
pub const MAILBOX_CAPACITY_MESSAGES: usize = 1024;
/// `flags` bit that ends a workload: the receiver stops (and a responder echoes it first).
pub const FLAG_STOP: u16 = 1;
/// `performative` of a request.
pub const PERFORMATIVE_REQUEST: u8 = 1;
/// `performative` of a reply.
pub const PERFORMATIVE_REPLY: u8 = 2;
/// `performative` of a one-way message.
pub const PERFORMATIVE_INFORM: u8 = 3;
/// Flood sends between two reads of the clock (deadline check).
const FLOOD_SENDS_PER_CLOCK_READ: u64 = 256;

const AGENT_A: u64 = 0;
const AGENT_B: u64 = 1;

/// The message a user would define: the same header fields as a dataplane frame, plus an
/// owned payload.
#[derive(Debug, Clone)]
pub struct Message {
    /// Receiving agent id.
    pub to: u64,
    /// Sending agent id (replies go to this agent's channel).
    pub from: u64,
    /// Conversation the message belongs to.
    pub conversation_id: u64,
    /// Request/reply correlation; in fixed-rate mode, the intended send time in ns since
    /// the schedule's start.
    pub correlation_id: u64,
    /// Kind of message (`PERFORMATIVE_*`).
    pub performative: u8,
    /// Priority (unused by the workloads, carried like a user would).
    pub priority: u8,
    /// Flags (`FLAG_STOP`).
    pub flags: u16,
    /// Payload, copied per message.
    pub payload: Bytes,
}

impl Message {
    fn new(
        to: u64,
        from: u64,
        correlation_id: u64,
        performative: u8,
        flags: u16,
        payload: &[u8],
    ) -> Self {
        Self {
            to,
            from,
            conversation_id: 0,
            correlation_id,
            performative,
            priority: 0,
            flags,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn is_stop(&self) -> bool {
        self.flags & FLAG_STOP != 0
    }
}

/// Every agent's sender, indexed by agent id.
type Directory = Arc<[mpsc::Sender<Message>]>;

/// A's sender to B, A's inbox, and B's task.
type PingPongPair = (
    mpsc::Sender<Message>,
    mpsc::Receiver<Message>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

/// Runs `suite` (`local` or `cross-shard`) on tokio and reports it as system `tokio-mpsc`.
///
/// # Errors
///
/// For the `hardware` suite (not a messaging workload), when the runtime cannot be built,
/// or when an agent's channel closes early or a task panics.
pub fn run(suite: Suite, opts: &SuiteOptions) -> anyhow::Result<BenchResult> {
    let workers = match suite {
        Suite::Local => 1,
        Suite::CrossShard => 2,
        _ => bail!("the {} suite has no tokio-mpsc baseline", suite.name()),
    };
    let runtime = build_runtime(workers, &pick_cpus(opts, workers))?;
    let duration = Duration::from_secs_f64(opts.seconds.max(0.0));
    let payload: Arc<[u8]> = vec![0xA5; opts.payload_bytes].into();

    let recorder = runtime.block_on(async {
        match opts.rate_msgs_per_s {
            None => ping_pong_closed_loop(duration, Arc::clone(&payload)).await,
            Some(rate) => ping_pong_open_loop(duration, rate, Arc::clone(&payload)).await,
        }
    })?;
    let (messages, elapsed) = runtime.block_on(flood(duration, payload))?;
    let seconds = elapsed.as_secs_f64();
    Ok(BenchResult::new(
        suite.name(),
        SYSTEM_TOKIO_MPSC,
        workers,
        messages,
        seconds,
        recorder.latency_ns(),
    ))
}

/// `opts.cpus`, or the first `workers` CPUs of the calling thread's affinity mask (read
/// before any worker pins itself). Empty when neither is known: workers then run unpinned.
fn pick_cpus(opts: &SuiteOptions, workers: usize) -> Vec<core_affinity::CoreId> {
    dataplane::bench::pick_cpus(opts, workers)
        .into_iter()
        .map(|id| core_affinity::CoreId { id })
        .collect()
}

/// A multi-thread runtime whose `i`-th started thread pins itself to `cpus[i % len]`.
fn build_runtime(
    workers: usize,
    cpus: &[core_affinity::CoreId],
) -> anyhow::Result<tokio::runtime::Runtime> {
    let cpus: Arc<[core_affinity::CoreId]> = cpus.into();
    let next_thread_index = Arc::new(AtomicUsize::new(0));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("tokio-mpsc-worker")
        .enable_all()
        .on_thread_start(move || {
            let thread_index = next_thread_index.fetch_add(1, Ordering::Relaxed);
            if let Some(&cpu) = cpus.get(thread_index % cpus.len().max(1)) {
                // Best effort: an unpinned worker still runs, only less comparably.
                let _ = core_affinity::set_for_current(cpu);
            }
        })
        .build()
        .context("building the tokio runtime")
}

/// One bounded channel per agent: the directory of senders and the receivers, by agent id.
fn mailboxes<const AGENTS: usize>() -> (Directory, [mpsc::Receiver<Message>; AGENTS]) {
    let mut senders = Vec::with_capacity(AGENTS);
    let receivers = std::array::from_fn(|_| {
        let (sender, receiver) = mpsc::channel::<Message>(MAILBOX_CAPACITY_MESSAGES);
        senders.push(sender);
        receiver
    });
    (senders.into(), receivers)
}

fn sender(directory: &Directory, agent: u64) -> anyhow::Result<mpsc::Sender<Message>> {
    let index = usize::try_from(agent).ok();
    index
        .and_then(|index| directory.get(index))
        .cloned()
        .ok_or_else(|| anyhow!("no agent {agent} in the directory"))
}

/// Agent B of ping-pong: answers every request to its sender; echoes the stop message last.
async fn responder(
    mut inbox: mpsc::Receiver<Message>,
    directory: Directory,
    payload: Arc<[u8]>,
) -> anyhow::Result<()> {
    while let Some(request) = inbox.recv().await {
        let reply = Message::new(
            request.from,
            request.to,
            request.correlation_id,
            PERFORMATIVE_REPLY,
            request.flags,
            &payload,
        );
        let stop = request.is_stop();
        sender(&directory, request.from)?
            .send(reply)
            .await
            .map_err(|_| anyhow!("agent {}'s mailbox closed", request.from))?;
        if stop {
            return Ok(());
        }
    }
    bail!("agent B's mailbox closed before the stop message")
}

/// Creates the two ping-pong agents' mailboxes and starts B; returns A's handle on B's
/// mailbox, A's inbox and B's task.
fn start_pair(payload: &Arc<[u8]>) -> anyhow::Result<PingPongPair> {
    let (directory, [inbox_a, inbox_b]) = mailboxes::<2>();
    let to_b = sender(&directory, AGENT_B)?;
    let b = tokio::spawn(responder(inbox_b, directory, Arc::clone(payload)));
    Ok((to_b, inbox_a, b))
}

/// Closed-loop ping-pong: one request in flight, round trip recorded per request.
async fn ping_pong_closed_loop(duration: Duration, payload: Arc<[u8]>) -> anyhow::Result<Recorder> {
    let (to_b, mut inbox_a, b) = start_pair(&payload)?;
    let a = tokio::spawn(async move {
        let mut recorder = Recorder::new();
        let deadline = Instant::now() + duration;
        let mut correlation_id: u64 = 0;
        loop {
            let sent = Instant::now();
            if sent >= deadline {
                break;
            }
            let request = Message::new(
                AGENT_B,
                AGENT_A,
                correlation_id,
                PERFORMATIVE_REQUEST,
                0,
                &payload,
            );
            to_b.send(request)
                .await
                .map_err(|_| anyhow!("agent B's mailbox closed"))?;
            inbox_a.recv().await.context("agent A's mailbox closed")?;
            recorder.record_between(sent, Instant::now());
            correlation_id += 1;
        }
        let stop = Message::new(
            AGENT_B,
            AGENT_A,
            correlation_id,
            PERFORMATIVE_REQUEST,
            FLAG_STOP,
            &payload,
        );
        to_b.send(stop)
            .await
            .map_err(|_| anyhow!("agent B's mailbox closed"))?;
        while !inbox_a
            .recv()
            .await
            .context("agent A's mailbox closed")?
            .is_stop()
        {}
        anyhow::Ok(recorder)
    });
    let recorder = a.await??;
    b.await??;
    Ok(recorder)
}

/// Open-loop ping-pong: A's sender task sends on schedule, A's receiver task records
/// latency from each request's intended send time.
async fn ping_pong_open_loop(
    duration: Duration,
    rate_msgs_per_s: u64,
    payload: Arc<[u8]>,
) -> anyhow::Result<Recorder> {
    let (to_b, mut inbox_a, b) = start_pair(&payload)?;
    let schedule = OpenLoopSchedule::new(Instant::now(), rate_msgs_per_s);
    let deadline = schedule.start() + duration;
    let receive = tokio::spawn(async move {
        let mut recorder = Recorder::new();
        loop {
            let reply = inbox_a.recv().await.context("agent A's mailbox closed")?;
            if reply.is_stop() {
                return anyhow::Ok(recorder);
            }
            recorder.record_between(
                schedule.instant_from_offset_ns(reply.correlation_id),
                Instant::now(),
            );
        }
    });
    let send = tokio::spawn(async move {
        for index in 0.. {
            let due = schedule.due(index);
            if due >= deadline {
                break;
            }
            while Instant::now() < due {
                tokio::task::yield_now().await;
            }
            let offset_ns = schedule.due_offset_ns(index);
            let request = Message::new(
                AGENT_B,
                AGENT_A,
                offset_ns,
                PERFORMATIVE_REQUEST,
                0,
                &payload,
            );
            to_b.send(request)
                .await
                .map_err(|_| anyhow!("agent B's mailbox closed"))?;
        }
        let stop = Message::new(
            AGENT_B,
            AGENT_A,
            0,
            PERFORMATIVE_REQUEST,
            FLAG_STOP,
            &payload,
        );
        to_b.send(stop)
            .await
            .map_err(|_| anyhow!("agent B's mailbox closed"))?;
        anyhow::Ok(())
    });
    send.await??;
    let recorder = receive.await??;
    b.await??;
    Ok(recorder)
}

/// Flood: A sends one-way until the deadline, B counts. Returns (messages, elapsed).
async fn flood(duration: Duration, payload: Arc<[u8]>) -> anyhow::Result<(u64, Duration)> {
    let (directory, [_inbox_a, mut inbox_b]) = mailboxes::<2>();
    let to_b = sender(&directory, AGENT_B)?;
    let b = tokio::spawn(async move {
        let mut received: u64 = 0;
        while let Some(message) = inbox_b.recv().await {
            if message.is_stop() {
                return anyhow::Ok((received, Instant::now()));
            }
            received += 1;
        }
        bail!("agent B's mailbox closed before the stop message")
    });
    let a = tokio::spawn(async move {
        let first_send = Instant::now();
        let deadline = first_send + duration;
        let mut sent: u64 = 0;
        loop {
            for _ in 0..FLOOD_SENDS_PER_CLOCK_READ {
                let message =
                    Message::new(AGENT_B, AGENT_A, sent, PERFORMATIVE_INFORM, 0, &payload);
                to_b.send(message)
                    .await
                    .map_err(|_| anyhow!("agent B's mailbox closed"))?;
                sent += 1;
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        let stop = Message::new(
            AGENT_B,
            AGENT_A,
            sent,
            PERFORMATIVE_INFORM,
            FLAG_STOP,
            &payload,
        );
        to_b.send(stop)
            .await
            .map_err(|_| anyhow!("agent B's mailbox closed"))?;
        anyhow::Ok((first_send, sent))
    });
    let (first_send, sent) = a.await??;
    let (received, stop_seen) = b.await??;
    if received != sent {
        bail!("flood lost messages: sent {sent}, received {received}");
    }
    Ok((received, stop_seen.saturating_duration_since(first_send)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_suite_is_rejected() {
        assert!(run(Suite::Hardware, &SuiteOptions::default()).is_err());
    }

    #[test]
    fn open_loop_local_runs() {
        let opts = SuiteOptions {
            seconds: 0.1,
            rate_msgs_per_s: Some(20_000),
            ..SuiteOptions::default()
        };
        let result = run(Suite::Local, &opts).expect("local open-loop run");
        assert_eq!(result.shards, 1);
        assert!(result.latency_ns.p50 > 0);
        assert!(result.messages > 0);
    }
}
