//! Exit statuses of worker processes, whoever reaps them.
//!
//! Workers are children of the zygote, which reaps them and reports each
//! status. The supervisor is a child subreaper, so when the zygote dies its
//! workers become the supervisor's children and the SIGCHLD loop here reaps
//! them. Both paths deliver into one registry: a worker's handle waits on
//! its pid without caring which path reports it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// Decodes a raw status from waitpid(2).
    pub fn from_raw(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            Self::Signal(libc::WTERMSIG(status))
        } else {
            Self::Code(libc::WEXITSTATUS(status))
        }
    }
}

/// Where exit statuses are delivered and awaited. A pid must be watched
/// before it can exit (workers are: the zygote reports `Spawned` before it
/// reaps); statuses of pids nobody watches (orphaned grandchildren) are dropped.
#[derive(Clone, Default)]
pub struct ExitRegistry {
    waiting: Arc<Mutex<HashMap<Pid, oneshot::Sender<ExitStatus>>>>,
}

impl ExitRegistry {
    /// Resolves when `pid` has exited and been reaped (by the zygote or us).
    pub fn watch(&self, pid: Pid) -> oneshot::Receiver<ExitStatus> {
        let (sender, receiver) = oneshot::channel();
        self.waiting.lock().expect("registry lock").insert(pid, sender);
        receiver
    }

    pub fn deliver(&self, pid: Pid, status: ExitStatus) {
        let sender = self.waiting.lock().expect("registry lock").remove(&pid);
        if let Some(sender) = sender {
            let _ = sender.send(status);
        }
    }

    /// Makes this process a child subreaper and reaps every child that
    /// exits, forever. Call once, from the supervisor process.
    pub async fn reap_children(self) -> std::io::Result<()> {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and touches no
        // memory of ours.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut sigchld = signal(SignalKind::child())?;
        loop {
            self.reap_exited();
            // A periodic sweep as well: SIGCHLDs coalesce, and an orphan may
            // be reparented to us after the signal we saw.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sigchld.recv()).await;
        }
    }

    fn reap_exited(&self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.deliver(pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => self.deliver(pid, ExitStatus::Signal(signal as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(error) => {
                    tracing::error!(%error, "waitpid failed");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_statuses_decode() {
        assert_eq!(ExitStatus::from_raw(0), ExitStatus::Code(0));
        assert_eq!(ExitStatus::from_raw(3 << 8), ExitStatus::Code(3));
        assert_eq!(ExitStatus::from_raw(9), ExitStatus::Signal(9));
        assert_eq!(ExitStatus::from_raw(11 | 0x80), ExitStatus::Signal(11), "core-dump bit ignored");
    }

    #[test]
    fn statuses_reach_watchers_and_unwatched_pids_are_dropped() {
        let registry = ExitRegistry::default();
        let mut watched = registry.watch(Pid::from_raw(10));
        registry.deliver(Pid::from_raw(11), ExitStatus::Code(0));
        assert!(watched.try_recv().is_err(), "another pid's exit is not ours");
        registry.deliver(Pid::from_raw(10), ExitStatus::Signal(9));
        assert_eq!(watched.try_recv(), Ok(ExitStatus::Signal(9)));
        assert!(registry.waiting.lock().expect("lock").is_empty());
    }
}
