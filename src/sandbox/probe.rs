//! What confinement this host can provide, found by trying each layer in a
//! throw-away child process. Used at start-up and by `pyclave doctor`.

use serde::Serialize;

use super::Layer;
use crate::cgroup::Cgroups;

/// Per layer: available, or why not.
#[derive(Debug, Clone, Serialize)]
pub struct HostSupport {
    layers: Vec<(Layer, Result<(), String>)>,
}

impl HostSupport {
    /// Probes every layer. `cgroups` is what the cgroup set-up found (the
    /// memory and pids layers); `worker_uids` are the ids workers run as.
    ///
    /// Forks: call it before anything else reaps children (the supervisor's
    /// reaper would take the probes' exit statuses).
    pub fn probe(cgroups: Result<&Cgroups, String>, worker_uids: std::ops::Range<u32>) -> Self {
        // Root here is real root, or root of the user namespace a rootless
        // supervisor made for itself (see `rootless`).
        let root = nix::unistd::geteuid().is_root();
        let namespaces = if root {
            check_in_child(namespaces_work, "cannot create the pid, mount, net, ipc, uts, cgroup and user namespaces")
        } else {
            Err("the supervisor is not root, not even in its own user namespace".into())
        };
        let minimal_root = match &namespaces {
            Ok(()) => check_in_child(
                minimal_root_mounts_work,
                "cannot mount a private tmpfs in a new mount namespace and make it read-only with mount_setattr \
                 (Linux 5.12)",
            ),
            Err(_) => Err("needs the mount namespace".into()),
        };
        let unprivileged = if worker_uids.start == 0 {
            Err("uid_base must not be 0".into())
        } else if run_in_child(|| can_become(worker_uids.start)) && run_in_child(|| can_become(worker_uids.end - 1)) {
            Ok(())
        } else {
            Err(match super::rootless::worker_ids_unmapped_reason() {
                Some(reason) => format!(
                    "rootless without subordinate ids ({reason}): give the user a range in /etc/subuid and \
                     /etc/subgid and install newuidmap/newgidmap (the uidmap package)"
                ),
                None => format!("cannot switch to the workers' uids {worker_uids:?}"),
            })
        };
        let seccomp = check_in_child(seccomp_filter_loads, "the kernel refuses seccomp filters");
        let (memory, limits) = match cgroups {
            Ok(cgroups) if cgroups.has_pids() => (Ok(()), Ok(())),
            Ok(_) => (Ok(()), Err("no pids cgroup controller".into())),
            Err(reason) => (Err(reason), Err("no usable cgroup for a pids limit".into())),
        };
        Self {
            layers: vec![
                (Layer::Namespaces, namespaces),
                (Layer::MinimalRoot, minimal_root),
                (Layer::UnprivilegedUser, unprivileged),
                (Layer::Seccomp, seccomp),
                (Layer::MemoryLimit, memory),
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

/// The worker's namespaces, then a user namespace of its own.
fn namespaces_work() -> bool {
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP
        | libc::CLONE_NEWPID;
    // SAFETY: plain syscalls on this (child) process's own namespaces; no
    // memory is shared with them.
    unsafe { libc::unshare(flags) == 0 && libc::unshare(libc::CLONE_NEWUSER) == 0 }
}

/// Whether this process may take `id` as its uid and gid (it is mapped in
/// our user namespace and we may switch to it).
fn can_become(id: u32) -> bool {
    // SAFETY: plain syscalls on the calling (child) process's credentials.
    unsafe { libc::setresgid(id, id, id) == 0 && libc::setresuid(id, id, id) == 0 }
}

fn minimal_root_mounts_work() -> bool {
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
            && mounts_made_read_only(c"/tmp")
    }
}

/// `struct mount_attr` of mount_setattr(2), which the libc crate lacks.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// Whether `path` and the mounts under it can be made read-only in one
/// call, as the zygote does with every read-only path (Linux 5.12).
fn mounts_made_read_only(path: &std::ffi::CStr) -> bool {
    let attributes = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
    // SAFETY: `path` is NUL-terminated and `attributes` is a live struct of
    // the size passed; the kernel only reads both.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE,
            &raw const attributes,
            std::mem::size_of::<MountAttr>(),
        ) == 0
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
