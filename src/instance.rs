//! This supervisor's name on the host, and whether another one still lives.
//!
//! A supervisor names its runtime directory and its cgroup instance after
//! its pid as the host sees it. Under real root that is `getpid()`; a
//! rootless supervisor is pid 1 of its own pid namespace with a `/proc` of
//! its own, so [`crate::sandbox::rootless`] records the host pid and keeps
//! the host's `/proc` open before it mounts that.

use std::os::fd::OwnedFd;
use std::sync::OnceLock;

struct HostView {
    pid: u32,
    proc_dir: OwnedFd,
}

static HOST_VIEW: OnceLock<HostView> = OnceLock::new();

/// Records the host's view; called once, before the supervisor's pid
/// namespace hides it. Later calls are ignored.
pub(crate) fn record_host_view(pid: u32, proc_dir: OwnedFd) {
    let _ = HOST_VIEW.set(HostView { pid, proc_dir });
}

/// This supervisor's pid on the host.
pub fn host_pid() -> u32 {
    HOST_VIEW.get().map_or_else(std::process::id, |view| view.pid)
}

/// Whether host pid `pid` is a live process (another supervisor's name).
pub fn host_process_exists(pid: u32) -> bool {
    let name = pid.to_string();
    match HOST_VIEW.get() {
        Some(view) => nix::unistd::faccessat(
            &view.proc_dir,
            name.as_str(),
            nix::unistd::AccessFlags::F_OK,
            nix::fcntl::AtFlags::empty(),
        )
        .is_ok(),
        None => std::path::Path::new("/proc").join(name).exists(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_free_pid_is_not() {
        assert!(host_process_exists(host_pid()));
        let max: u32 =
            std::fs::read_to_string("/proc/sys/kernel/pid_max").expect("pid_max").trim().parse().expect("a number");
        assert!(!host_process_exists(max + 1));
    }
}
