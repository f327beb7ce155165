//! Helpers shared by the edge's unit tests (included with `#[path]`) and its end-to-end
//! tests.

/// Runs `f` on a new thread moved into a network namespace of its own, whose loopback
/// has an MTU of `mtu` bytes; threads and processes `f` starts inherit the namespace.
/// Needs root (as the suite does for memlock) and `ip` from iproute2.
pub fn in_own_network_with_mtu(mtu: u32, f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        // SAFETY: unshare(2) with a constant flag; it changes only this thread's
        // namespaces.
        let result = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            result,
            0,
            "unshare(CLONE_NEWNET) needs root: {}",
            std::io::Error::last_os_error()
        );
        let status = std::process::Command::new("ip")
            .args(["link", "set", "lo", "mtu", &mtu.to_string(), "up"])
            .status()
            .expect("ip(8) from iproute2");
        assert!(status.success(), "ip link set lo mtu {mtu} up: {status}");
        f();
    })
    .join()
    .expect("the test thread in its own network namespace");
}
