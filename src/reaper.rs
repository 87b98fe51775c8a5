//! How workers end, whoever reaps them.
//!
//! Workers are children of the zygote, which reaps them and reports each
//! status with the worker's id. The supervisor is a child subreaper, so when
//! the zygote dies its workers become the supervisor's children and the
//! SIGCHLD loop here reaps them, by pid. Both paths deliver into one
//! registry: a worker's handle waits on its id without caring which path
//! reports it.

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

/// How a worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEnd {
    /// It exited (reaped by the zygote, or by the supervisor).
    Exited(ExitStatus),
    /// Its end will not be reported: the zygote could not fork it, or died
    /// before the worker was identified (the reason says which).
    Unreported(String),
}

/// A watch on one worker's end, from before its spawn is asked for. Once
/// the end has come, it stays (awaiting again gives it again); dropping the
/// watch stops watching.
pub struct EndWatch {
    registry: ExitRegistry,
    worker_id: u64,
    receiver: oneshot::Receiver<WorkerEnd>,
    ended: Option<WorkerEnd>,
}

impl EndWatch {
    /// Resolves with the worker's end.
    pub async fn ended(&mut self) -> WorkerEnd {
        if let Some(end) = &self.ended {
            return end.clone();
        }
        let end = (&mut self.receiver).await.unwrap_or_else(|_| WorkerEnd::Unreported("no longer watched".into()));
        self.ended = Some(end.clone());
        end
    }

    /// Resolves with the worker's exit status, `None` if it has none.
    pub async fn exit_status(&mut self) -> Option<ExitStatus> {
        match self.ended().await {
            WorkerEnd::Exited(status) => Some(status),
            WorkerEnd::Unreported(_) => None,
        }
    }

    /// Records the worker's pid (from its first message), so the supervisor
    /// can deliver its status should it reap the worker itself.
    pub fn identify(&self, pid: Pid) {
        if let Some(watched) = self.registry.lock().get_mut(&self.worker_id) {
            watched.pid = Some(pid);
        }
    }

    /// The worker's end if it has come, without waiting.
    pub fn end_so_far(&mut self) -> Option<WorkerEnd> {
        if self.ended.is_none() {
            self.ended = self.receiver.try_recv().ok();
        }
        self.ended.clone()
    }
}

impl Drop for EndWatch {
    fn drop(&mut self) {
        self.registry.remove(self.worker_id);
    }
}

/// Where workers' ends are delivered and awaited, by worker id. The zygote
/// reports ends by worker id; when the supervisor reaps a worker itself
/// (the zygote died), the worker's pid leads to its id. Statuses of pids
/// nobody watches (orphaned grandchildren) are dropped.
#[derive(Clone, Default)]
pub struct ExitRegistry {
    waiting: Arc<Mutex<HashMap<u64, Watched>>>,
}

struct Watched {
    sender: oneshot::Sender<WorkerEnd>,
    /// The zygote (by its generation) the spawn was sent to.
    zygote: Option<u64>,
    pid: Option<Pid>,
}

impl ExitRegistry {
    /// Watches worker `worker_id`, before its spawn is asked for.
    pub fn watch(&self, worker_id: u64) -> EndWatch {
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(worker_id, Watched { sender, zygote: None, pid: None });
        EndWatch { registry: self.clone(), worker_id, receiver, ended: None }
    }

    /// Whether anybody still waits for worker `worker_id` (a spawn nobody
    /// waits for is not sent).
    pub fn is_watched(&self, worker_id: u64) -> bool {
        self.lock().contains_key(&worker_id)
    }

    /// Records that the spawn of `worker_id` went to zygote `generation`.
    pub fn sent(&self, worker_id: u64, generation: u64) {
        if let Some(watched) = self.lock().get_mut(&worker_id) {
            watched.zygote = Some(generation);
        }
    }

    /// Zygote `generation` died: the workers it was asked for that have not
    /// identified themselves will never be reported (those it forked are
    /// adopted by the supervisor, unknown; their cgroups are killed when
    /// they are retired, even one that speaks after all).
    pub fn zygote_lost(&self, generation: u64) {
        let lost: Vec<u64> = self
            .lock()
            .iter()
            .filter(|(_, watched)| watched.zygote == Some(generation) && watched.pid.is_none())
            .map(|(worker_id, _)| *worker_id)
            .collect();
        for worker_id in lost {
            self.deliver(worker_id, WorkerEnd::Unreported("the zygote died before the worker reported".into()));
        }
    }

    pub fn deliver(&self, worker_id: u64, end: WorkerEnd) {
        if let Some(watched) = self.remove(worker_id) {
            let _ = watched.sender.send(end);
        }
    }

    fn remove(&self, worker_id: u64) -> Option<Watched> {
        self.lock().remove(&worker_id)
    }

    /// A status the supervisor reaped itself (only after the zygote died,
    /// for the few workers it had: a search is enough).
    fn deliver_pid(&self, pid: Pid, status: ExitStatus) {
        let worker_id =
            self.lock().iter().find(|(_, watched)| watched.pid == Some(pid)).map(|(worker_id, _)| *worker_id);
        if let Some(worker_id) = worker_id {
            self.deliver(worker_id, WorkerEnd::Exited(status));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Watched>> {
        self.waiting.lock().expect("registry lock")
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

    #[tokio::test]
    async fn ends_reach_watchers_by_worker_or_by_pid_and_unknown_pids_are_dropped() {
        let registry = ExitRegistry::default();
        let mut first = registry.watch(1);
        registry.deliver(2, WorkerEnd::Exited(ExitStatus::Code(0)));
        registry.deliver(1, WorkerEnd::Exited(ExitStatus::Signal(9)));
        assert_eq!(first.exit_status().await, Some(ExitStatus::Signal(9)));
        assert_eq!(first.exit_status().await, Some(ExitStatus::Signal(9)), "an end stays");

        let mut second = registry.watch(3);
        registry.deliver_pid(Pid::from_raw(30), ExitStatus::Code(1));
        assert!(second.receiver.try_recv().is_err(), "the pid was not known yet");
        second.identify(Pid::from_raw(30));
        registry.deliver_pid(Pid::from_raw(30), ExitStatus::Code(1));
        assert_eq!(second.ended().await, WorkerEnd::Exited(ExitStatus::Code(1)));

        let dropped = registry.watch(4);
        dropped.identify(Pid::from_raw(40));
        assert!(registry.is_watched(4));
        drop(dropped);
        assert!(!registry.is_watched(4));
        assert!(registry.lock().is_empty());
    }

    #[tokio::test]
    async fn a_dead_zygote_s_unidentified_workers_are_unreported() {
        let registry = ExitRegistry::default();
        let (mut unsent, mut unknown, mut identified) = (registry.watch(1), registry.watch(2), registry.watch(3));
        registry.sent(2, 7);
        registry.sent(3, 7);
        identified.identify(Pid::from_raw(30));
        registry.zygote_lost(7);
        assert!(matches!(unknown.ended().await, WorkerEnd::Unreported(_)));
        assert!(unsent.receiver.try_recv().is_err(), "its spawn goes to the next zygote");
        assert!(identified.receiver.try_recv().is_err(), "the supervisor reaps it");
    }

    #[tokio::test]
    async fn an_end_so_far_is_seen_without_waiting_and_stays() {
        let registry = ExitRegistry::default();
        let mut watch = registry.watch(1);
        assert_eq!(watch.end_so_far(), None);
        registry.deliver(1, WorkerEnd::Unreported("the zygote died".into()));
        assert!(matches!(watch.end_so_far(), Some(WorkerEnd::Unreported(_))));
        assert!(matches!(watch.ended().await, WorkerEnd::Unreported(_)), "the end stays");
    }
}
