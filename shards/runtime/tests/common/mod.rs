//! Helpers shared by this crate's integration tests.

/// Nodes pin their shards to the same two CPUs: two busy-polling nodes at once would share
/// cores and crawl, so the tests of one binary take turns.
static ONE_NODE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for this test's turn to run a node.
pub fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_NODE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The two CPUs the test nodes pin their shards to (with one CPU both shards share it:
/// slower, still correct).
pub fn cpus() -> Vec<usize> {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    let mut cpus: Vec<usize> = ids.into_iter().map(|id| id.id).collect();
    cpus.sort_unstable();
    while cpus.len() < 2 {
        cpus.push(cpus.first().copied().unwrap_or(0));
    }
    cpus.truncate(2);
    cpus
}
