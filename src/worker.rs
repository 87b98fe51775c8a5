//! One worker process: born from the zygote into its own cgroup, ready
//! before any job exists, runs exactly one job, and is gone.
//!
//! [`Worker::spawn`] does everything off the job's path: uid, cgroup,
//! channels, fork (the worker joins its cgroup and confines itself).
//! [`Worker::ready`] reads its `ready` once a job is there for it.
//! [`Worker::run`] sends the job, watches the deadlines, turns what it saw
//! into the outcome, and makes sure nothing of the job is left (after the
//! answer when the job reported, its table sealed; before it otherwise).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use nix::sys::socket::MsgFlags;
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use crate::capture::JobOutput;
use crate::cgroup::{CgroupError, Cgroups};
use crate::channel::{self, ChannelError, FrameReader, FrameWriter};
use crate::config::{JobLimits, OutputLimits};
use crate::job::JobSpec;
use crate::job_tree::JobTree;
use crate::outcome::{self, Ending, Evidence};
use crate::proto::api::{self, CapturedOutput, Usage, outcome::Kind};
use crate::proto::worker::{JobResult, WorkerEvent, WorkerJob, WorkerReady, job_result, worker_event};
use crate::reaper::{EndWatch, ExitStatus, WorkerEnd};
use crate::sandbox::ids::{UidLease, UidPool};
use crate::zygote::{Warming, WorkerFds, Zygote, ZygoteError};

/// How long a forked worker may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a worker's end once its channel closed before
/// `ready` (the zygote reports it right after, at most as late as it holds
/// clean exits back).
const END_AFTER_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait for the exit status and the pipes once the job's
/// processes have been killed.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);
/// Output tables up to this size are validated on the async thread.
const INLINE_VALIDATION_MAX_BYTES: u64 = 64 << 10;
/// How long a worker that reported its result gets to exit by itself.
const EXIT_AFTER_RESULT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long to read what a dead worker left in its channel (its processes
/// are all gone by then, so the end of the stream is near).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Room for the JobResult envelope around the JSON value and traceback.
const RESULT_FRAME_SLACK_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker cgroup")]
    Cgroup(#[from] CgroupError),
    #[error("worker channels")]
    Io(#[from] std::io::Error),
    #[error("spawning the worker")]
    Spawn(#[from] ZygoteError),
    #[error("worker channel")]
    Channel(#[from] ChannelError),
    #[error("the worker did not report ready within {READY_TIMEOUT:?}")]
    ReadyTimeout,
    #[error("the worker sent {received} where `ready` was expected")]
    NotReady { received: String },
    #[error("the worker could not confine itself: {0}")]
    Confinement(String),
    #[error("the worker's end is not reported: {0}")]
    Unreported(String),
    #[error("the worker died before it took a job ({0:?})")]
    DiedBeforeReady(ExitStatus),
    #[error("the worker's channel closed before it was ready")]
    ChannelClosed,
}

impl From<WorkerEnd> for WorkerError {
    /// A worker that ended before it took a job.
    fn from(end: WorkerEnd) -> Self {
        match end {
            WorkerEnd::Unreported(reason) => Self::Unreported(reason),
            WorkerEnd::Exited(status) => Self::DiedBeforeReady(status),
        }
    }
}

/// What the worker needs from the server.
pub struct WorkerSettings<'a> {
    pub zygote: &'a Zygote,
    /// None when the `memory_limit` layer is off (no usable cgroup).
    pub cgroups: Option<&'a Arc<Cgroups>>,
    pub uids: &'a UidPool,
    pub limits: &'a JobLimits,
    pub output: &'a OutputLimits,
    /// The pids cgroup limit, when that layer is on.
    pub max_processes: Option<u64>,
    /// Confinement layers that are off, reported in every outcome.
    pub disabled_layers: &'a [String],
    /// Each worker is pid 1 of its own pid namespace: once it has exited,
    /// the kernel has killed and reaped every process of its job.
    pub pid_namespaces: bool,
    pub cores: u32,
    /// What new workers do to themselves before they report ready.
    pub warming: Warming,
}

/// How [`Worker::run`] ended.
pub enum RunEnd {
    Finished(Finished),
    /// The caller went away; the job was killed and nobody is answered.
    Cancelled,
    /// The worker died before the job reached the user's code: the job can
    /// run on another worker.
    NotStarted(JobSpec),
}

/// The result of a job for its caller.
pub struct Finished {
    pub outcome: api::Outcome,
    pub table: Option<OwnedFd>,
}

pub struct Worker {
    tree: JobTree,
    /// The cgroup's OOM-kill count before this worker (cgroups are reused).
    oom_kills_before: u64,
    /// The CPU time when the worker was ready, idle and confined: a job's
    /// CPU time counts from here.
    cpu_at_ready: Duration,
    /// The worker's own CPU time then, as it reported it with `ready`.
    process_cpu_at_ready: Duration,
    /// Whether the worker's exit means its job's processes are all gone.
    exit_ends_job: bool,
    /// The worker's uid is its own until every process of it is gone.
    uid: UidLease,
    reader: FrameReader,
    writer: FrameWriter,
    /// The read end of the worker's start pipe.
    started: OwnedFd,
    exit: EndWatch,
    output: JobOutput,
}

/// A worker asked of the zygote. It confines itself and reports ready on
/// its channel, which is read only once a job is handed to it: until then
/// nothing of it wakes the supervisor (a wakeup costs it more than the rest
/// of its share of a job). Whether it has reported yet can be asked without
/// reading it: [`ReadyProbe`].
pub struct Spawning {
    id: u64,
    /// Not registered with the reactor yet; shared only with [`ReadyProbe`]s.
    channel: Arc<UnixStream>,
    /// The cgroup's OOM-kill count before this worker (cgroups are reused).
    oom_kills_before: u64,
    birth: Stillborn,
}

/// Tells whether a spawning worker has reported on its channel (almost
/// always its `ready`), by peeking at it: nothing is read and nothing wakes.
pub struct ReadyProbe(Weak<UnixStream>);

impl ReadyProbe {
    /// A probe of the supervisor's end of a worker's channel.
    pub(crate) fn of(channel: &Arc<UnixStream>) -> Self {
        Self(Arc::downgrade(channel))
    }

    /// Whether the worker has sent something; false too once the worker is
    /// let go or its channel is closed.
    pub fn has_reported(&self) -> bool {
        let Some(channel) = self.0.upgrade() else { return false };
        let peeked =
            nix::sys::socket::recv(channel.as_raw_fd(), &mut [0; 1], MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT);
        matches!(peeked, Ok(1))
    }
}

impl Spawning {
    /// A probe of whether this worker has reported, for the dispatcher.
    pub fn ready_probe(&self) -> ReadyProbe {
        ReadyProbe::of(&self.channel)
    }

    /// Resolves if the worker ends before it is handed a job.
    pub async fn died(&mut self) -> WorkerEnd {
        match self.birth.end.as_mut() {
            Some(end) => end.ended().await,
            None => std::future::pending().await,
        }
    }

    /// Retires a worker that will get no job.
    pub async fn retire(self) {
        self.birth.bury().await;
    }

    /// Retires a worker that `died` while waiting for a job, and says why it
    /// failed if it never got as far as `ready` (then it is no idle worker
    /// that was killed, but a spawn that fails: not to be retried at once).
    pub async fn retire_dead(self, end: WorkerEnd, settings: &WorkerSettings<'_>) -> Option<String> {
        let Self { channel, birth, .. } = self;
        let failure = match end {
            WorkerEnd::Unreported(reason) => Some(reason),
            WorkerEnd::Exited(status) => {
                // It is dead: what it sent is buffered, then the end of the stream.
                let first = match open_channel(channel, settings) {
                    Ok((mut reader, _)) => tokio::time::timeout(DRAIN_TIMEOUT, read_ready(&mut reader)).await.ok(),
                    Err(error) => Some(Err(error.into())),
                };
                match first {
                    Some(Ok(Some(_ready))) => None,
                    Some(Err(error)) => Some(crate::zygote::error_chain(&error)),
                    Some(Ok(None)) | None => Some(format!("it exited ({status:?}) before it was ready")),
                }
            }
        };
        birth.bury().await;
        failure
    }
}

impl Worker {
    /// Asks the zygote for a worker in a cgroup of its own, with a uid of
    /// its own, and returns without waiting for it.
    pub async fn spawn(settings: &WorkerSettings<'_>, id: u64) -> Result<Spawning, WorkerError> {
        let uid = settings.uids.lease().await;
        let tree = match settings.cgroups {
            Some(cgroups) => Some(JobTree::Cgroup {
                cgroup: cgroups.acquire_job(settings.limits.memory_limit_bytes, settings.max_processes)?,
                cgroups: Arc::clone(cgroups),
            }),
            None => None,
        };
        match Self::spawn_into(settings, id, Stillborn { uid, tree, end: None }).await {
            Ok(spawning) => Ok(spawning),
            Err((error, stillborn)) => {
                stillborn.bury().await;
                Err(error)
            }
        }
    }

    /// Asks for the worker to be forked into its cgroup (without one, its
    /// tree is the worker itself, known once it reports).
    async fn spawn_into(
        settings: &WorkerSettings<'_>,
        id: u64,
        mut birth: Stillborn,
    ) -> Result<Spawning, (WorkerError, Stillborn)> {
        macro_rules! attempt {
            ($e:expr) => {
                match $e {
                    Ok(value) => value,
                    Err(error) => return Err((WorkerError::from(error), birth)),
                }
            };
        }
        let (ours, theirs) = attempt!(UnixStream::pair());
        // The worker's pid comes with its `ready` (the zygote does not answer
        // a spawn: one wakeup less per job).
        attempt!(channel::pass_credentials(&ours));
        // The worker joins its cgroup first thing, before it confines itself
        // and long before any job reaches it.
        let cgroup_procs = match &birth.tree {
            Some(tree) => attempt!(tree.procs_files()),
            None => Vec::new(),
        };
        let oom_kills_before = birth.tree.as_ref().map_or(0, JobTree::oom_kills);
        let fds = WorkerFds { control: theirs.into(), cgroup_procs };
        let Warming { rehearsal, transform_pages } = settings.warming;
        tracing::debug!(
            worker = id,
            rehearsal = rehearsal.as_str_name(),
            transform_pages,
            "worker asked of the zygote"
        );
        birth.end = Some(attempt!(settings.zygote.spawn(id, birth.uid.uid(), fds, settings.warming).await));
        Ok(Spawning { id, channel: Arc::new(ours), oom_kills_before, birth })
    }

    /// Waits until `spawning` is ready (it usually is already).
    pub async fn ready(spawning: Spawning, settings: &WorkerSettings<'_>) -> Result<Self, WorkerError> {
        let Spawning { id, channel, oom_kills_before, mut birth } = spawning;
        let (reader, writer, Ready { ready, pipes }) = match Self::wait_ready(channel, &mut birth, settings).await {
            Ok(waited) => waited,
            Err(error) => {
                birth.bury().await;
                return Err(error);
            }
        };
        let Stillborn { uid, tree: Some(tree), end: Some(end) } = birth else {
            unreachable!("wait_ready checked that the worker has a tree and an end");
        };
        tracing::debug!(
            worker = id,
            confinement_us = ready.confinement_us,
            pages_copied = ready.pages_copied,
            "worker handed a job"
        );
        let cap = settings.limits.max_captured_output_bytes as usize;
        let output = JobOutput::start(pipes.stdout, pipes.stderr, cap);
        Ok(Self {
            // Read now: the worker is idle until it reads its job.
            cpu_at_ready: tree.cpu_usage(),
            process_cpu_at_ready: Duration::from_micros(ready.process_cpu_us),
            tree,
            oom_kills_before,
            exit_ends_job: settings.pid_namespaces,
            uid,
            reader,
            writer,
            started: pipes.started,
            exit: end,
            output,
        })
    }

    /// Reads the worker's first frame, which must be `ready`, and learns its
    /// pid from it.
    async fn wait_ready(
        channel: Arc<UnixStream>,
        birth: &mut Stillborn,
        settings: &WorkerSettings<'_>,
    ) -> Result<(FrameReader, FrameWriter, Ready), WorkerError> {
        let (mut reader, writer) = open_channel(channel, settings)?;
        let first = tokio::time::timeout(READY_TIMEOUT, read_ready(&mut reader)).await;
        if let (Some(pid), Some(end)) = (reader.sender_pid().map(Pid::from_raw), &birth.end) {
            end.identify(pid);
            birth.tree.get_or_insert(JobTree::Worker(pid));
        }
        let ready = match first {
            Ok(Ok(Some(ready))) => ready,
            Ok(Ok(None)) => return Err(birth.why_closed().await),
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(WorkerError::ReadyTimeout),
        };
        if birth.tree.is_none() || birth.end.is_none() {
            return Err(WorkerError::NotReady { received: "`ready` without its sender's credentials".into() });
        }
        // Written off before it spoke (its zygote died first): it stays
        // written off, and the job goes to another worker.
        if let Some(end) = birth.end.as_mut().and_then(EndWatch::end_so_far) {
            return Err(end.into());
        }
        Ok((reader, writer, ready))
    }

    /// What the job used; its OOM kills only if they can change its outcome.
    /// Its CPU time is the cgroup's (the job's every process), which lacks a
    /// still-running process's last slice (up to a tick), or what the
    /// worker reports of its own, whichever is more: self-reported after the
    /// user's code, that figure can raise the job's CPU time (to no more
    /// than `wall_time` on every core), never lower it.
    fn measure(&self, cpu_baseline: Duration, ending: &Ending, wall_time: Duration, cores: u32) -> Measured {
        let reported = match ending {
            Ending::Reported(result) => Duration::from_micros(result.process_cpu_us)
                .saturating_sub(self.process_cpu_at_ready)
                .min(wall_time * cores.max(1)),
            _ => Duration::ZERO,
        };
        Measured {
            cpu_time: self.tree.cpu_usage().saturating_sub(cpu_baseline).max(reported),
            peak_memory_bytes: self.tree.peak_memory_bytes(),
            oom_kills: if ending.may_be_out_of_memory() {
                self.tree.oom_kills().saturating_sub(self.oom_kills_before)
            } else {
                0
            },
        }
    }

    /// What a dead worker's last event in the channel says.
    async fn last_event(&mut self, blocked_syscall: &mut Option<u32>) -> Ending {
        match tokio::time::timeout(DRAIN_TIMEOUT, self.reader.recv::<WorkerEvent>()).await {
            Ok(event) => read_event(event, blocked_syscall),
            Err(_) => Ending::Died,
        }
    }

    /// Whether the worker marked its job's start (see `worker.py`): if not,
    /// the user's code never ran.
    fn job_reached_worker(&self) -> bool {
        matches!(nix::unistd::read(&self.started, &mut [0; 1]), Ok(1))
    }

    /// Retires an idle worker that will get no job.
    pub async fn retire(self) {
        self.into_remains().retire().await;
    }

    /// Stops listening to the worker: its channel is closed and its output
    /// no longer captured (nothing the job's answer needs is left in them),
    /// so its exit wakes nobody but the zygote.
    fn into_remains(self) -> Remains {
        let Self { tree, exit, exit_ends_job, uid, reader, writer, started, output, .. } = self;
        drop((reader, writer, started, output));
        Remains { tree, exit, exit_ends_job, uid }
    }

    /// Runs `spec` to its one outcome.
    pub async fn run(
        mut self,
        spec: JobSpec,
        settings: &WorkerSettings<'_>,
        cancel: &CancellationToken,
        queue_time: Duration,
    ) -> RunEnd {
        let dispatched_at = Instant::now();
        let limits = spec.limits;
        if limits.memory_limit_bytes != settings.limits.memory_limit_bytes
            && let Err(error) = self.tree.set_memory_limit(limits.memory_limit_bytes)
        {
            tracing::error!(%error, "cannot set a job's memory limit");
            self.retire().await;
            return RunEnd::Finished(internal_error("cannot apply the job's memory limit"));
        }
        let cpu_baseline = self.cpu_at_ready;
        let mut output = if spec.wants_output_table() {
            match crate::output_table::create() {
                Ok(memfd) => Some(memfd),
                Err(error) => {
                    tracing::error!(%error, "cannot create an output memfd");
                    self.retire().await;
                    return RunEnd::Finished(internal_error("cannot create the output table file"));
                }
            }
        } else {
            None
        };

        let request = WorkerJob {
            kind: spec.kind.into(),
            code: spec.code.clone(),
            filename: spec.filename.clone(),
            params_json: spec.params_json.clone(),
            has_input_table: spec.input.is_some(),
            has_output_table: output.is_some(),
        };
        let fds: Vec<_> = spec.input.iter().chain(output.iter()).map(AsFd::as_fd).collect();
        let sent = self.writer.send(&request, &fds).await;
        drop(fds);

        let mut exit = None;
        let mut blocked_syscall = None;
        let ending = if sent.is_err() {
            Some(Ending::Died)
        } else {
            let wall_deadline = tokio::time::sleep(limits.wall_timeout);
            let cpu_deadline = cpu_deadline(&self.tree, cpu_baseline, limits.cpu_timeout, settings.cores);
            tokio::select! {
                event = self.reader.recv::<WorkerEvent>() => Some(read_event(event, &mut blocked_syscall)),
                status = self.exit.exit_status() => {
                    exit = status;
                    Some(Ending::Died)
                }
                () = wall_deadline => Some(Ending::WallTimeout),
                () = cpu_deadline => Some(Ending::CpuTimeout),
                () = cancel.cancelled() => None,
                never = self.output.keep_reading() => match never {},
            }
        };
        let Some(mut ending) = ending else {
            self.retire().await;
            return RunEnd::Cancelled;
        };
        // Measured once the ending is known, before anything is killed:
        // without a cgroup the worker process is all there is to read.
        let Measured { cpu_time, peak_memory_bytes, oom_kills } =
            self.measure(cpu_baseline, &ending, dispatched_at.elapsed(), settings.cores);

        if let Ending::Reported(result) = &ending {
            // Nothing more can come from this job that its outcome needs:
            // the worker flushed its output before reporting, and its table
            // is final once sealed. Answer now; its channel and pipes are
            // closed, its processes killed and reaped after. (A table some
            // process of it still maps writable cannot be sealed: that job
            // is answered once its processes are gone, below.)
            let sealed = match output.take() {
                Some(memfd) if reports_table(result) => crate::output_table::seal(memfd).map(|sealed| Some(Ok(sealed))),
                _ => Ok(None),
            };
            match sealed {
                Err((memfd, _)) => output = Some(memfd),
                Ok(table) => {
                    let (stdout, stderr) = self.output.snapshot();
                    let wall_time = dispatched_at.elapsed();
                    let exited = exit.is_some();
                    tokio::spawn(async move { self.into_remains().clean_up(exited).await });
                    let blocked_syscall = blocked_syscall.map(crate::sandbox::seccomp::syscall_name);
                    let mut kind = outcome::classify(Evidence {
                        ending,
                        exit,
                        oom_kills,
                        peak_memory_bytes,
                        limits,
                        blocked_syscall,
                    });
                    let table = attach_table(&mut kind, table, *settings.output).await;
                    let usage = usage(queue_time, wall_time, cpu_time, peak_memory_bytes);
                    return RunEnd::Finished(finished(kind, stdout, stderr, usage, settings, table));
                }
            }
        }

        // Nothing of the job may run past this point: not a lingering child
        // writing to the output, not a process holding the pipes open.
        let killed = self.tree.kill_all().await;
        if let Err(error) = &killed {
            tracing::error!(%error, "cannot kill a job's processes; leaving its cgroup and uid");
        }
        if matches!(ending, Ending::Died) {
            // The worker's exit can be seen before the event it sent just
            // before exiting: read it if it is there.
            ending = self.last_event(&mut blocked_syscall).await;
        }
        if matches!(ending, Ending::Died) && !self.job_reached_worker() {
            self.retire().await;
            return RunEnd::NotStarted(spec);
        }
        drop(spec.input);
        if exit.is_none() && !matches!(ending, Ending::Reported(_)) {
            // Its exit status is part of the outcome. (A worker that reported
            // exits cleanly, and its clean exit may be held back by the
            // zygote: not worth waiting for, its processes are gone.)
            exit = tokio::time::timeout(REAP_TIMEOUT, self.exit.exit_status()).await.ok().flatten();
        }
        let wall_time = dispatched_at.elapsed();
        let (stdout, stderr) = self.output.finish(REAP_TIMEOUT).await;
        // The cgroup is empty: handing it back need not delay the answer.
        let (tree, uid) = (self.tree, self.uid);
        if killed.is_ok() {
            tokio::spawn(async move {
                tree.release();
                drop(uid);
            });
        } else {
            std::mem::forget(uid);
        }

        let blocked_syscall = blocked_syscall.map(crate::sandbox::seccomp::syscall_name);
        let mut kind =
            outcome::classify(Evidence { ending, exit, oom_kills, peak_memory_bytes, limits, blocked_syscall });
        let sealed = output.map(|memfd| {
            crate::output_table::seal(memfd).map_err(|(_, error)| format!("cannot seal the output: {error}"))
        });
        let table = attach_table(&mut kind, sealed, *settings.output).await;
        let usage = usage(queue_time, wall_time, cpu_time, peak_memory_bytes);
        RunEnd::Finished(finished(kind, stdout, stderr, usage, settings, table))
    }
}

/// A worker that has not reported ready, and what it holds.
struct Stillborn {
    uid: UidLease,
    /// Its cgroup, or the worker itself once its pid is known.
    tree: Option<JobTree>,
    /// How it ends, once its spawn was asked for.
    end: Option<EndWatch>,
}

impl Stillborn {
    /// Why the worker's channel closed before `ready`: the zygote could not
    /// fork it, or it died (its end follows the close closely).
    async fn why_closed(&mut self) -> WorkerError {
        let Some(end) = self.end.as_mut() else { return WorkerError::ChannelClosed };
        match tokio::time::timeout(END_AFTER_CLOSE_TIMEOUT, end.ended()).await {
            Ok(end) => end.into(),
            Err(_) => WorkerError::ChannelClosed,
        }
    }

    /// Kills whatever the worker became and gives back what it held.
    async fn bury(self) {
        let Self { uid, tree, end } = self;
        match (tree, end) {
            (Some(tree), end) => {
                // First: a spawn nobody watches any more is not sent.
                drop(end);
                release_when_killed(tree, uid).await;
            }
            (None, Some(mut end)) => {
                // Nothing to kill it by (no cgroup, no pid yet): its uid
                // stays taken until its end is known.
                tokio::spawn(async move {
                    end.ended().await;
                    drop(uid);
                });
            }
            (None, None) => {}
        }
    }
}

/// Kills everything in `tree` and gives back its cgroup and `uid`; if the
/// processes cannot be killed, both stay taken (never reused while any of
/// them may live).
async fn release_when_killed(tree: JobTree, uid: UidLease) {
    match tree.kill_all().await {
        Ok(()) => {
            tree.release();
            drop(uid);
        }
        Err(error) => {
            tracing::error!(%error, "cannot kill a job's processes; leaving its cgroup and uid");
            std::mem::forget(uid);
        }
    }
}

/// What is left of a worker once nothing more is read from it: its
/// processes until they are gone, its cgroup, its uid.
struct Remains {
    tree: JobTree,
    exit: EndWatch,
    exit_ends_job: bool,
    uid: UidLease,
}

impl Remains {
    async fn retire(self) {
        release_when_killed(self.tree, self.uid).await;
    }

    /// Kills what is left of an answered job, waits until it is gone, and
    /// hands back its cgroup; the uid is free again after.
    async fn clean_up(mut self, exited: bool) {
        // The worker exits right after reporting: let it, rather than kill
        // and poll (lingering children are killed next).
        let exited = exited
            || matches!(tokio::time::timeout(EXIT_AFTER_RESULT_TIMEOUT, self.exit.exit_status()).await, Ok(Some(_)));
        if exited && self.exit_ends_job {
            // pid 1 of the job's pid namespace is reaped only after the
            // kernel has killed and reaped the rest: the cgroup is empty.
            self.tree.release();
            drop(self.uid);
        } else {
            self.retire().await;
        }
    }
}

/// What the job used, and the OOM kills it caused.
struct Measured {
    cpu_time: Duration,
    peak_memory_bytes: u64,
    oom_kills: u64,
}

/// A worker's channel, registered: it may send frames up to a result's
/// size, and no fds but the three of its `ready`.
fn open_channel(
    channel: Arc<UnixStream>,
    settings: &WorkerSettings<'_>,
) -> std::io::Result<(FrameReader, FrameWriter)> {
    // A probe holds the channel only while it peeks; should one be peeking
    // now (on another thread), the channel is taken through a duplicate.
    let channel = Arc::try_unwrap(channel).or_else(|shared| shared.try_clone())?;
    let max_frame = settings.limits.max_result_json_bytes + RESULT_FRAME_SLACK_BYTES;
    // Fds are refused once `ready` (which brings some) is read.
    channel::split(channel, max_frame as usize)
}

/// A worker's `ready`, and the read ends of its pipes that come with it.
struct Ready {
    ready: WorkerReady,
    pipes: WorkerPipes,
}

/// The read ends of a worker's stdout, stderr and start pipes (the start
/// pipe is never polled: read only if the worker dies).
struct WorkerPipes {
    stdout: OwnedFd,
    stderr: OwnedFd,
    started: OwnedFd,
}

/// A worker's first frame, which must be `ready` with the read ends of its
/// pipes (`None`: the channel closed first). Sent before any job's code ran
/// in the worker; from then on the channel refuses fds.
async fn read_ready(reader: &mut FrameReader) -> Result<Option<Ready>, WorkerError> {
    let event = reader.recv::<WorkerEvent>().await;
    let fds = reader.take_all_fds();
    reader.refuse_fds();
    match event? {
        Some(WorkerEvent { event: Some(worker_event::Event::Ready(ready)) }) => match <[OwnedFd; 3]>::try_from(fds) {
            Ok([stdout, stderr, started]) => Ok(Some(Ready { ready, pipes: WorkerPipes { stdout, stderr, started } })),
            Err(fds) => Err(WorkerError::NotReady { received: format!("`ready` with {} fds, not 3", fds.len()) }),
        },
        Some(WorkerEvent { event: Some(worker_event::Event::ConfinementFailed(reason)) }) => {
            Err(WorkerError::Confinement(reason))
        }
        None => Ok(None),
        Some(other) => Err(WorkerError::NotReady { received: format!("{other:?}") }),
    }
}

/// How a job ended, by what was read from its worker's channel; a syscall
/// seccomp refused (SIGSYS follows) goes into `blocked_syscall`.
fn read_event(event: Result<Option<WorkerEvent>, ChannelError>, blocked_syscall: &mut Option<u32>) -> Ending {
    match event {
        // Seccomp refused a syscall: the job ends here, whatever it does next.
        Ok(Some(WorkerEvent { event: Some(worker_event::Event::BlockedSyscall(blocked)) })) => {
            *blocked_syscall = Some(blocked.number);
            Ending::Died
        }
        Ok(Some(WorkerEvent { event: Some(worker_event::Event::Result(result)) })) => Ending::Reported(result),
        Ok(Some(other)) => Ending::Malformed(format!("unexpected message {other:?}")),
        // A dead peer shows as EOF, a reset or a cut-off frame.
        Ok(None) | Err(ChannelError::Io(_) | ChannelError::TruncatedFrame) => Ending::Died,
        Err(error) => Ending::Malformed(crate::zygote::error_chain(&error)),
    }
}

/// The validated table of an `ok` outcome that says it has one (`output`:
/// its sealed file, or why there is none); a table that fails turns the
/// outcome into a rejection. Validation of a big table runs off the async
/// thread (it takes a while), of a small one on it (a 1,000-row table
/// takes ~5 µs, the hop to another thread and back more); a panic in it
/// is a rejection, never a lost outcome.
async fn attach_table(
    kind: &mut Kind,
    output: Option<Result<crate::output_table::Sealed, String>>,
    limits: OutputLimits,
) -> Option<OwnedFd> {
    let Kind::Ok(api::Ok { has_table: true, .. }) = kind else { return None };
    let not_validated = || Err("the output table could not be validated".into());
    let validated = match output {
        Some(Ok(sealed)) if sealed.size_bytes().is_ok_and(|bytes| bytes <= INLINE_VALIDATION_MAX_BYTES) => {
            let finalize = std::panic::AssertUnwindSafe(|| crate::output_table::finalize(sealed, &limits));
            std::panic::catch_unwind(finalize).unwrap_or_else(|_| not_validated())
        }
        Some(Ok(sealed)) => {
            match tokio::task::spawn_blocking(move || crate::output_table::finalize(sealed, &limits)).await {
                Ok(result) => result,
                Err(_) => not_validated(),
            }
        }
        Some(Err(reason)) => Err(reason),
        None => Err("the job reported a table it had no file for".into()),
    };
    match validated {
        Ok(table) => Some(table),
        Err(reason) => {
            *kind = outcome::output_rejected(reason);
            None
        }
    }
}

/// Resolves once the job has used `limit` of CPU time beyond `baseline`
/// (read when the worker was ready; an idle worker uses none). Polls no more
/// often than the limit could possibly be reached.
async fn cpu_deadline(tree: &JobTree, baseline: Duration, limit: Duration, cores: u32) {
    let mut used = Duration::ZERO;
    while used < limit {
        let earliest = (limit - used) / cores.max(1);
        tokio::time::sleep(earliest.max(Duration::from_millis(2))).await;
        used = tree.cpu_usage().saturating_sub(baseline);
    }
}

/// Whether the worker says it wrote an output table.
fn reports_table(result: &JobResult) -> bool {
    matches!(&result.result, Some(job_result::Result::Ok(ok)) if ok.wrote_table)
}

fn usage(queue_time: Duration, wall_time: Duration, cpu_time: Duration, peak_memory_bytes: u64) -> Usage {
    Usage {
        queue_time_us: queue_time.as_micros() as u64,
        wall_time_us: wall_time.as_micros() as u64,
        cpu_time_us: cpu_time.as_micros() as u64,
        peak_memory_bytes,
    }
}

fn finished(
    kind: Kind,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    usage: Usage,
    settings: &WorkerSettings<'_>,
    table: Option<OwnedFd>,
) -> Finished {
    Finished {
        outcome: api::Outcome {
            kind: Some(kind),
            stdout: Some(stdout),
            stderr: Some(stderr),
            usage: Some(usage),
            disabled_layers: settings.disabled_layers.to_vec(),
        },
        table,
    }
}

fn internal_error(reason: &str) -> Finished {
    let rejection = crate::job::Rejection::new(api::rejected::Code::Unspecified, format!("internal error: {reason}"));
    Finished { outcome: outcome::rejected(rejection), table: None }
}
