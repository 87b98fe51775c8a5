//! What confinement this host can provide, found by trying each layer in a
//! throw-away child process. Used at start-up and by `pyclave doctor`.

use serde::Serialize;

use super::Layer;

/// Per layer: available, or why not.
#[derive(Debug, Clone, Serialize)]
pub struct HostSupport {
    layers: Vec<(Layer, Result<(), String>)>,
}

impl HostSupport {
    /// Probes every layer. `has_pids_controller` comes from the cgroup
    /// set-up; `uid` is one the workers would run as.
    ///
    /// Forks: call it before anything else reaps children (the supervisor's
    /// reaper would take the probes' exit statuses).
    pub fn probe(has_pids_controller: bool, uid: u32) -> Self {
        let root = nix::unistd::geteuid().is_root();
        let namespaces = if root {
            check_in_child(
                || namespaces_work(uid),
                "cannot create the pid, mount, net, ipc, uts, cgroup and user namespaces",
            )
        } else {
            Err("the supervisor is not root (rootless mode needs the supervisor in its own user namespace)".into())
        };
        let minimal_root = match &namespaces {
            Ok(()) => check_in_child(private_tmpfs_mounts, "cannot mount a private tmpfs in a new mount namespace"),
            Err(_) => Err("needs the mount namespace".into()),
        };
        let unprivileged =
            if root { Ok(()) } else { Err("the supervisor is not root: workers cannot get distinct uids".into()) };
        let seccomp = check_in_child(seccomp_filter_loads, "the kernel refuses seccomp filters");
        let limits = if has_pids_controller { Ok(()) } else { Err("no pids cgroup controller".into()) };
        Self {
            layers: vec![
                (Layer::Namespaces, namespaces),
                (Layer::MinimalRoot, minimal_root),
                (Layer::UnprivilegedUser, unprivileged),
                (Layer::Seccomp, seccomp),
                (Layer::ResourceLimits, limits),
            ],
        }
    }

    /// A host as described, for tests of the decisions built on it.
    #[cfg(test)]
    pub(crate) fn described(layers: Vec<(Layer, Result<(), String>)>) -> Self {
        Self { layers }
    }

    pub fn get(&self, layer: Layer) -> &Result<(), String> {
        &self.layers.iter().find(|(l, _)| *l == layer).expect("every layer is probed").1
    }

    pub fn layers(&self) -> impl Iterator<Item = (Layer, &Result<(), String>)> {
        self.layers.iter().map(|(layer, support)| (*layer, support))
    }
}

fn check_in_child(test: impl FnOnce() -> bool, failure: &str) -> Result<(), String> {
    if run_in_child(test) { Ok(()) } else { Err(failure.to_owned()) }
}

/// Runs `test` in a forked child; true when it returned true.
fn run_in_child(test: impl FnOnce() -> bool) -> bool {
    // SAFETY: the child only makes raw syscalls through libc (no allocation,
    // no locks another thread could hold) and leaves with _exit, so forking a
    // multi-threaded process is sound here.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let status = if test() { 0 } else { 1 };
            // SAFETY: _exit ends the child without running the parent's
            // atexit handlers or destructors.
            unsafe { libc::_exit(status) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            matches!(nix::sys::wait::waitpid(child, None), Ok(nix::sys::wait::WaitStatus::Exited(_, 0)))
        }
        Err(_) => false,
    }
}

/// The worker's sequence: namespaces as root, then a user namespace as `uid`.
fn namespaces_work(uid: u32) -> bool {
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP
        | libc::CLONE_NEWPID;
    // SAFETY: plain syscalls on this (child) process's own credentials and
    // namespaces; no memory is shared with them.
    unsafe {
        libc::unshare(flags) == 0
            && libc::setresgid(uid, uid, uid) == 0
            && libc::setresuid(uid, uid, uid) == 0
            && libc::unshare(libc::CLONE_NEWUSER) == 0
    }
}

fn private_tmpfs_mounts() -> bool {
    // SAFETY: the strings are NUL-terminated literals; the mounts happen in
    // the child's new, private mount namespace and vanish with it.
    unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
            && libc::mount(c"tmpfs".as_ptr(), c"/tmp".as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()) == 0
    }
}

fn seccomp_filter_loads() -> bool {
    let mut allow_all = [libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW }];
    let program = libc::sock_fprog { len: 1, filter: allow_all.as_mut_ptr() };
    // SAFETY: `program` points at `allow_all`, which outlives the call; the
    // kernel copies the filter.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program as *const libc::sock_fprog, 0, 0)
                == 0
    }
}
