//! The Unix-socket server: accepts callers, turns their requests into queued
//! jobs, and writes each job's outcome back on the connection it came from.
//!
//! A connection may have many jobs in flight (bounded); responses go out in
//! completion order, matched by the request id. A frame that breaks the
//! protocol gets a `ProtocolError` and closes that connection only. When a
//! connection closes, its queued jobs are dropped and its running jobs killed.

use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::cgroup::{CgroupError, Cgroups};
use crate::channel::{self, FrameWriter};
use crate::config::Config;
use crate::job::{self, Rejection};
use crate::outcome;
use crate::pool::{Pool, PoolSettings, QueuedJob};
use crate::proto::api::{ProtocolError, Request, Response, rejected, response};
use crate::reaper::ExitRegistry;
use crate::runtime_files::RuntimeDir;
use crate::sandbox::ids::UidPool;
use crate::sandbox::probe::HostSupport;
use crate::sandbox::{Plan, SandboxError};
use crate::scripts::ScriptDir;
use crate::worker::{Finished, WorkerError};
use crate::zygote::{Zygote, ZygoteError, ZygoteSettings, error_chain};

const SOCKET_MODE: u32 = 0o660;
/// How long killed jobs' outcomes get to reach their callers at shutdown.
const FLUSH_AFTER_KILL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another supervisor is listening on {path}")]
    SocketInUse { path: PathBuf },
    #[error("{path} exists and is not a socket")]
    NotASocket { path: PathBuf },
    #[error("cannot listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the scripts directory {path}")]
    Scripts {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the worker runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot set up cgroups")]
    Cgroup(#[from] CgroupError),
    #[error("cannot start the zygote")]
    Zygote(#[from] ZygoteError),
    #[error("cannot become the reaper of orphaned workers")]
    Reaper(#[source] std::io::Error),
    #[error("confinement")]
    Sandbox(#[from] SandboxError),
    #[error("the first worker did not start")]
    FirstWorker(#[from] WorkerError),
}

struct Context {
    config: Config,
    pool: Pool,
    scripts: Option<ScriptDir>,
}

/// Runs the supervisor on `socket_path` until `shutdown` fires. `ready` is
/// called once the socket accepts connections.
pub async fn serve(
    config: Config,
    socket_path: &Path,
    shutdown: CancellationToken,
    ready: impl FnOnce(),
) -> Result<(), ServerError> {
    let workers = config.pool.worker_count();
    let worker_uids = crate::sandbox::ids::worker_uids(config.sandbox.uid_base, workers);
    let cgroups = Cgroups::init().map(Arc::new);
    // Probe before the reaper runs: the probes wait for their own children.
    let support =
        HostSupport::probe(cgroups.as_deref().map_err(|error| crate::zygote::error_chain(error)), worker_uids.clone());
    let runtime = RuntimeDir::create(&RuntimeDir::default_parent()).map_err(ServerError::Runtime)?;
    let plan = Plan::decide(&config.sandbox, &support, &runtime)?;
    // Unusable cgroups are fine only when the memory_limit layer was lowered.
    let cgroups = cgroups.ok();

    let exits = ExitRegistry::default();
    // Become a subreaper before the first fork, so no worker escapes us.
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and touches no
    // memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(ServerError::Reaper(std::io::Error::last_os_error()));
    }
    let reaper = tokio::spawn(exits.clone().reap_children());

    let scripts = match &config.scripts.dir {
        Some(path) => {
            Some(ScriptDir::open(path).map_err(|source| ServerError::Scripts { path: path.clone(), source })?)
        }
        None => None,
    };
    let zygote_settings = ZygoteSettings {
        python: config.pool.python.clone(),
        python_dir: runtime.python_dir(),
        start_timeout: Duration::from_millis(config.pool.zygote_start_timeout_ms),
        nice: config.pool.nice,
        plan: plan.zygote_plan.clone(),
    };
    let zygote = Zygote::start(zygote_settings, exits, shutdown.clone()).await?;
    let pool_settings = PoolSettings {
        workers,
        max_queued_jobs: config.server.max_queued_jobs,
        limits: config.limits,
        output: config.output,
        uids: UidPool::new(worker_uids),
        max_processes: plan.limits_processes().then_some(plan.max_processes),
        disabled_layers: plan.disabled_names(),
        pid_namespaces: plan.zygote_plan.namespaces,
        warm_transforms: config.pool.warm_transforms,
    };
    let pool = Pool::start(pool_settings, zygote, cgroups.clone(), shutdown.clone()).await?;
    let listener = bind(socket_path)?;
    tracing::info!(
        socket = %socket_path.display(),
        workers,
        cgroup = cgroups.as_ref().map_or("none", |cgroups| cgroups.version()),
        disabled_layers = ?plan.disabled_names(),
        "pyclave supervisor ready"
    );
    ready();

    let context = Arc::new(Context { config, pool, scripts });
    let connections = TaskTracker::new();
    accept_loop(&listener, &context, &shutdown, &connections).await;

    // Shutdown: no new connections or jobs; queued jobs are rejected by the
    // pool; running jobs get the grace period, then are killed (and answered
    // `killed`); connections close once their last outcome is written.
    drop(listener);
    let _ = std::fs::remove_file(socket_path);
    connections.close();
    let grace = Duration::from_millis(context.config.server.shutdown_grace_ms);
    if tokio::time::timeout(grace, connections.wait()).await.is_err() {
        tracing::warn!(?grace, "running jobs did not finish within the shutdown grace period; killing them");
        remove_cgroups(cgroups.as_deref());
        let _ = tokio::time::timeout(FLUSH_AFTER_KILL, connections.wait()).await;
    }
    remove_cgroups(cgroups.as_deref());
    reaper.abort();
    drop(runtime);
    Ok(())
}

fn remove_cgroups(cgroups: Option<&Cgroups>) {
    if let Some(cgroups) = cgroups {
        cgroups.remove();
    }
}

/// Binds the socket with mode 0660, replacing a stale socket file left by a
/// crashed run (but never a live supervisor's, nor a non-socket file).
fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        if !metadata.file_type().is_socket() {
            return Err(ServerError::NotASocket { path: path.to_owned() });
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServerError::SocketInUse { path: path.to_owned() });
        }
        std::fs::remove_file(path).map_err(|source| ServerError::Bind { path: path.to_owned(), source })?;
    }
    let bind_error = |source| ServerError::Bind { path: path.to_owned(), source };
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(bind_error)?;
    Ok(listener)
}

async fn accept_loop(
    listener: &UnixListener,
    context: &Arc<Context>,
    shutdown: &CancellationToken,
    connections: &TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(context.config.server.max_connections));
    let mut next_connection = 0u64;
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("never closed"),
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        next_connection += 1;
        let (context, shutdown) = (Arc::clone(context), shutdown.clone());
        let span = tracing::info_span!("connection", id = next_connection);
        connections.spawn(
            async move {
                connection(stream, &context, &shutdown).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn connection(stream: UnixStream, context: &Context, shutdown: &CancellationToken) {
    let limits = &context.config.server;
    let split = stream.into_std().and_then(|stream| channel::split(stream, limits.max_request_frame_bytes));
    let (mut reader, writer) = match split {
        Ok(halves) => halves,
        Err(error) => {
            tracing::warn!(%error, "cannot register the connection");
            return;
        }
    };
    let (replies, finished) = mpsc::unbounded_channel();
    let (protocol_error, protocol_error_message) = oneshot::channel();
    let writer_task = tokio::spawn(write_responses(writer, finished, protocol_error_message));
    let mut protocol_error = Some(protocol_error);
    let mut report = |message: String| {
        tracing::debug!(error = %message, "protocol error; closing the connection");
        if let Some(sender) = protocol_error.take() {
            let _ = sender.send(message);
        }
    };
    let cancel = CancellationToken::new();
    let in_flight = Arc::new(Semaphore::new(limits.max_jobs_per_connection));

    let max_in_flight = limits.max_jobs_per_connection as u32;
    // At shutdown the connection keeps reading, so that every request the
    // caller sent is answered (`shutting_down`), until its last job is.
    let mut shutting_down = false;
    let caller_gone = loop {
        let received = tokio::select! {
            () = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                continue;
            }
            _ = in_flight.acquire_many(max_in_flight), if shutting_down => break false,
            received = reader.recv::<Request>() => received,
        };
        let request = match received {
            Ok(Some(request)) => request,
            Ok(None) => break true,
            Err(error) => {
                report(error_chain(&error));
                break true;
            }
        };
        let id = request.id;
        let Some(job) = request.job else {
            let rejection = Rejection::new(rejected::Code::BadRequest, "the request has no job");
            let _ = replies.send((id, Finished { outcome: outcome::rejected(rejection), table: None }));
            continue;
        };
        let input = if job.has_input_table {
            match reader.take_fd() {
                Ok(fd) => Some(fd),
                Err(error) => {
                    report(error.to_string());
                    break true;
                }
            }
        } else {
            None
        };
        if shutting_down {
            let rejection = Rejection::new(rejected::Code::ShuttingDown, "the server is shutting down");
            let _ = replies.send((id, Finished { outcome: outcome::rejected(rejection), table: None }));
            continue;
        }
        let Ok(slot) = Arc::clone(&in_flight).try_acquire_owned() else {
            let rejection = Rejection::new(
                rejected::Code::TooManyJobs,
                format!("at most {} jobs may be in flight per connection", limits.max_jobs_per_connection),
            );
            let _ = replies.send((id, Finished { outcome: outcome::rejected(rejection), table: None }));
            continue;
        };
        match job::prepare(job, input, &context.config.limits, context.scripts.as_ref()) {
            Ok(spec) => context.pool.submit(QueuedJob {
                id,
                spec,
                accepted_at: Instant::now(),
                cancel: cancel.clone(),
                reply: replies.clone(),
                in_flight: slot,
                lost_workers: 0,
            }),
            Err(rejection) => {
                let _ = replies.send((id, Finished { outcome: outcome::rejected(rejection), table: None }));
            }
        }
    };
    if caller_gone {
        // Disconnected, or broke the protocol: its queued jobs are dropped
        // and its running jobs killed. (At shutdown they are answered.)
        cancel.cancel();
    }
    // The writer ends once every outcome is written: drop our senders.
    drop((replies, protocol_error));
    let _ = writer_task.await;
}

/// Sends outcomes as they complete, until every job of the connection is
/// answered. A protocol error is sent at once and ends the connection.
async fn write_responses(
    mut writer: FrameWriter,
    mut finished: mpsc::UnboundedReceiver<(u64, Finished)>,
    mut protocol_error: oneshot::Receiver<String>,
) {
    let mut protocol_error_possible = true;
    loop {
        let (response, table) = tokio::select! {
            biased;
            message = &mut protocol_error, if protocol_error_possible => match message {
                Ok(message) => {
                    let body = response::Body::ProtocolError(ProtocolError { message });
                    let _ = writer.send(&Response { id: 0, body: Some(body) }, &[]).await;
                    return;
                }
                Err(_) => {
                    protocol_error_possible = false;
                    continue;
                }
            },
            next = finished.recv() => match next {
                Some((id, Finished { outcome, table })) => {
                    (Response { id, body: Some(response::Body::Outcome(outcome)) }, table)
                }
                None => return,
            },
        };
        let fds: Vec<_> = table.iter().map(AsFd::as_fd).collect();
        if let Err(error) = writer.send(&response, &fds).await {
            tracing::debug!(error = %error_chain(&error), "cannot write to the caller");
            return;
        }
    }
}
