//! Per-agent mailboxes and the shard's priority scheduler.
//!
//! # Policy
//! Each agent has one FIFO queue per priority class (critical, high, normal, low) sharing
//! one bound, `mailbox_capacity_frames`. The shard keeps, per class, a FIFO *ready list*
//! of agents that have messages of that class. To pick the next work the scheduler takes
//! the highest non-empty class, except that a non-empty lower class that has been passed
//! over `starvation_limit_passes` times in a row is served first (its counter then
//! resets). So critical traffic goes first, and every waiting class is still served at
//! least once every `starvation_limit_passes + 3` picks: lower classes slow down under a
//! flood of higher ones, they never stop. Within a class agents take turns (round robin),
//! each turn handling up to `agent_burst_messages` messages of that class.
//!
//! Order: FIFO per (sender, receiver, class); a higher class may overtake a lower one.

use std::collections::VecDeque;

use dataplane_frame::Priority;

use crate::pool::FrameHandle;

/// Number of priority classes.
pub const CLASSES: usize = Priority::COUNT;

/// An agent's queues, one per priority class, under one bound.
#[derive(Debug)]
pub(crate) struct Mailbox {
    queues: [VecDeque<FrameHandle>; CLASSES],
    len_frames: usize,
}

impl Mailbox {
    pub(crate) fn new() -> Mailbox {
        Mailbox {
            queues: Default::default(),
            len_frames: 0,
        }
    }

    pub(crate) fn len_frames(&self) -> usize {
        self.len_frames
    }

    /// Appends to `class`; the caller has checked the bound.
    pub(crate) fn push(&mut self, class: usize, frame: FrameHandle) {
        self.queues[class].push_back(frame);
        self.len_frames += 1;
    }

    pub(crate) fn pop(&mut self, class: usize) -> Option<FrameHandle> {
        let frame = self.queues[class].pop_front()?;
        self.len_frames -= 1;
        Some(frame)
    }

    /// Puts a frame taken from `class` back at its front (it is delivered next).
    pub(crate) fn push_front(&mut self, class: usize, frame: FrameHandle) {
        self.queues[class].push_front(frame);
        self.len_frames += 1;
    }

    /// Frames queued in `class`.
    pub(crate) fn len_class(&self, class: usize) -> usize {
        self.queues[class].len()
    }

    pub(crate) fn has(&self, class: usize) -> bool {
        !self.queues[class].is_empty()
    }

    /// Takes every queued frame (for undeploy and shutdown).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = FrameHandle> + '_ {
        self.len_frames = 0;
        self.queues.iter_mut().flat_map(|queue| queue.drain(..))
    }
}

/// Per-class ready lists of agent slots, and the class-selection policy.
#[derive(Debug)]
pub(crate) struct ReadyLists {
    lists: [VecDeque<u32>; CLASSES],
    passes: [u32; CLASSES],
    starvation_limit_passes: u32,
}

impl ReadyLists {
    pub(crate) fn new(starvation_limit_passes: u32) -> ReadyLists {
        ReadyLists {
            lists: Default::default(),
            passes: [0; CLASSES],
            starvation_limit_passes: starvation_limit_passes.max(1),
        }
    }

    pub(crate) fn push(&mut self, class: usize, slot: u32) {
        self.lists[class].push_back(slot);
    }

    pub(crate) fn pop(&mut self, class: usize) -> Option<u32> {
        self.lists[class].pop_front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lists.iter().all(VecDeque::is_empty)
    }

    /// The class to serve next, by the policy in the module docs.
    pub(crate) fn next_class(&mut self) -> Option<usize> {
        let first = self.lists.iter().position(|list| !list.is_empty())?;
        let mut chosen = first;
        let mut starved = None;
        for class in first + 1..CLASSES {
            if self.lists[class].is_empty() {
                continue;
            }
            self.passes[class] += 1;
            if starved.is_none() && self.passes[class] >= self.starvation_limit_passes {
                starved = Some(class);
            }
        }
        if let Some(class) = starved {
            chosen = class;
        }
        self.passes[chosen] = 0;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_class_goes_first() {
        let mut ready = ReadyLists::new(1000);
        ready.push(3, 1);
        ready.push(0, 2);
        ready.push(2, 3);
        assert_eq!(ready.next_class(), Some(0));
    }

    #[test]
    fn lower_classes_are_not_starved() {
        let limit = 8;
        let mut ready = ReadyLists::new(limit);
        for slot in 0..4 {
            ready.push(slot as usize, slot);
        }
        let mut served = [0u32; CLASSES];
        let picks = 10_000;
        for _ in 0..picks {
            // Every class stays non-empty: a flood of everything.
            let class = ready.next_class().unwrap();
            served[class] += 1;
        }
        assert!(served[0] > served[3], "critical is preferred: {served:?}");
        for (class, &count) in served.iter().enumerate() {
            assert!(
                count >= picks / (limit + 3),
                "class {class} starved: {served:?}"
            );
        }
    }

    #[test]
    fn empty_lists_pick_nothing() {
        let mut ready = ReadyLists::new(4);
        assert_eq!(ready.next_class(), None);
        assert!(ready.is_empty());
    }
}
