//! The zygote: a Python process that has imported pandas/pyarrow/numpy once
//! and forks a worker per `Spawn` command.
//!
//! [`Zygote`] is the handle workers use to be born. Behind it one task owns
//! the zygote process: it starts it, forwards spawn requests (each worker is
//! watched in the [`ExitRegistry`] before its request leaves) and delivers
//! what the zygote reports: exits and failed spawns. A successful spawn is
//! not answered: the worker reports ready on its own channel. When the
//! zygote dies, a spawn it had not served closes the worker's channel (its
//! fds die with the zygote or with the request), the task starts a new
//! zygote (with back-off), and running workers carry on: the supervisor, a
//! child subreaper, inherits and reaps them.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::channel::{self, ChannelError, FrameReader, FrameWriter};
use crate::proto::worker::{Rehearsal, Spawn, ZygoteCommand, ZygoteEvent, zygote_command, zygote_event};
use crate::reaper::{EndWatch, ExitRegistry, ExitStatus, WorkerEnd};

/// The fd number the zygote finds its control socket on.
const CONTROL_FD: i32 = 3;
const MAX_EVENT_FRAME_BYTES: usize = 64 * 1024;
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ZygoteError {
    #[error("cannot start the zygote ({python})")]
    Start {
        python: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the zygote did not report ready within {timeout:?}")]
    StartTimeout { timeout: Duration },
    #[error("the zygote exited during start-up (is pandas/pyarrow installed for this interpreter?)")]
    DiedAtStart,
    #[error("the zygote has {threads} threads; it must fork single-threaded")]
    Threaded { threads: u32 },
    #[error("zygote channel")]
    Channel(#[from] ChannelError),
    #[error("the zygote sent {received} where {expected} was expected")]
    UnexpectedMessage { expected: &'static str, received: String },
    #[error("the zygote died")]
    Died,
    #[error("the supervisor is shutting down")]
    ShuttingDown,
}

/// What the zygote hands a new worker: the worker's end of its channel and
/// its cgroup's `cgroup.procs` files (its output and start pipes it makes
/// itself, and hands their read ends over with its `ready`).
pub struct WorkerFds {
    pub control: OwnedFd,
    pub cgroup_procs: Vec<std::sync::Arc<std::fs::File>>,
}

struct SpawnRequest {
    worker_id: u64,
    uid: u32,
    fds: WorkerFds,
    warming: Warming,
}

/// What a new worker does to itself before it reports ready, so that its
/// job's first steps cost less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warming {
    pub rehearsal: Rehearsal,
    /// It copies the zygote's pages a transform's path writes, not only
    /// those a trivial job's writes (worker/native/prefault.c).
    pub transform_pages: bool,
}

/// How to start the zygote.
#[derive(Debug, Clone)]
pub struct ZygoteSettings {
    pub python: PathBuf,
    /// Put on the zygote's `sys.path`.
    pub python_dir: PathBuf,
    pub start_timeout: Duration,
    /// The zygote's niceness, which every worker inherits.
    pub nice: u8,
    /// How every worker confines itself.
    pub plan: crate::proto::worker::SandboxPlan,
}

/// A cloneable handle to the zygote service.
#[derive(Clone)]
pub struct Zygote {
    requests: mpsc::Sender<SpawnRequest>,
    exits: ExitRegistry,
}

impl Zygote {
    /// Starts the first zygote and waits until it is ready, so that a broken
    /// interpreter is reported at start-up; later restarts happen in the
    /// background.
    pub async fn start(
        settings: ZygoteSettings,
        exits: ExitRegistry,
        shutdown: CancellationToken,
    ) -> Result<Self, ZygoteError> {
        let first = RunningZygote::start(&settings).await?;
        let (requests, receiver) = mpsc::channel(64);
        tokio::spawn(serve(settings, first, receiver, exits.clone(), shutdown));
        Ok(Self { requests, exits })
    }

    /// Asks for a worker that will run as `uid` (and gid), talk on
    /// `fds.control` and warm itself up as `warming` says before it reports ready;
    /// returns a watch on its end. Whether it was forked
    /// shows on that channel: `ready`, or its end (the zygote's reason is in
    /// the end when it could not fork). A spawn whose watch is dropped
    /// before the request reaches the zygote is not sent.
    pub async fn spawn(
        &self,
        worker_id: u64,
        uid: u32,
        fds: WorkerFds,
        warming: Warming,
    ) -> Result<EndWatch, ZygoteError> {
        let end = self.exits.watch(worker_id);
        let request = SpawnRequest { worker_id, uid, fds, warming };
        self.requests.send(request).await.map_err(|_| ZygoteError::ShuttingDown)?;
        Ok(end)
    }
}

struct RunningZygote {
    pid: Pid,
    reader: FrameReader,
    writer: FrameWriter,
}

impl RunningZygote {
    async fn start(settings: &ZygoteSettings) -> Result<Self, ZygoteError> {
        let start_error = |source| ZygoteError::Start { python: settings.python.clone(), source };
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(start_error)?;
        let theirs = OwnedFd::from(theirs);
        let python = resolve_program(&settings.python)
            .ok_or_else(|| start_error(std::io::Error::new(std::io::ErrorKind::NotFound, "not found on PATH")))?;
        let child = zygote_command(&python, &settings.python_dir, settings.nice, theirs.as_raw_fd())
            .spawn()
            .map_err(start_error)?;
        drop(theirs);
        let pid = Pid::from_raw(child.id() as i32);
        // The child is reaped by the supervisor's reaper, not through `child`.
        drop(child);
        let (mut reader, mut writer) = channel::split(ours, MAX_EVENT_FRAME_BYTES).map_err(start_error)?;
        let configure = ZygoteCommand { command: Some(zygote_command::Command::Configure(settings.plan.clone())) };
        if let Err(error) = writer.send(&configure, &[]).await {
            let _ = kill(pid, Signal::SIGKILL);
            return Err(error.into());
        }

        let ready = tokio::time::timeout(settings.start_timeout, reader.recv::<ZygoteEvent>())
            .await
            .map_err(|_| ZygoteError::StartTimeout { timeout: settings.start_timeout });
        let ready = match ready {
            Ok(Ok(Some(event))) => event,
            Ok(Ok(None)) => return Err(ZygoteError::DiedAtStart),
            Ok(Err(error)) => return Err(error.into()),
            Err(error) => {
                let _ = kill(pid, Signal::SIGKILL);
                return Err(error);
            }
        };
        match ready.event {
            Some(zygote_event::Event::Ready(ready)) if ready.thread_count == 1 => {
                tracing::info!(pid = ready.pid, mappings = ready.mapping_count, "zygote ready");
                Ok(Self { pid, reader, writer })
            }
            Some(zygote_event::Event::Ready(ready)) => {
                let _ = kill(pid, Signal::SIGKILL);
                Err(ZygoteError::Threaded { threads: ready.thread_count })
            }
            other => {
                let _ = kill(pid, Signal::SIGKILL);
                Err(ZygoteError::UnexpectedMessage { expected: "ready", received: format!("{other:?}") })
            }
        }
    }

    /// Serves spawn requests until the zygote dies or shutdown; `generation`
    /// tells this zygote from the ones before and after it.
    async fn serve(
        &mut self,
        generation: u64,
        requests: &mut mpsc::Receiver<SpawnRequest>,
        exits: &ExitRegistry,
        shutdown: &CancellationToken,
    ) -> Result<(), ZygoteError> {
        let result = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                request = requests.recv() => {
                    let Some(request) = request else { break Ok(()) };
                    if !exits.is_watched(request.worker_id) {
                        continue; // given up on already: its fds close here
                    }
                    exits.sent(request.worker_id, generation);
                    let spawn = Spawn {
                        worker_id: request.worker_id,
                        uid: request.uid,
                        gid: request.uid,
                        cgroup_fds: request.fds.cgroup_procs.len() as u32,
                        rehearsal: request.warming.rehearsal.into(),
                        transform_pages: request.warming.transform_pages,
                    };
                    let command = ZygoteCommand { command: Some(zygote_command::Command::Spawn(spawn)) };
                    let WorkerFds { control, cgroup_procs } = &request.fds;
                    let mut fds = vec![control.as_fd()];
                    fds.extend(cgroup_procs.iter().map(AsFd::as_fd));
                    if let Err(error) = self.writer.send(&command, &fds).await {
                        break Err(error.into());
                    }
                }
                event = self.reader.recv::<ZygoteEvent>() => match event {
                    Ok(Some(event)) => handle_event(event, exits),
                    Ok(None) => break Err(ZygoteError::Died),
                    Err(error) => break Err(error.into()),
                },
            }
        };
        let _ = kill(self.pid, Signal::SIGKILL);
        result
    }
}

fn handle_event(event: ZygoteEvent, exits: &ExitRegistry) {
    match event.event {
        Some(zygote_event::Event::Exited(exited)) => {
            exits.deliver(exited.worker_id, WorkerEnd::Exited(ExitStatus::from_raw(exited.wait_status)));
        }
        Some(zygote_event::Event::SpawnFailed(failed)) => {
            exits.deliver(
                failed.worker_id,
                WorkerEnd::Unreported(format!("the zygote could not fork it: {}", failed.error)),
            );
        }
        Some(zygote_event::Event::Ready(_)) | None => {
            tracing::warn!("unexpected event from the zygote");
        }
    }
}

async fn serve(
    settings: ZygoteSettings,
    first: RunningZygote,
    mut requests: mpsc::Receiver<SpawnRequest>,
    exits: ExitRegistry,
    shutdown: CancellationToken,
) {
    let mut zygote = Some(first);
    let mut backoff = Duration::from_millis(50);
    let mut generation = 0;
    while !shutdown.is_cancelled() {
        let mut running = match zygote.take() {
            Some(running) => running,
            None => match RunningZygote::start(&settings).await {
                Ok(running) => {
                    backoff = Duration::from_millis(50);
                    running
                }
                Err(error) => {
                    tracing::error!(error = %error_chain(&error), "cannot restart the zygote");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RESTART_BACKOFF);
                    continue;
                }
            },
        };
        generation += 1;
        let served = running.serve(generation, &mut requests, &exits, &shutdown).await;
        exits.zygote_lost(generation);
        if let Err(error) = served {
            tracing::warn!(pid = %running.pid, error = %error_chain(&error), "zygote died; restarting it");
        }
    }
}

/// `program` as given when it has a slash, else the first match on the
/// supervisor's own PATH (the zygote's PATH is a fixed minimal one). Not
/// canonicalized: a venv's interpreter must keep its path to find the venv.
pub fn resolve_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return Some(program.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| {
        use std::os::unix::fs::PermissionsExt;
        candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The zygote's command line; `control` must stay open until it is spawned.
fn zygote_command(python: &Path, python_dir: &Path, nice: u8, control: RawFd) -> Command {
    let bootstrap = format!(
        "import sys; sys.path.insert(0, {dir:?}); from pyclave_worker import zygote; zygote.main({CONTROL_FD})",
        dir = python_dir.display().to_string(),
    );
    let mut command = Command::new(python);
    command.args(["-I", "-c", &bootstrap]);
    zygote_environment(&mut command, &python_dir.join(crate::runtime_files::NATIVE_LIBRARY));
    command
        .stdin(Stdio::null())
        // The zygote's own prints belong in the supervisor's log, never on
        // its stdout (where `pyclave run` prints the outcome).
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit());
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: dup2 and fcntl are, and
    // setpriority is a plain syscall wrapper (no locks, no allocation).
    // `control` is open in the parent for the whole spawn (the caller's
    // contract), so the child's copy is valid.
    unsafe {
        command.pre_exec(move || {
            let result = if control == CONTROL_FD {
                libc::fcntl(CONTROL_FD, libc::F_SETFD, 0)
            } else {
                libc::dup2(control, CONTROL_FD)
            };
            if result == -1 || libc::setpriority(libc::PRIO_PROCESS, 0, libc::c_int::from(nice)) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// The zygote's environment, and its native library preloaded so that
/// CPython's arenas come from one region from the interpreter's start
/// (worker/native/memory.c; the library takes both variables out of the
/// environment). A path the loader would split is not preloaded: the
/// region then starts before the big imports.
pub fn zygote_environment(command: &mut Command, native_library: &Path) {
    command.env_clear().envs(crate::sandbox::BASE_ENVIRONMENT.iter().copied());
    if !native_library.as_os_str().as_encoded_bytes().iter().any(|byte| matches!(byte, b' ' | b':')) {
        command.env("LD_PRELOAD", native_library).env("PYCLAVE_ARENA_REGION_AT_START", "1");
    }
}

/// Renders an error with its sources, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
