//! The restart policy for crashed agents, and what the shard reports about an agent.
//!
//! # Policy
//! Only a crash ([`AgentError::Crashed`](crate::AgentError::Crashed): a panic, a WASM trap)
//! triggers it; a handler that returns [`AgentError::Failed`](crate::AgentError::Failed)
//! only fails that message. The message whose handling crashed is answered with `failure`
//! and not redelivered. The agent then waits out a back-off ([`AgentState::Restarting`]):
//! its mailbox is kept and keeps accepting messages up to its bound, and nothing is
//! delivered to it. When the back-off expires, the shard calls
//! [`Agent::restart`](crate::Agent::restart) and, if that succeeds, delivers what was
//! queued, in order. The back-off is `backoff_initial_ns`, doubled for each further crash
//! since the agent last finished a handler call without crashing, capped at
//! `backoff_max_ns`. A restart that fails counts as another crash.
//!
//! A crash that makes more than `max_restarts` crashes within `window_ns` (this one
//! included) stops the agent ([`AgentState::Stopped`]): everything queued for it is
//! answered (requests get a `failure` reply naming the agent and the reason) and so is
//! everything sent to it later, until it is undeployed or replaced
//! ([`Shard::replace`](crate::Shard::replace)). Crashes spread wider than the window never
//! stop an agent. Like everything in the shard, this is pure bookkeeping: time is an
//! argument.

use std::collections::VecDeque;

/// When and how often a crashed agent is restarted. Part of
/// [`ShardConfig`](crate::ShardConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed within `window_ns`; one more crash in the window stops the agent.
    /// `0`: a crashed agent is stopped at once, never restarted.
    pub max_restarts: u32,
    /// The sliding window crashes are counted in, in nanoseconds.
    pub window_ns: u64,
    /// Back-off after a first crash, in nanoseconds.
    pub backoff_initial_ns: u64,
    /// Longest back-off, in nanoseconds.
    pub backoff_max_ns: u64,
}

impl RestartPolicy {
    /// Restarts never happen: a crashed agent is stopped at once.
    pub const NEVER: RestartPolicy = RestartPolicy {
        max_restarts: 0,
        ..RestartPolicy::DEFAULT
    };

    /// 5 restarts within 60 s; back-off 1 ms, doubling per consecutive crash up to 1 s.
    pub const DEFAULT: RestartPolicy = RestartPolicy {
        max_restarts: 5,
        window_ns: 60_000_000_000,
        backoff_initial_ns: 1_000_000,
        backoff_max_ns: 1_000_000_000,
    };

    /// The back-off after the `consecutive_crashes`-th crash in a row (1 for the first):
    /// `backoff_initial_ns × 2^(consecutive_crashes − 1)`, at most `backoff_max_ns`.
    pub fn backoff_ns(&self, consecutive_crashes: u32) -> u64 {
        let doublings = consecutive_crashes.saturating_sub(1);
        let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
        self.backoff_initial_ns
            .saturating_mul(factor)
            .min(self.backoff_max_ns)
    }
}

impl Default for RestartPolicy {
    fn default() -> RestartPolicy {
        RestartPolicy::DEFAULT
    }
}

/// Where an agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentState {
    /// Messages are delivered to it.
    Running,
    /// It crashed and waits out its back-off: messages are queued, not delivered, and
    /// [`Agent::restart`](crate::Agent::restart) is called at the first
    /// [`Shard::poll_deliver`](crate::Shard::poll_deliver) at or after `until_ns`.
    Restarting {
        /// When the back-off ends, on the driver's clock.
        until_ns: u64,
    },
    /// It crashed too often: its messages are answered with `failure` until it is
    /// undeployed or replaced.
    Stopped,
}

/// What the shard knows about one agent ([`Shard::agent_status`](crate::Shard::agent_status)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentStatus {
    /// Its state.
    pub state: AgentState,
    /// Successful restarts since it was deployed or last replaced.
    pub restarts: u32,
    /// Crashes within the policy's window before, and including, its latest crash.
    pub crashes_in_window: u32,
    /// Frames queued for it: its mailbox plus what it sent itself for the next poll.
    pub queued_frames: usize,
}

/// An agent's crash bookkeeping: allocated at its first crash, dropped when it is
/// replaced.
#[derive(Debug, Default)]
pub(crate) struct CrashHistory {
    /// When the latest crashes happened, oldest first: those within the window of the
    /// latest, at most `max_restarts + 1` of them.
    crashes_ns: VecDeque<u64>,
    /// Crashes since the agent last finished a handler call without crashing.
    consecutive: u32,
    /// Successful restarts.
    pub(crate) restarts: u32,
    /// Why the agent was stopped, as its queued requests are told.
    pub(crate) stop_reason: Option<Box<str>>,
}

/// What the policy decides about a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Restart the agent at `until_ns`.
    Restart { until_ns: u64 },
    /// Stop the agent: `crashes` crashes within the window.
    Stop { crashes: usize },
}

impl CrashHistory {
    /// Records a crash at `now_ns` and decides what happens next.
    pub(crate) fn record_crash(&mut self, policy: &RestartPolicy, now_ns: u64) -> Verdict {
        while let Some(&at_ns) = self.crashes_ns.front() {
            if now_ns.saturating_sub(at_ns) < policy.window_ns {
                break;
            }
            self.crashes_ns.pop_front();
        }
        self.crashes_ns.push_back(now_ns);
        // Only the last `max_restarts + 1` crashes can decide anything.
        let keep = usize::try_from(policy.max_restarts)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        while self.crashes_ns.len() > keep {
            self.crashes_ns.pop_front();
        }
        self.consecutive = self.consecutive.saturating_add(1);
        let crashes = self.crashes_ns.len();
        if crashes > usize::try_from(policy.max_restarts).unwrap_or(usize::MAX) {
            Verdict::Stop { crashes }
        } else {
            Verdict::Restart {
                until_ns: now_ns.saturating_add(policy.backoff_ns(self.consecutive)),
            }
        }
    }

    /// A handler call finished without crashing: the back-off starts over.
    pub(crate) fn record_success(&mut self) {
        self.consecutive = 0;
    }

    pub(crate) fn crashes_in_window(&self) -> u32 {
        u32::try_from(self.crashes_ns.len()).unwrap_or(u32::MAX)
    }
}

/// `60 s`, `5 ms`, `1500 µs`, `7 ns`: the largest unit that divides `ns` exactly.
pub(crate) fn format_ns(ns: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "µs")];
    for (unit_ns, unit) in UNITS {
        if ns >= unit_ns && ns.is_multiple_of(unit_ns) {
            return format!("{} {unit}", ns / unit_ns);
        }
    }
    format!("{ns} ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RestartPolicy::default();
        let backoffs: Vec<u64> = (1..=12).map(|n| policy.backoff_ns(n)).collect();
        assert_eq!(backoffs[0], 1_000_000);
        assert_eq!(backoffs[1], 2_000_000);
        assert_eq!(backoffs[9], 512_000_000);
        assert_eq!(backoffs[10], 1_000_000_000);
        assert_eq!(backoffs[11], 1_000_000_000);
        assert_eq!(policy.backoff_ns(u32::MAX), 1_000_000_000);
        assert_eq!(policy.backoff_ns(0), 1_000_000);
    }

    #[test]
    fn too_many_crashes_in_the_window_stop() {
        let policy = RestartPolicy {
            max_restarts: 2,
            window_ns: 100,
            backoff_initial_ns: 1,
            backoff_max_ns: 1,
        };
        let mut history = CrashHistory::default();
        assert_eq!(
            history.record_crash(&policy, 0),
            Verdict::Restart { until_ns: 1 }
        );
        assert_eq!(
            history.record_crash(&policy, 50),
            Verdict::Restart { until_ns: 51 }
        );
        // The crash at 0 has left the window.
        assert_eq!(
            history.record_crash(&policy, 100),
            Verdict::Restart { until_ns: 101 }
        );
        assert_eq!(
            history.record_crash(&policy, 120),
            Verdict::Stop { crashes: 3 }
        );
    }

    #[test]
    fn no_restarts_stops_at_the_first_crash() {
        let mut history = CrashHistory::default();
        assert_eq!(
            history.record_crash(&RestartPolicy::NEVER, 5),
            Verdict::Stop { crashes: 1 }
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_ns(60_000_000_000), "60 s");
        assert_eq!(format_ns(5_000_000), "5 ms");
        assert_eq!(format_ns(1_500_000), "1500 µs");
        assert_eq!(format_ns(7), "7 ns");
        assert_eq!(format_ns(0), "0 ns");
    }
}
