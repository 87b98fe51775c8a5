//! How workers end, whoever reaps them.
//!
//! Workers are children of the zygote, which reaps them and reports each
//! status with the worker's id. The supervisor is a child subreaper, so when
//! the zygote dies its workers become the supervisor's children and the
//! SIGCHLD loop here reaps them, by pid. Both paths deliver into one
//! registry: a worker's handle waits on its id without caring which path
//! reports it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

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

/// How a worker ended: its exit status, or the zygote's reason it was never
/// forked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEnd {
    Exited(ExitStatus),
    NotForked(String),
}

/// Resolves with a forked worker's exit status, `None` if it can no longer
/// be known (the registry gave up on it).
pub struct ExitWatch(oneshot::Receiver<WorkerEnd>);

impl ExitWatch {
    pub fn new(end: oneshot::Receiver<WorkerEnd>) -> Self {
        Self(end)
    }
}

impl Future for ExitWatch {
    type Output = Option<ExitStatus>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(context).map(|end| match end {
            Ok(WorkerEnd::Exited(status)) => Some(status),
            Ok(WorkerEnd::NotForked(_)) | Err(_) => None,
        })
    }
}

/// Where workers' ends are delivered and awaited, by worker id. A worker is
/// watched before it is spawned; its pid, once known, lets the supervisor
/// deliver the status itself when it reaps the worker (the zygote died).
/// Statuses of pids nobody watches (orphaned grandchildren) are dropped.
#[derive(Clone, Default)]
pub struct ExitRegistry {
    inner: Arc<Mutex<Watches>>,
}

#[derive(Default)]
struct Watches {
    waiting: HashMap<u64, oneshot::Sender<WorkerEnd>>,
    workers_by_pid: HashMap<Pid, u64>,
}

impl ExitRegistry {
    /// Resolves when worker `worker_id` has ended.
    pub fn watch(&self, worker_id: u64) -> oneshot::Receiver<WorkerEnd> {
        let (sender, receiver) = oneshot::channel();
        self.lock().waiting.insert(worker_id, sender);
        receiver
    }

    /// Stops watching a worker that will not be reported (its spawn never
    /// reached a zygote).
    pub fn forget(&self, worker_id: u64) {
        let mut watches = self.lock();
        watches.waiting.remove(&worker_id);
        watches.workers_by_pid.retain(|_, id| *id != worker_id);
    }

    /// Records the pid of a watched worker.
    pub fn identify(&self, worker_id: u64, pid: Pid) {
        let mut watches = self.lock();
        if watches.waiting.contains_key(&worker_id) {
            watches.workers_by_pid.insert(pid, worker_id);
        }
    }

    pub fn deliver(&self, worker_id: u64, end: WorkerEnd) {
        let sender = {
            let mut watches = self.lock();
            watches.workers_by_pid.retain(|_, id| *id != worker_id);
            watches.waiting.remove(&worker_id)
        };
        if let Some(sender) = sender {
            let _ = sender.send(end);
        }
    }

    fn deliver_pid(&self, pid: Pid, status: ExitStatus) {
        let worker_id = self.lock().workers_by_pid.get(&pid).copied();
        if let Some(worker_id) = worker_id {
            self.deliver(worker_id, WorkerEnd::Exited(status));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watches> {
        self.inner.lock().expect("registry lock")
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
                Ok(WaitStatus::Exited(pid, code)) => self.deliver_pid(pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => self.deliver_pid(pid, ExitStatus::Signal(signal as i32)),
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
    fn ends_reach_watchers_by_worker_or_by_pid_and_unknown_pids_are_dropped() {
        let registry = ExitRegistry::default();
        let mut first = registry.watch(1);
        registry.deliver(2, WorkerEnd::Exited(ExitStatus::Code(0)));
        assert!(first.try_recv().is_err(), "another worker's end is not ours");
        registry.deliver(1, WorkerEnd::Exited(ExitStatus::Signal(9)));
        assert_eq!(first.try_recv(), Ok(WorkerEnd::Exited(ExitStatus::Signal(9))));

        let mut second = registry.watch(3);
        registry.deliver_pid(Pid::from_raw(30), ExitStatus::Code(1));
        assert!(second.try_recv().is_err(), "the pid was not known yet");
        registry.identify(3, Pid::from_raw(30));
        registry.deliver_pid(Pid::from_raw(30), ExitStatus::Code(1));
        assert_eq!(second.try_recv(), Ok(WorkerEnd::Exited(ExitStatus::Code(1))));

        let _forgotten = registry.watch(4);
        registry.identify(4, Pid::from_raw(40));
        registry.forget(4);
        let watches = registry.lock();
        assert!(watches.waiting.is_empty() && watches.workers_by_pid.is_empty());
    }
}
