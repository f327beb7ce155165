//! Agent identities.

use std::fmt;

/// FNV-1a 64 offset basis (<http://www.isthe.com/chongo/tech/comp/fnv/>).
const FNV1A_64_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
const FNV1A_64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The 64-bit identity of an agent: the address in a frame's `to` and `from`.
///
/// Routing is a pure function of this number, so every shard and every node
/// computes the same owner for the same id without asking anyone.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct AgentId(pub u64);

impl AgentId {
    /// The id of a named agent: FNV-1a 64 over the name's UTF-8 bytes.
    ///
    /// This is part of the wire contract: the same name maps to the same id in
    /// every process, every build and every language (FNV-1a is easy to
    /// reimplement), so `AgentId::from_name("echo")` can be written down in a
    /// config file, a test or a guest SDK. It is not a cryptographic hash;
    /// names are chosen by operators, not attackers.
    ///
    /// ```
    /// use dataplane_frame::AgentId;
    /// const ECHO: AgentId = AgentId::from_name("echo");
    /// assert_eq!(AgentId::from_name(""), AgentId(0xcbf2_9ce4_8422_2325));
    /// assert_ne!(ECHO, AgentId::from_name("Echo"));
    /// ```
    pub const fn from_name(name: &str) -> AgentId {
        let bytes = name.as_bytes();
        let mut hash = FNV1A_64_OFFSET_BASIS;
        let mut index = 0;
        while index < bytes.len() {
            hash ^= bytes[index] as u64;
            hash = hash.wrapping_mul(FNV1A_64_PRIME);
            index += 1;
        }
        AgentId(hash)
    }
}

impl fmt::Display for AgentId {
    /// Sixteen lower-case hex digits, the same width for every id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_64_reference_vectors() {
        // Vectors from the FNV reference test suite.
        assert_eq!(AgentId::from_name("").0, 0xcbf2_9ce4_8422_2325);
        assert_eq!(AgentId::from_name("a").0, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(AgentId::from_name("foobar").0, 0x8594_4171_f739_67e8);
    }

    #[test]
    fn from_name_is_usable_in_const_context() {
        const ECHO: AgentId = AgentId::from_name("echo");
        assert_eq!(ECHO, AgentId::from_name("echo"));
    }

    #[test]
    fn display_is_fixed_width_hex() {
        assert_eq!(AgentId(0xab).to_string(), "00000000000000ab");
    }
}
