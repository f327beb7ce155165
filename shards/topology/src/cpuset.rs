//! Sets of OS CPU indexes: parsing Linux CPU lists and reading the affinity mask.

use std::collections::BTreeSet;
use std::fmt;

use crate::TopologyError;

/// CPU indexes must be below this. Linux's `CONFIG_NR_CPUS` tops out at 8192; the margin keeps
/// room for future machines while bounding what a CPU list such as `"0-4000000000"` can
/// allocate.
pub const CPU_INDEX_LIMIT: usize = 65_536;

/// The first affinity mask buffer tried, in bits (glibc's `cpu_set_t`).
const AFFINITY_MASK_BITS_INITIAL: usize = 1024;

const _: () = assert!(AFFINITY_MASK_BITS_INITIAL <= CPU_INDEX_LIMIT);
const _: () = assert!(CPU_INDEX_LIMIT.is_multiple_of(64));

/// A set of OS CPU indexes (hwloc PU `os_index`, Linux CPU numbers).
///
/// Iterates in ascending order; displays as a Linux CPU list such as `0-3,8`.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuSet(BTreeSet<usize>);

impl CpuSet {
    /// The empty set.
    pub fn new() -> CpuSet {
        CpuSet(BTreeSet::new())
    }

    /// The CPUs in ascending order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = usize> + '_ {
        self.0.iter().copied()
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: usize) -> bool {
        self.0.contains(&cpu)
    }

    /// Number of CPUs in the set.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set has no CPU.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `cpu`; returns whether it was new.
    pub fn insert(&mut self, cpu: usize) -> bool {
        self.0.insert(cpu)
    }

    /// The lowest CPU, if any.
    pub fn first(&self) -> Option<usize> {
        self.0.first().copied()
    }

    /// CPUs in both sets.
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.intersection(&other.0).copied().collect())
    }

    /// CPUs in `self` but not in `other`.
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }
}

impl FromIterator<usize> for CpuSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> CpuSet {
        CpuSet(iter.into_iter().collect())
    }
}

impl fmt::Display for CpuSet {
    /// A Linux CPU list: ascending, runs of two or more as `A-B`, e.g. `0-3,8`. Empty: ``.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cpus = self.iter().peekable();
        let mut first = true;
        while let Some(start) = cpus.next() {
            let mut end = start;
            while cpus.peek() == Some(&(end + 1)) {
                end += 1;
                cpus.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuSet({self})")
    }
}

/// Parses a Linux CPU list such as `"2-7,10"`, `"0"` or `"0-1, 4-5"`.
///
/// Whitespace around tokens is ignored. Reversed ranges (`"7-2"`), empty tokens, non-numbers
/// and indexes at or above [`CPU_INDEX_LIMIT`] are errors that name the bad token. An input of
/// only whitespace gives the empty set.
pub fn parse_cpu_list(input: &str) -> Result<CpuSet, TopologyError> {
    let mut set = CpuSet::new();
    if input.trim().is_empty() {
        return Ok(set);
    }
    for raw_token in input.split(',') {
        let token = raw_token.trim();
        let bad = |reason: &'static str| TopologyError::InvalidCpuList {
            input: input.to_owned(),
            token: token.to_owned(),
            reason,
        };
        let (start, end) = match token.split_once('-') {
            Some((start, end)) => (
                parse_index(start.trim(), &bad)?,
                parse_index(end.trim(), &bad)?,
            ),
            None => {
                let cpu = parse_index(token, &bad)?;
                (cpu, cpu)
            }
        };
        if start > end {
            return Err(bad("range start is above its end"));
        }
        set.0.extend(start..=end);
    }
    Ok(set)
}

fn parse_index(
    text: &str,
    bad: &impl Fn(&'static str) -> TopologyError,
) -> Result<usize, TopologyError> {
    if text.is_empty() {
        return Err(bad("empty CPU index"));
    }
    if !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(bad("not a decimal CPU index"));
    }
    match text.parse::<usize>() {
        Ok(cpu) if cpu < CPU_INDEX_LIMIT => Ok(cpu),
        _ => Err(bad("CPU index too large (limit 65536)")),
    }
}

/// The calling thread's affinity mask (`sched_getaffinity(0, ..)`).
///
/// Call it before pinning any thread: a thread spawned from a pinned thread inherits the
/// narrower mask.
pub fn current_affinity() -> Result<CpuSet, TopologyError> {
    let mut mask_bits = AFFINITY_MASK_BITS_INITIAL;
    loop {
        let mut words = vec![0u64; mask_bits / 64];
        let mask_bytes = words.len() * std::mem::size_of::<u64>();
        // SAFETY: `words` is a live, writable buffer of exactly `mask_bytes` bytes and the
        // kernel writes at most `mask_bytes` bytes into it. The kernel's mask is an array of
        // `unsigned long`, which is u64 here (asserted below), so any bits it writes form valid
        // u64 values. pid 0 means the calling thread.
        let result = unsafe {
            libc::sched_getaffinity(0, mask_bytes, words.as_mut_ptr().cast::<libc::cpu_set_t>())
        };
        if result == 0 {
            return Ok(cpus_of_mask(&words));
        }
        let source = std::io::Error::last_os_error();
        // EINVAL: the kernel's mask is larger than our buffer. Grow, within the limit.
        if source.raw_os_error() == Some(libc::EINVAL) && mask_bits < CPU_INDEX_LIMIT {
            mask_bits *= 2;
            continue;
        }
        return Err(TopologyError::Affinity { mask_bytes, source });
    }
}

// The kernel's affinity mask is an array of `unsigned long`; we read it as u64 words.
const _: () = assert!(std::mem::size_of::<libc::c_ulong>() == std::mem::size_of::<u64>());

fn cpus_of_mask(words: &[u64]) -> CpuSet {
    let mut set = CpuSet::new();
    for (word_index, &word) in words.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let bit = bits.trailing_zeros() as usize;
            set.insert(word_index * 64 + bit);
            bits &= bits - 1;
        }
    }
    set
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A panic is the failure report in tests.
mod tests {
    use super::*;

    fn cpus(list: &[usize]) -> CpuSet {
        list.iter().copied().collect()
    }

    #[test]
    fn parses_lists_ranges_and_whitespace() {
        assert_eq!(parse_cpu_list("0").unwrap(), cpus(&[0]));
        assert_eq!(
            parse_cpu_list("2-7,10").unwrap(),
            cpus(&[2, 3, 4, 5, 6, 7, 10])
        );
        assert_eq!(
            parse_cpu_list(" 0-1 , 4 - 5 ").unwrap(),
            cpus(&[0, 1, 4, 5])
        );
        assert_eq!(parse_cpu_list("3-3").unwrap(), cpus(&[3]));
        assert_eq!(parse_cpu_list("  ").unwrap(), CpuSet::new());
    }

    #[test]
    fn rejects_bad_tokens_by_name() {
        for (input, token) in [
            ("7-2", "7-2"),
            ("0,x", "x"),
            ("1,,2", ""),
            ("-1", "-1"),
            ("1-", "1-"),
            ("0-3,+4", "+4"),
            ("99999999999999999999999", "99999999999999999999999"),
            ("0-65536", "0-65536"),
        ] {
            match parse_cpu_list(input) {
                Err(TopologyError::InvalidCpuList { token: bad, .. }) => {
                    assert_eq!(bad, token, "input {input:?}")
                }
                other => panic!("{input:?} gave {other:?}"),
            }
        }
        let message = parse_cpu_list("2-7,9-8").unwrap_err().to_string();
        assert!(message.contains("\"9-8\""), "{message}");
    }

    #[test]
    fn displays_as_cpu_list_and_round_trips() {
        assert_eq!(cpus(&[0, 1, 2, 3, 8]).to_string(), "0-3,8");
        assert_eq!(cpus(&[1, 3, 4]).to_string(), "1,3-4");
        assert_eq!(CpuSet::new().to_string(), "");
        let set = cpus(&[0, 2, 3, 4, 9, 63, 64, 65]);
        assert_eq!(parse_cpu_list(&set.to_string()).unwrap(), set);
    }

    #[test]
    fn mask_words_map_to_cpu_indexes() {
        assert_eq!(cpus_of_mask(&[0b1011, 1 << 1]), cpus(&[0, 1, 3, 65]));
    }

    #[test]
    fn current_affinity_is_not_empty() {
        let affinity = current_affinity().unwrap();
        assert!(!affinity.is_empty());
    }
}
