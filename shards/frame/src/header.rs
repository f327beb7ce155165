//! The plain-Rust header: what a frame says besides its payload.

use std::ops::{BitOr, BitOrAssign};

use crate::{AgentId, FrameError};

/// What the sender means by a message: the FIPA ACL communicative acts the
/// runtime understands. The discriminant is the byte on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[repr(u8)]
pub enum Performative {
    /// Asks the receiver to perform an action.
    Request = 0,
    /// Tells the receiver that a proposition is true.
    Inform = 1,
    /// Asks the receiver for information.
    Query = 2,
    /// Offers to perform an action under conditions.
    Propose = 3,
    /// Agrees to perform a requested action.
    Agree = 4,
    /// Refuses to perform a requested action.
    Refuse = 5,
    /// Tells the requester that an attempted action failed.
    Failure = 6,
    /// Tells the sender that its message was not understood.
    NotUnderstood = 7,
}

impl Performative {
    /// Every performative, in wire order.
    pub const ALL: [Performative; 8] = [
        Performative::Request,
        Performative::Inform,
        Performative::Query,
        Performative::Propose,
        Performative::Agree,
        Performative::Refuse,
        Performative::Failure,
        Performative::NotUnderstood,
    ];
}

impl TryFrom<u8> for Performative {
    type Error = FrameError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Performative::ALL
            .get(usize::from(value))
            .copied()
            .ok_or(FrameError::BadPerformative { value })
    }
}

/// Scheduling class of a frame. Lower values are served first; the
/// discriminant is the byte on the wire and the index of the class's queue.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[repr(u8)]
pub enum Priority {
    /// Control traffic that must not wait behind data (membership, shutdown).
    Critical = 0,
    /// Latency-sensitive data.
    High = 1,
    /// The default for data.
    Normal = 2,
    /// Bulk or background traffic.
    Low = 3,
}

impl Priority {
    /// Number of priority classes: the length of a per-class array.
    pub const COUNT: usize = 4;

    /// Every priority, from most to least urgent.
    pub const ALL: [Priority; Priority::COUNT] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// Index of this class in a `[T; Priority::COUNT]`, `0` being most urgent.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl TryFrom<u8> for Priority {
    type Error = FrameError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Priority::ALL
            .get(usize::from(value))
            .copied()
            .ok_or(FrameError::BadPriority { value })
    }
}

/// Per-frame flag bits.
///
/// The 16 bits are split in two halves, so the format can grow without a
/// version bump:
/// - bits 0..8 are *must-understand*: a receiver that does not know a set bit
///   rejects the frame ([`FrameError::UnknownFlags`]), because ignoring it
///   could change the meaning of the message. Known today: [`Flags::REPLY`]
///   and [`Flags::ERROR`].
/// - bits 8..16 are *reserved-ok* ([`Flags::IGNORABLE`]): hints a newer sender
///   may set (tracing, sampling) that an older receiver may ignore. Validation
///   accepts them and this crate gives them no meaning.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct Flags(pub u16);

impl Flags {
    /// No flags.
    pub const NONE: Flags = Flags(0);
    /// The frame answers an earlier frame: its `correlation_id` is the
    /// request's (see [`Header::reply_to`]).
    pub const REPLY: Flags = Flags(1 << 0);
    /// The payload is a UTF-8 description of an error, not a normal body.
    pub const ERROR: Flags = Flags(1 << 1);
    /// Must-understand bits this version knows.
    pub const KNOWN: Flags = Flags(Flags::REPLY.0 | Flags::ERROR.0);
    /// Bits a receiver may ignore (reserved-ok); never rejected.
    pub const IGNORABLE: Flags = Flags(0xff00);

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Must-understand bits this version does not know; zero when the flags
    /// are acceptable.
    pub const fn unknown_bits(self) -> u16 {
        self.0 & !(Flags::KNOWN.0 | Flags::IGNORABLE.0)
    }

    /// `Ok(self)` when every set bit is known or ignorable.
    pub const fn checked(self) -> Result<Flags, FrameError> {
        match self.unknown_bits() {
            0 => Ok(self),
            bits => Err(FrameError::UnknownFlags { bits }),
        }
    }
}

impl BitOr for Flags {
    type Output = Flags;

    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

/// The header of a frame as plain Rust values.
///
/// Ids are opaque to the frame layer. By convention a sender picks a fresh
/// `correlation_id` for every request and keeps `conversation_id` for every
/// frame of one multi-step exchange.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Header {
    /// Receiver; routing looks only at this.
    pub to: AgentId,
    /// Sender; where replies go.
    pub from: AgentId,
    /// Groups the frames of one exchange (FIPA `conversation-id`).
    pub conversation_id: u64,
    /// Matches a reply to its request (FIPA `reply-with`/`in-reply-to`).
    pub correlation_id: u64,
    /// What the sender means.
    pub performative: Performative,
    /// Scheduling class.
    pub priority: Priority,
    /// Flag bits; see [`Flags`].
    pub flags: Flags,
}

impl Header {
    /// The header of a reply to a frame with this header.
    ///
    /// Reply semantics: `to` and `from` are swapped; `conversation_id` and
    /// `correlation_id` are copied unchanged, so the requester matches the
    /// reply by `(from of the reply, correlation_id)`; `priority` is kept, so
    /// an answer travels in its request's class; `flags` become exactly
    /// [`Flags::REPLY`] (add [`Flags::ERROR`] for an error body). A reply to a
    /// reply is allowed and follows the same rule.
    ///
    /// ```
    /// use dataplane_frame::{AgentId, Flags, Header, Performative, Priority};
    /// let request = Header {
    ///     to: AgentId::from_name("echo"),
    ///     from: AgentId::from_name("client"),
    ///     conversation_id: 7,
    ///     correlation_id: 42,
    ///     performative: Performative::Request,
    ///     priority: Priority::High,
    ///     flags: Flags::NONE,
    /// };
    /// let reply = request.reply_to(Performative::Inform);
    /// assert_eq!((reply.to, reply.from), (request.from, request.to));
    /// assert_eq!(reply.correlation_id, 42);
    /// assert!(reply.flags.contains(Flags::REPLY));
    /// ```
    pub fn reply_to(&self, performative: Performative) -> Header {
        Header {
            to: self.from,
            from: self.to,
            conversation_id: self.conversation_id,
            correlation_id: self.correlation_id,
            performative,
            priority: self.priority,
            flags: Flags::REPLY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn performative_round_trips_through_its_byte() {
        for performative in Performative::ALL {
            assert_eq!(Performative::try_from(performative as u8), Ok(performative));
        }
        assert_eq!(
            Performative::try_from(8),
            Err(FrameError::BadPerformative { value: 8 })
        );
    }

    #[test]
    fn priority_round_trips_and_indexes() {
        for (index, priority) in Priority::ALL.into_iter().enumerate() {
            assert_eq!(Priority::try_from(priority as u8), Ok(priority));
            assert_eq!(priority.index(), index);
        }
        assert_eq!(
            Priority::try_from(4),
            Err(FrameError::BadPriority { value: 4 })
        );
    }

    #[test]
    fn flags_reject_unknown_must_understand_bits_only() {
        assert_eq!(Flags::KNOWN.checked(), Ok(Flags::KNOWN));
        assert_eq!(Flags(0xff03).checked(), Ok(Flags(0xff03)));
        assert_eq!(
            Flags(0x0084).checked(),
            Err(FrameError::UnknownFlags { bits: 0x0084 })
        );
    }

    #[test]
    fn reply_swaps_ends_and_keeps_ids() {
        let request = Header {
            to: AgentId(1),
            from: AgentId(2),
            conversation_id: 3,
            correlation_id: 4,
            performative: Performative::Query,
            priority: Priority::Low,
            flags: Flags::ERROR,
        };
        let reply = request.reply_to(Performative::Failure);
        let expected = Header {
            to: AgentId(2),
            from: AgentId(1),
            performative: Performative::Failure,
            flags: Flags::REPLY,
            ..request
        };
        assert_eq!(reply, expected);
    }
}
