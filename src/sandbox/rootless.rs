//! Rootless start-up: how an unprivileged supervisor gets the powers the
//! layers need without any real privilege.
//!
//! Before the async runtime starts (a user namespace can only be entered
//! by a single-threaded process), [`enter`]:
//!
//! 1. enters a new user namespace in which the user's own uid and gid are 0
//!    and the workers' ids (`uid_base` onwards) are mapped to the
//!    user's subordinate range from `/etc/subuid` and `/etc/subgid`. The
//!    maps are written by `newuidmap`/`newgidmap` (the `uidmap` package)
//!    from a helper forked beforehand, which stays outside. Without a range
//!    only the user's own ids are mapped: the workers cannot get distinct
//!    uids and the `unprivileged_user` layer is unavailable (fail closed);
//! 2. forks the real supervisor as pid 1 of a new pid namespace, with a
//!    mount namespace and `/proc` of its own (so the pids it handles and
//!    `/proc/<pid>` agree). It dies with its parent, and every worker dies
//!    with it;
//! 3. stays behind as a shim that relays SIGINT and SIGTERM and exits with
//!    the supervisor's status.
//!
//! From there every layer is built as under real root, inside what the
//! user namespace owns. Cgroups need a delegated (user-owned) cgroup the
//! supervisor is started in; without one `memory_limit` is unavailable.

use std::io::{Read, Write};
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Gid, Pid, Uid};

#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    #[error("the process has {0} threads; a user namespace can only be entered single-threaded")]
    Threaded(usize),
    #[error("rootless start-up: {what}")]
    Sys {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("cannot map ids into the supervisor's user namespace: {0}")]
    IdMap(String),
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> RootlessError {
    move |source| RootlessError::Sys { what, source }
}

/// What a SIGINT or SIGTERM to the shim does to the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSignal {
    /// Relay it: the supervisor handles it (graceful shutdown).
    Relay,
    /// SIGKILL the supervisor: a pid 1 without a handler ignores signals.
    Kill,
}

static WORKER_IDS_UNMAPPED: OnceLock<String> = OnceLock::new();

/// Why the workers' ids are not mapped, when [`enter`] could map only the
/// user's own ids.
pub fn worker_ids_unmapped_reason() -> Option<&'static str> {
    WORKER_IDS_UNMAPPED.get().map(String::as_str)
}

/// Enters the supervisor's own user, pid and mount namespaces. Returns in
/// the supervisor (pid 1 of the new pid namespace); the calling process
/// becomes the shim and never returns.
pub fn enter(worker_uids: Range<u32>, on_signal: OnSignal) -> Result<(), RootlessError> {
    let (uid_base, slots) = (worker_uids.start, worker_uids.len() as u32);
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count);
    if threads != 1 {
        return Err(RootlessError::Threaded(threads));
    }
    let (uid, gid) = (Uid::effective(), Gid::effective());
    let target = nix::unistd::getpid();
    let (go_read, go_write) = nix::unistd::pipe().map_err(sys("pipe"))?;
    let (report_read, report_write) = nix::unistd::pipe().map_err(sys("pipe"))?;
    // SAFETY: this process is single-threaded (checked above), so the child
    // may allocate and run commands; it leaves with _exit.
    let helper = match unsafe { nix::unistd::fork() }.map_err(sys("fork the id-map helper"))? {
        ForkResult::Child => {
            drop((go_write, report_read));
            let go = std::fs::File::from(go_read).read_exact(&mut [0u8]);
            let report = match go {
                Ok(()) => match map_ids(target, uid, gid, uid_base, slots) {
                    Ok(None) => "ok".to_owned(),
                    Ok(Some(reason)) => format!("own-ids-only {reason}"),
                    Err(error) => format!("error {error}"),
                },
                Err(_) => "error the supervisor did not enter its user namespace".to_owned(),
            };
            let _ = std::fs::File::from(report_write).write_all(report.as_bytes());
            // SAFETY: _exit leaves without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    };
    drop((go_read, report_write));
    let entered = nix::sched::unshare(CloneFlags::CLONE_NEWUSER).map_err(sys("unshare(CLONE_NEWUSER)"));
    if entered.is_ok() {
        let _ = std::fs::File::from(go_write).write_all(b"1");
    } else {
        drop(go_write);
    }
    let mut report = String::new();
    let _ = std::fs::File::from(report_read).read_to_string(&mut report);
    let _ = nix::sys::wait::waitpid(helper, None);
    entered?;
    match report.split_once(' ').unwrap_or((report.as_str(), "")) {
        ("ok", _) => {}
        ("own-ids-only", reason) => {
            tracing::warn!(reason, "only the supervisor's own uid is mapped: workers cannot get distinct uids");
            let _ = WORKER_IDS_UNMAPPED.set(reason.to_owned());
        }
        (_, error) => return Err(RootlessError::IdMap(error.to_owned())),
    }

    nix::sched::unshare(CloneFlags::CLONE_NEWPID).map_err(sys("unshare(CLONE_NEWPID)"))?;
    let host_proc =
        nix::fcntl::open("/proc", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
            .map_err(sys("open /proc"))?;
    // SAFETY: still single-threaded; the child goes on to run the supervisor.
    match unsafe { nix::unistd::fork() }.map_err(sys("fork the supervisor"))? {
        ForkResult::Child => become_supervisor(host_proc),
        ForkResult::Parent { child } => relay_signals_and_wait(child, on_signal),
    }
}

/// In the new pid namespace's first process: die with the shim, remember
/// the host's view, and mount a `/proc` that shows this namespace.
fn become_supervisor(host_proc: OwnedFd) -> Result<(), RootlessError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("set the parent-death signal"))?;
    // The host's /proc is still mounted: its `self` is our host pid.
    let host_pid = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|link| link.to_str().and_then(|pid| pid.parse().ok()))
        .ok_or(RootlessError::Sys { what: "read the host pid", source: nix::Error::EINVAL })?;
    crate::instance::record_host_view(host_pid, host_proc);
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(sys("unshare(CLONE_NEWNS)"))?;
    nix::mount::mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(sys("make mounts private"))?;
    nix::mount::mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(sys("mount /proc"))
}

static SUPERVISOR_PID: AtomicI32 = AtomicI32::new(0);
static KILL_ON_SIGNAL: AtomicBool = AtomicBool::new(false);

extern "C" fn relay(signal: libc::c_int) {
    let graceful = (signal == libc::SIGINT || signal == libc::SIGTERM) && !KILL_ON_SIGNAL.load(Ordering::Relaxed);
    let sent = if graceful { signal } else { libc::SIGKILL };
    // SAFETY: kill is async-signal-safe and takes no pointers.
    unsafe { libc::kill(SUPERVISOR_PID.load(Ordering::Relaxed), sent) };
}

/// The shim: relays signals to the supervisor, exits with its status.
fn relay_signals_and_wait(supervisor: Pid, on_signal: OnSignal) -> ! {
    SUPERVISOR_PID.store(supervisor.as_raw(), Ordering::Relaxed);
    KILL_ON_SIGNAL.store(on_signal == OnSignal::Kill, Ordering::Relaxed);
    let action = SigAction::new(SigHandler::Handler(relay), SaFlags::SA_RESTART, SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
        // SAFETY: `relay` only loads atomics and calls kill, both
        // async-signal-safe.
        let _ = unsafe { nix::sys::signal::sigaction(signal, &action) };
    }
    let code = loop {
        match nix::sys::wait::waitpid(supervisor, None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, signal, _)) => break 128 + signal as i32,
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(_) => break 1,
        }
    };
    std::process::exit(code)
}

/// In the helper, outside the new namespace: maps the user's ids to 0 and
/// the workers' ids to subordinate ones. Returns why only the user's own
/// ids could be mapped, if so.
fn map_ids(target: Pid, uid: Uid, gid: Gid, base: u32, slots: u32) -> Result<Option<String>, String> {
    let user = nix::unistd::User::from_uid(uid).ok().flatten().map(|user| user.name);
    let mut problems = Vec::new();
    for (file, tool, own, map) in
        [("/etc/subuid", "newuidmap", uid.as_raw(), "uid_map"), ("/etc/subgid", "newgidmap", gid.as_raw(), "gid_map")]
    {
        let mapped = match std::fs::read_to_string(file)
            .ok()
            .and_then(|text| subordinate_start(&text, user.as_deref(), uid.as_raw(), slots))
        {
            Some(start) => run_id_mapper(tool, target, own, base, start, slots),
            None => Err(format!("no range of {slots} ids for {} in {file}", user.as_deref().unwrap_or("this user"))),
        };
        if let Err(problem) = mapped {
            write_own_map(target, map, own)?;
            problems.push(problem);
        }
    }
    Ok((!problems.is_empty()).then(|| problems.join("; ")))
}

fn run_id_mapper(tool: &str, target: Pid, own: u32, base: u32, start: u32, slots: u32) -> Result<(), String> {
    let args = [target.as_raw() as u32, 0, own, 1, base, start, slots].map(|n| n.to_string());
    match Command::new(tool).args(&args).output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!("{tool} failed: {}", String::from_utf8_lossy(&output.stderr).trim())),
        Err(error) => Err(format!("cannot run {tool} (the uidmap package): {error}")),
    }
}

/// Maps only `own` to 0, which a user may do for itself (setgroups must be
/// denied first for the gid map).
fn write_own_map(target: Pid, map: &str, own: u32) -> Result<(), String> {
    if map == "gid_map" {
        std::fs::write(format!("/proc/{target}/setgroups"), "deny").map_err(|e| format!("deny setgroups: {e}"))?;
    }
    std::fs::write(format!("/proc/{target}/{map}"), format!("0 {own} 1")).map_err(|e| format!("write {map}: {e}"))
}

/// The first subordinate range of at least `count` ids for the user (by
/// name or uid) in the text of `/etc/subuid` or `/etc/subgid`.
fn subordinate_start(text: &str, user: Option<&str>, uid: u32, count: u32) -> Option<u32> {
    let uid = uid.to_string();
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let (owner, start, length) = (fields.next()?, fields.next()?, fields.next()?);
        let ours = owner == uid || Some(owner) == user;
        let (start, length): (u32, u32) = (start.parse().ok()?, length.parse().ok()?);
        (ours && length >= count).then_some(start)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_are_found_by_name_or_uid_and_size() {
        let text = "alice:100000:65536\nbob:165536:8\nbob:300000:65536\n1001:400000:100\n";
        assert_eq!(subordinate_start(text, Some("alice"), 1000, 20), Some(100_000));
        assert_eq!(subordinate_start(text, Some("bob"), 1002, 20), Some(300_000), "the first range too small");
        assert_eq!(subordinate_start(text, None, 1001, 20), Some(400_000));
        assert_eq!(subordinate_start(text, Some("carol"), 1003, 1), None);
        assert_eq!(subordinate_start("garbage\n::\n", Some("x"), 1, 1), None);
    }
}
