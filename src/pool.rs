//! The pool of warm workers and the queue in front of it.
//!
//! Each worker lives in its own task: it is asked of the zygote (off any
//! job's path) and offers itself to the dispatcher at once; its `ready` is
//! read only when it is given a job. A job goes to the newest idle worker
//! that has reported ready, else to the oldest (see [`IdleWorkers`]). It
//! runs that one job and starts its own replacement: once the job is
//! answered when it runs alone (forking while it runs would take CPU from
//! it; the other warm workers serve meanwhile), at once when other jobs
//! run too (under load the fork competes anyway, and should keep the cores
//! busy). The dispatcher takes queued jobs in order, bounded by the number
//! of jobs allowed to run at once, and hands each to an idle worker; offers
//! from workers that died while idle are skipped, and a job whose worker
//! fails before the job reaches it goes to another. The queue is bounded: a
//! full queue rejects at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::cgroup::Cgroups;
use crate::config::{JobLimits, OutputLimits};
use crate::job::{JobSpec, Rejection};
use crate::outcome;
use crate::proto::api::rejected;
use crate::proto::worker::Rehearsal;
use crate::reaper::WorkerEnd;
use crate::sandbox::ids::UidPool;
use crate::worker::{Finished, ReadyProbe, RunEnd, Worker, WorkerError, WorkerSettings};
use crate::zygote::{Warming, Zygote, error_chain};

const RESTART_DELAY: Duration = Duration::from_millis(200);
/// A job whose workers keep dying before it starts is given up on.
const MAX_LOST_WORKERS: u32 = 3;

/// Where a job's outcome goes: the caller's connection, with the job's id.
pub type ReplyTo = mpsc::UnboundedSender<(u64, Finished)>;

/// An accepted job waiting for a worker.
pub struct QueuedJob {
    pub id: u64,
    pub spec: JobSpec,
    pub accepted_at: Instant,
    /// Fires when the caller disconnects: the job is dropped or killed.
    pub cancel: CancellationToken,
    pub reply: ReplyTo,
    /// The caller's in-flight slot, held until the outcome is sent.
    pub in_flight: OwnedSemaphorePermit,
    /// Workers that died under this job before it started.
    pub lost_workers: u32,
}

impl QueuedJob {
    fn answer(self, finished: Finished) {
        // The connection may be gone; then nobody is waiting for this.
        let _ = self.reply.send((self.id, finished));
    }

    fn reject(self, code: rejected::Code, reason: &str) {
        let outcome = outcome::rejected(Rejection::new(code, reason));
        self.answer(Finished { outcome, table: None });
    }
}

/// A job on its way to a worker, with its running slot.
struct Assignment {
    job: QueuedJob,
    _running: OwnedSemaphorePermit,
    /// Other jobs were running: the worker's replacement is forked at once,
    /// alongside the job, rather than once the job is answered.
    replace_at_once: bool,
    /// No idle worker had reported ready when the job was handed over.
    found_none_ready: bool,
}

/// An idle worker's offer to take a job.
struct Offer {
    assign: oneshot::Sender<Assignment>,
    ready: ReadyProbe,
}

/// The offers of idle workers, oldest first, as the dispatcher holds them.
#[derive(Default)]
struct IdleWorkers {
    offers: Vec<Offer>,
}

impl IdleWorkers {
    /// The offer the next job should take. Running alone, the newest worker
    /// that has reported ready, whose memory is the likeliest to be still in
    /// the CPU's caches (a paced job on a warm pool spends most of its time
    /// in cache misses; README, Benchmarks). Under load (caches are shared
    /// with other jobs anyway), the oldest that has: workers get ready in the
    /// order they were forked, so the first asked is usually the one.
    /// Failing either, the oldest, the likeliest to be ready soonest. Offers
    /// of workers that have gone are dropped; cancel-safe. Also returns
    /// whether the offer taken is from a worker that has reported ready.
    async fn take(&mut self, incoming: &mut mpsc::UnboundedReceiver<Offer>, under_load: bool) -> (Offer, bool) {
        while let Ok(offer) = incoming.try_recv() {
            self.offers.push(offer);
        }
        self.offers.retain(|offer| !offer.assign.is_closed());
        if self.offers.is_empty() {
            return (incoming.recv().await.expect("workers hold the sender"), false);
        }
        let reported = |offer: &Offer| offer.ready.has_reported();
        let ready =
            if under_load { self.offers.iter().position(reported) } else { self.offers.iter().rposition(reported) };
        (self.offers.remove(ready.unwrap_or(0)), ready.is_some())
    }
}

pub struct PoolSettings {
    pub workers: usize,
    pub max_queued_jobs: usize,
    pub limits: JobLimits,
    pub output: OutputLimits,
    pub uids: UidPool,
    pub max_processes: Option<u64>,
    pub disabled_layers: Vec<String>,
    /// Each worker is pid 1 of its own pid namespace (the `namespaces` layer).
    pub pid_namespaces: bool,
    /// `pool.warm_transforms`.
    pub warm_transforms: bool,
}

/// What recent jobs were and found: what new workers should rehearse.
#[derive(Default)]
struct RecentJobs {
    /// The kinds of the last 16 jobs handed to workers, one bit each (1: a
    /// transform), newest lowest.
    kinds: AtomicU32,
    /// The last one ran alongside others.
    under_load: AtomicBool,
    /// Whether each of the last 8 found no idle worker ready, one bit each
    /// (1: none was), newest lowest.
    found_none_ready: AtomicU32,
}

impl RecentJobs {
    fn record(&self, transform: bool, under_load: bool, found_none_ready: bool) {
        let shift = |bits: u32| Some((bits << 1 | u32::from(transform)) & 0xffff);
        let _ = self.kinds.fetch_update(Ordering::Relaxed, Ordering::Relaxed, shift);
        self.under_load.store(under_load, Ordering::Relaxed);
        let shift = |bits: u32| Some((bits << 1 | u32::from(found_none_ready)) & 0xff);
        let _ = self.found_none_ready.fetch_update(Ordering::Relaxed, Ordering::Relaxed, shift);
    }

    /// A rehearsal pays off when it runs while the worker would idle
    /// anyway. None while jobs find no worker ready (any of the last 8):
    /// a job will likely take this one the moment it is ready, and the
    /// rehearsal would delay that and repeat the Python work the job does
    /// (its page copies are the same ones, made once either way). A
    /// transform's too when at least half of the recent jobs were
    /// transforms and the pool is not under load (under load it would take
    /// CPU from running jobs, and a job's wait is mostly its queueing);
    /// `warm_transforms` off: never.
    fn rehearsal(&self, warm_transforms: bool) -> Rehearsal {
        if self.found_none_ready.load(Ordering::Relaxed) != 0 {
            Rehearsal::None
        } else if self.mostly_transforms(warm_transforms) && !self.under_load.load(Ordering::Relaxed) {
            Rehearsal::ExecAndTransform
        } else {
            Rehearsal::Exec
        }
    }

    /// At least half of the recent jobs were transforms (`warm_transforms`
    /// off: never).
    fn mostly_transforms(&self, warm_transforms: bool) -> bool {
        warm_transforms && self.kinds.load(Ordering::Relaxed).count_ones() >= 8
    }

    /// A worker copies a transform's pages at its start (one call, rather
    /// than a fault per page on the job's path) when recent jobs were mostly
    /// transforms, unless it rehearses one: the rehearsal copies them
    /// itself, and copying them first made the job after it slower (README,
    /// Benchmarks).
    fn warming(&self, warm_transforms: bool) -> Warming {
        let rehearsal = self.rehearsal(warm_transforms);
        let transform_pages = self.mostly_transforms(warm_transforms) && rehearsal != Rehearsal::ExecAndTransform;
        Warming { rehearsal, transform_pages }
    }
}

struct Shared {
    zygote: Zygote,
    cgroups: Option<Arc<Cgroups>>,
    uids: UidPool,
    limits: JobLimits,
    output: OutputLimits,
    max_processes: Option<u64>,
    disabled_layers: Vec<String>,
    pid_namespaces: bool,
    cores: u32,
    warm_transforms: bool,
    recent_jobs: RecentJobs,
    next_worker_id: AtomicU64,
    idle: mpsc::UnboundedSender<Offer>,
    /// Jobs whose worker died, or failed, before the job reached it; run first.
    retry: mpsc::UnboundedSender<Assignment>,
    /// Asks the spawner for a new worker task (a replacement).
    spawn: mpsc::UnboundedSender<()>,
    shutdown: CancellationToken,
}

impl Shared {
    /// Starts a new worker task (from the spawner task, which keeps worker
    /// tasks from spawning each other directly).
    fn replace_worker(&self) {
        let _ = self.spawn.send(());
    }

    fn settings(&self) -> WorkerSettings<'_> {
        WorkerSettings {
            zygote: &self.zygote,
            cgroups: self.cgroups.as_ref(),
            uids: &self.uids,
            limits: &self.limits,
            output: &self.output,
            max_processes: self.max_processes,
            disabled_layers: &self.disabled_layers,
            pid_namespaces: self.pid_namespaces,
            cores: self.cores,
            warming: self.recent_jobs.warming(self.warm_transforms),
        }
    }
}

/// The submitting side of the pool.
#[derive(Clone)]
pub struct Pool {
    queue: mpsc::Sender<QueuedJob>,
}

impl Pool {
    /// Starts the pool once one worker has started and confined itself:
    /// a host or config on which workers cannot start fails here, closed.
    pub async fn start(
        settings: PoolSettings,
        zygote: Zygote,
        cgroups: Option<Arc<Cgroups>>,
        shutdown: CancellationToken,
    ) -> Result<Self, WorkerError> {
        let (queue, queued) = mpsc::channel(settings.max_queued_jobs);
        let (idle, offers) = mpsc::unbounded_channel();
        let (retry, retries) = mpsc::unbounded_channel();
        let (spawn, spawns) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            zygote,
            cgroups,
            uids: settings.uids,
            limits: settings.limits,
            output: settings.output,
            max_processes: settings.max_processes,
            disabled_layers: settings.disabled_layers,
            pid_namespaces: settings.pid_namespaces,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            warm_transforms: settings.warm_transforms,
            recent_jobs: RecentJobs::default(),
            next_worker_id: AtomicU64::new(1),
            idle,
            retry,
            spawn,
            shutdown: shutdown.clone(),
        });
        let trial_settings = shared.settings();
        let trial = Worker::ready(Worker::spawn(&trial_settings, 0).await?, &trial_settings).await?;
        trial.retire().await;
        for _ in 0..settings.workers {
            shared.replace_worker();
        }
        tokio::spawn(spawn_workers(Arc::clone(&shared), spawns));
        let running = Arc::new(Semaphore::new(settings.workers));
        tokio::spawn(dispatch(queued, retries, offers, (running, settings.workers), shutdown));
        Ok(Self { queue })
    }

    /// Queues `job`, or rejects it at once when the queue is full.
    pub fn submit(&self, job: QueuedJob) {
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                job.reject(rejected::Code::QueueFull, "the job queue is full; try again later");
            }
            Err(mpsc::error::TrySendError::Closed(job)) => {
                job.reject(rejected::Code::ShuttingDown, "the server is shutting down");
            }
        }
    }
}

async fn dispatch(
    mut queued: mpsc::Receiver<QueuedJob>,
    mut retries: mpsc::UnboundedReceiver<Assignment>,
    mut offers: mpsc::UnboundedReceiver<Offer>,
    (running, slots): (Arc<Semaphore>, usize),
    shutdown: CancellationToken,
) {
    let mut idle = IdleWorkers::default();
    loop {
        // A retry keeps the running slot it had: it must never wait behind a
        // queued job waiting for a slot.
        let mut assignment = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(assignment) = retries.recv() => assignment,
            next = next_job(&mut queued, &running) => match next {
                None => break,
                Some(assignment) if assignment.job.cancel.is_cancelled() => continue, // the caller is gone
                Some(assignment) => assignment,
            },
        };
        loop {
            // Other jobs running: the pool is under load, and the fork
            // competes with them whenever it happens.
            let under_load = slots - running.available_permits() > 1;
            let (offer, ready) = tokio::select! {
                () = shutdown.cancelled() => {
                    assignment.job.reject(rejected::Code::ShuttingDown, "the server is shutting down");
                    break;
                }
                taken = idle.take(&mut offers, under_load) => taken,
            };
            assignment.replace_at_once = under_load;
            assignment.found_none_ready = !ready;
            match offer.assign.send(assignment) {
                Ok(()) => break,
                Err(returned) => assignment = returned, // that worker died idle
            }
        }
    }
    queued.close();
    while let Some(job) = queued.recv().await {
        job.reject(rejected::Code::ShuttingDown, "the server is shutting down");
    }
}

/// The next queued job, with a running slot for it: the slot first, so a
/// job waits in the queue (cancel-safe: a slot taken for no job goes back).
async fn next_job(queued: &mut mpsc::Receiver<QueuedJob>, running: &Arc<Semaphore>) -> Option<Assignment> {
    let slot = Arc::clone(running).acquire_owned().await.expect("never closed");
    let job = queued.recv().await?;
    Some(Assignment { job, _running: slot, replace_at_once: false, found_none_ready: false })
}

async fn spawn_workers(shared: Arc<Shared>, mut requests: mpsc::UnboundedReceiver<()>) {
    while requests.recv().await.is_some() && !shared.shutdown.is_cancelled() {
        tokio::spawn(worker_task(Arc::clone(&shared)));
    }
}

enum IdleEnd {
    Assigned(Assignment),
    Died(WorkerEnd),
    Shutdown,
}

async fn worker_task(shared: Arc<Shared>) {
    if shared.shutdown.is_cancelled() {
        return;
    }
    let id = shared.next_worker_id.fetch_add(1, Ordering::Relaxed);
    let settings = shared.settings();
    let mut worker = match Worker::spawn(&settings, id).await {
        Ok(spawning) => spawning,
        Err(error) => {
            tracing::warn!(worker = id, error = %error_chain(&error), "cannot start a worker; retrying");
            tokio::time::sleep(RESTART_DELAY).await;
            shared.replace_worker();
            return;
        }
    };
    // Offered before it is ready: its `ready` is read when a job comes.
    let (assign, mut assigned) = oneshot::channel();
    if shared.idle.send(Offer { assign, ready: worker.ready_probe() }).is_err() {
        worker.retire().await;
        return;
    }
    let end = tokio::select! {
        assignment = &mut assigned => match assignment {
            Ok(assignment) => IdleEnd::Assigned(assignment),
            Err(_) => IdleEnd::Shutdown,
        },
        status = worker.died() => IdleEnd::Died(status),
        () = shared.shutdown.cancelled() => IdleEnd::Shutdown,
    };
    // A job may have been handed over in the same instant the worker died
    // or shutdown began: it must not be lost.
    assigned.close();
    let orphaned = assigned.try_recv().ok();
    match end {
        IdleEnd::Assigned(Assignment { job, _running, replace_at_once, found_none_ready }) => {
            if replace_at_once {
                shared.replace_worker();
            }
            let QueuedJob { id: job_id, spec, accepted_at, cancel, reply, in_flight, lost_workers } = job;
            shared.recent_jobs.record(spec.wants_output_table(), replace_at_once, found_none_ready);
            let ran = match Worker::ready(worker, &settings).await {
                Ok(worker) => worker.run(spec, &settings, &cancel, accepted_at.elapsed()).await,
                Err(error) => {
                    tracing::warn!(worker = id, error = %error_chain(&error), "worker failed before its job");
                    RunEnd::NotStarted(spec)
                }
            };
            match ran {
                RunEnd::Finished(finished) => {
                    let _ = reply.send((job_id, finished));
                }
                RunEnd::Cancelled => {}
                RunEnd::NotStarted(spec) => {
                    let job = QueuedJob {
                        id: job_id,
                        spec,
                        accepted_at,
                        cancel,
                        reply,
                        in_flight,
                        lost_workers: lost_workers + 1,
                    };
                    if job.lost_workers >= MAX_LOST_WORKERS {
                        job.reject(
                            rejected::Code::Unspecified,
                            "internal error: workers keep dying before the job starts",
                        );
                    } else {
                        tracing::warn!(job = job_id, "worker died before the job started; retrying on another");
                        let retry = Assignment { job, _running, replace_at_once: false, found_none_ready: false };
                        let _ = shared.retry.send(retry);
                    }
                }
            }
            // A job running alone gets its replacement once it is answered:
            // forking a pandas-sized zygote and confining the child takes CPU
            // the job would otherwise compete for (other warm workers serve
            // meanwhile). Under load, forking at once keeps the cores busy.
            if !replace_at_once {
                shared.replace_worker();
            }
        }
        IdleEnd::Died(_) if shared.shutdown.is_cancelled() => worker.retire().await,
        IdleEnd::Died(end) => {
            let failure = worker.retire_dead(end.clone(), &settings).await;
            if let Some(assignment) = orphaned {
                let _ = shared.retry.send(assignment);
            }
            match failure {
                None => tracing::warn!(worker = id, ?end, "idle worker died; replacing it"),
                Some(reason) => {
                    // A spawn that fails is not retried at once, in a loop.
                    tracing::warn!(worker = id, %reason, "a worker failed before it was ready; retrying");
                    tokio::time::sleep(RESTART_DELAY).await;
                }
            }
            shared.replace_worker();
        }
        IdleEnd::Shutdown => {
            worker.retire().await;
            if let Some(assignment) = orphaned {
                assignment.job.reject(rejected::Code::ShuttingDown, "the server is shutting down");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use tokio::sync::oneshot::error::TryRecvError;

    use super::*;

    /// An idle worker as the dispatcher sees it: what its task and the
    /// worker hold (the offer's receiver, both ends of the channel).
    struct IdleFixture {
        assigned: oneshot::Receiver<Assignment>,
        _channel: Arc<UnixStream>,
        _worker_end: UnixStream,
    }

    impl IdleFixture {
        fn offer(reported: bool, offers: &mpsc::UnboundedSender<Offer>) -> Self {
            let (ours, mut theirs) = UnixStream::pair().expect("socket pair");
            if reported {
                theirs.write_all(b"ready").expect("write");
            }
            let channel = Arc::new(ours);
            let (assign, assigned) = oneshot::channel();
            offers.send(Offer { assign, ready: ReadyProbe::of(&channel) }).expect("send");
            Self { assigned, _channel: channel, _worker_end: theirs }
        }

        /// Whether its offer was taken (and then dropped), or is closed.
        fn taken(&mut self) -> bool {
            matches!(self.assigned.try_recv(), Err(TryRecvError::Closed))
        }
    }

    #[test]
    fn transforms_are_rehearsed_after_a_run_of_them_without_load() {
        let recent = RecentJobs::default();
        assert_eq!(recent.rehearsal(true), Rehearsal::Exec, "no jobs yet");
        for _ in 0..7 {
            recent.record(true, false, false);
        }
        assert_eq!(recent.rehearsal(true), Rehearsal::Exec, "7 of the last 16");
        recent.record(true, false, false);
        assert_eq!(recent.rehearsal(true), Rehearsal::ExecAndTransform, "8 of the last 16");
        assert_eq!(recent.rehearsal(false), Rehearsal::Exec, "warm_transforms off");
        recent.record(true, true, false);
        assert_eq!(recent.rehearsal(true), Rehearsal::Exec, "under load");
        for _ in 0..8 {
            recent.record(false, false, false);
        }
        assert_eq!(recent.rehearsal(true), Rehearsal::ExecAndTransform, "still 8 of the last 16");
        recent.record(false, false, false);
        assert_eq!(recent.rehearsal(true), Rehearsal::Exec, "the oldest transforms fell out");
    }

    #[test]
    fn transform_pages_are_copied_after_a_run_of_transforms_unless_one_is_rehearsed() {
        let recent = RecentJobs::default();
        for _ in 0..7 {
            recent.record(true, true, true);
        }
        assert!(!recent.warming(true).transform_pages, "7 of the last 16");
        recent.record(true, true, true);
        let warming = |rehearsal, transform_pages| Warming { rehearsal, transform_pages };
        assert_eq!(recent.warming(true), warming(Rehearsal::None, true), "8, none found ready");
        assert_eq!(recent.warming(false), warming(Rehearsal::None, false), "warm_transforms off");
        for _ in 0..8 {
            recent.record(true, true, false);
        }
        assert_eq!(recent.warming(true), warming(Rehearsal::Exec, true), "under load");
        recent.record(true, false, false);
        assert_eq!(recent.warming(true), warming(Rehearsal::ExecAndTransform, false), "rehearsed instead");
        for _ in 0..16 {
            recent.record(false, true, false);
        }
        assert_eq!(recent.warming(true), warming(Rehearsal::Exec, false), "the transforms fell out");
    }

    #[test]
    fn nothing_is_rehearsed_while_jobs_find_no_worker_ready() {
        let recent = RecentJobs::default();
        recent.record(false, true, true);
        assert_eq!(recent.rehearsal(true), Rehearsal::None);
        for _ in 0..8 {
            recent.record(true, false, true);
        }
        assert_eq!(recent.rehearsal(true), Rehearsal::None, "not even after transforms");
        for _ in 0..7 {
            recent.record(false, true, false);
        }
        assert_eq!(recent.rehearsal(true), Rehearsal::None, "one of the last 8 found none");
        recent.record(false, true, false);
        assert_eq!(recent.rehearsal(true), Rehearsal::Exec, "the last 8 found one ready");
    }

    /// The order in which five idle workers (oldest first: ready, not,
    /// ready, not, ready but gone) are taken, each with whether the taker
    /// was told it is ready.
    async fn order_taken(under_load: bool) -> Vec<(usize, bool)> {
        let (offers, mut incoming) = mpsc::unbounded_channel();
        let mut workers: Vec<_> = [true, false, true, false, true]
            .into_iter()
            .map(|reported| IdleFixture::offer(reported, &offers))
            .collect();
        workers[4].assigned.close();
        let mut idle = IdleWorkers::default();
        let mut order = Vec::new();
        for _ in 0..4 {
            let (offer, ready) = idle.take(&mut incoming, under_load).await;
            drop(offer);
            let taken = (0..workers.len())
                .find(|&worker| order.iter().all(|&(taken, _)| taken != worker) && workers[worker].taken())
                .expect("one was taken");
            order.push((taken, ready));
        }
        assert!(idle.offers.is_empty(), "the offer of the worker that went is dropped");
        order
    }

    #[tokio::test]
    async fn takes_the_newest_ready_worker_alone_the_oldest_ready_under_load_else_the_oldest() {
        let (ready, not) = (true, false);
        assert_eq!(order_taken(false).await, [(2, ready), (0, ready), (1, not), (3, not)], "alone: newest ready first");
        assert_eq!(
            order_taken(true).await,
            [(0, ready), (2, ready), (1, not), (3, not)],
            "under load: oldest ready first"
        );
    }
}
