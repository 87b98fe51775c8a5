//! The `pyclave` command line: `serve` runs the supervisor, `run` runs one
//! job (through a running supervisor, or a private one) and prints its
//! outcome as one JSON object.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Reply};
use crate::config::Config;
use crate::proto::api::{CapturedOutput, Job, JobKind, Limits, job, outcome::Kind, rejected, timeout};
use crate::sandbox::probe::HostSupport;
use crate::sandbox::rootless::{self, OnSignal};
use crate::server;

#[derive(Debug, Parser)]
#[command(name = "pyclave", version, about = "Run untrusted Python in pre-warmed, confined workers")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The config of the supervisor this command hosts, once loaded.
    #[arg(skip)]
    config: Option<Config>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the supervisor on a Unix socket until SIGINT or SIGTERM.
    Serve {
        /// The Unix socket to listen on (a stale one left by a crashed run is replaced).
        #[arg(long)]
        socket: PathBuf,
        /// TOML config; every field has a secure default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run one job and print its outcome as JSON.
    Run(RunArgs),
    /// Measure throughput and latency against the alternatives.
    Bench(crate::bench::BenchArgs),
    /// Show, layer by layer, what confinement this host supports and what
    /// `serve` would enforce; exits non-zero when `serve` would refuse to start.
    Doctor {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A Python file to run inline.
    #[arg(long, conflicts_with = "script", required_unless_present = "script")]
    code: Option<PathBuf>,
    /// A script name in the server's scripts directory.
    #[arg(long)]
    script: Option<String>,
    /// The entry point; by default `transform` if the code defines it, else `main`.
    #[arg(long, value_enum)]
    kind: Option<KindArg>,
    /// Input table (Arrow IPC file).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Where to write the output table (Arrow IPC file).
    #[arg(long)]
    output: Option<PathBuf>,
    /// A JSON object passed as `params`.
    #[arg(long)]
    params: Option<String>,
    /// Memory limit of the job (at most the server's).
    #[arg(long)]
    memory_limit_bytes: Option<u64>,
    /// Wall-clock limit of the job (at most the server's).
    #[arg(long)]
    wall_timeout_ms: Option<u64>,
    /// CPU-time limit of the job, all its processes (at most the server's).
    #[arg(long)]
    cpu_timeout_ms: Option<u64>,
    /// A running supervisor's socket; without it a private supervisor runs the job.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Config of the private supervisor (ignored with --socket).
    #[arg(long, conflicts_with = "socket")]
    config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KindArg {
    Exec,
    Transform,
}

/// Exit statuses of `pyclave run`, one per outcome kind.
pub mod exit_code {
    pub const OK: u8 = 0;
    /// The command itself failed (bad arguments, no supervisor, ...).
    pub const ERROR: u8 = 1;
    pub const USER_ERROR: u8 = 10;
    pub const TIMEOUT: u8 = 11;
    pub const OUT_OF_MEMORY: u8 = 12;
    pub const KILLED: u8 = 13;
    pub const OUTPUT_REJECTED: u8 = 14;
    pub const REJECTED: u8 = 15;
}

impl Cli {
    /// What must happen before the async runtime starts: loads the config of
    /// the supervisor this command hosts (`serve`, `run` without `--socket`,
    /// `doctor`) and, when not root, enters the supervisor's own user and pid
    /// namespaces (see [`rootless`]). The calling process then becomes the
    /// shim that waits for the supervisor, and never returns.
    pub fn prepare(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        let on_signal = match &self.command {
            Command::Serve { .. } => OnSignal::Relay,
            Command::Run(args) if args.socket.is_none() => OnSignal::Kill,
            Command::Doctor { .. } => OnSignal::Kill,
            Command::Run(_) | Command::Bench(_) => return Ok(()),
        };
        let config = self.hosted_config()?;
        if !nix::unistd::geteuid().is_root() {
            let uids = crate::sandbox::ids::worker_uids(config.sandbox.uid_base, config.pool.worker_count());
            rootless::enter(uids, on_signal)?;
        }
        self.config = Some(config);
        Ok(())
    }

    /// The hosted supervisor's config: as `prepare` loaded it, else loaded now.
    fn hosted_config(&mut self) -> Result<Config, crate::config::ConfigError> {
        if let Some(config) = self.config.take() {
            return Ok(config);
        }
        match &self.command {
            Command::Serve { config, .. } | Command::Doctor { config, .. } => load_config(config.as_deref()),
            Command::Run(args) => {
                let mut config = load_config(args.config.as_deref())?;
                if args.config.is_none() {
                    config.pool.workers = 1; // one job needs one warm worker
                }
                Ok(config)
            }
            Command::Bench(_) => Config::parse(""),
        }
    }

    /// Runs the command; returns the process exit status.
    pub async fn execute(mut self) -> Result<u8, Box<dyn std::error::Error>> {
        let config = self.hosted_config()?;
        match self.command {
            Command::Serve { socket, .. } => {
                let shutdown = CancellationToken::new();
                tokio::spawn(cancel_on_signal(shutdown.clone()));
                server::serve(config, &socket, shutdown, || {}).await?;
                Ok(exit_code::OK)
            }
            Command::Run(args) => run(args, config).await,
            Command::Bench(args) => {
                crate::bench::run(args).await?;
                Ok(exit_code::OK)
            }
            Command::Doctor { json, .. } => doctor(&config, json),
        }
    }
}

/// Probes the host as `serve` does and reports per layer.
fn doctor(config: &Config, as_json: bool) -> Result<u8, Box<dyn std::error::Error>> {
    let cgroups = crate::cgroup::Cgroups::init();
    let worker_uids = crate::sandbox::ids::worker_uids(config.sandbox.uid_base, config.pool.worker_count());
    let support = HostSupport::probe(cgroups.as_ref().map_err(|e| crate::zygote::error_chain(e)), worker_uids);
    let mut layers = Vec::new();
    let mut would_start = true;
    for (layer, supported) in support.layers() {
        let required = config.sandbox.required(layer);
        would_start &= supported.is_ok() || !required;
        let detail = match (layer, supported, &cgroups) {
            (crate::sandbox::Layer::MemoryLimit, Ok(()), Ok(cgroups)) => format!("cgroup {}", cgroups.version()),
            (_, Ok(()), _) => String::new(),
            (_, Err(reason), _) => reason.clone(),
        };
        layers.push(json!({
            "layer": layer.name(),
            "supported": supported.is_ok(),
            "required": required,
            "enforced": supported.is_ok(),
            "detail": detail,
        }));
    }
    if let Ok(cgroups) = cgroups {
        cgroups.remove();
    }
    if as_json {
        println!("{}", json!({ "serve_would_start": would_start, "layers": layers }));
    } else {
        println!("{:<18} {:<10} {:<9} {:<9} detail", "layer", "supported", "required", "enforced");
        for layer in &layers {
            let yes_no = |key: &str| if layer[key].as_bool() == Some(true) { "yes" } else { "no" };
            println!(
                "{:<18} {:<10} {:<9} {:<9} {}",
                layer["layer"].as_str().unwrap_or(""),
                yes_no("supported"),
                yes_no("required"),
                yes_no("enforced"),
                layer["detail"].as_str().unwrap_or(""),
            );
        }
        println!(
            "\n`pyclave serve` {}",
            if would_start { "would start" } else { "would refuse to start (fail closed)" }
        );
    }
    Ok(if would_start { exit_code::OK } else { exit_code::ERROR })
}

fn load_config(path: Option<&Path>) -> Result<Config, crate::config::ConfigError> {
    path.map_or_else(|| Config::parse(""), Config::load)
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

async fn run(args: RunArgs, config: Config) -> Result<u8, Box<dyn std::error::Error>> {
    let code = match (&args.code, &args.script) {
        (Some(path), _) => job::Code::InlineCode(
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ),
        (None, Some(name)) => job::Code::ScriptName(name.clone()),
        (None, None) => unreachable!("clap requires --code or --script"),
    };
    let kind = match args.kind {
        None => JobKind::Auto,
        Some(KindArg::Exec) => JobKind::Exec,
        Some(KindArg::Transform) => JobKind::Transform,
    };
    let job = Job {
        kind: kind.into(),
        code: Some(code),
        params_json: args.params.clone().unwrap_or_default(),
        has_input_table: false,
        limits: Some(Limits {
            memory_limit_bytes: args.memory_limit_bytes.unwrap_or(0),
            wall_timeout_ms: args.wall_timeout_ms.unwrap_or(0),
            cpu_timeout_ms: args.cpu_timeout_ms.unwrap_or(0),
        }),
    };
    let input = match &args.input {
        Some(path) => Some(std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?),
        None => None,
    };

    let reply = match &args.socket {
        Some(socket) => Client::connect(socket).await?.run(job, input.as_ref().map(AsFd::as_fd)).await?,
        None => run_private(config, job, input.as_ref()).await?,
    };
    let (report, status) = describe(&reply, args.output.as_deref())?;
    println!("{report}");
    Ok(status)
}

/// Starts a supervisor on a private socket, runs `job` through it, stops it.
async fn run_private(
    config: Config,
    job: Job,
    input: Option<&std::fs::File>,
) -> Result<Reply, Box<dyn std::error::Error>> {
    let dir = tempfile::Builder::new().prefix("pyclave-run-").tempdir()?;
    let socket = dir.path().join("pyclave.sock");
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let server = {
        let (socket, shutdown) = (socket.clone(), shutdown.clone());
        tokio::spawn(async move {
            server::serve(config, &socket, shutdown, move || {
                let _ = ready_tx.send(());
            })
            .await
        })
    };
    if ready_rx.await.is_err() {
        // The server ended before it was ready: report why.
        server.await??;
        return Err("the private supervisor stopped before it was ready".into());
    }
    let reply = Client::connect(&socket).await?.run(job, input.map(AsFd::as_fd)).await;
    shutdown.cancel();
    server.await??;
    Ok(reply?)
}

/// The outcome as JSON, and the exit status for it.
fn describe(reply: &Reply, output: Option<&Path>) -> Result<(Value, u8), Box<dyn std::error::Error>> {
    let outcome = &reply.outcome;
    let mut report = Map::new();
    let (name, status, details) = match &outcome.kind {
        Some(Kind::Ok(ok)) => {
            let mut details = json!({});
            if !ok.json.is_empty() {
                details["value"] = serde_json::from_str(&ok.json)?;
            }
            if let Some(table) = &reply.table {
                let mut source = std::fs::File::from(table.try_clone()?);
                let bytes = match output {
                    Some(path) => std::io::copy(&mut source, &mut std::fs::File::create(path)?)?,
                    None => source.metadata()?.len(),
                };
                details["table"] = json!({ "bytes": bytes, "path": output.map(|p| p.display().to_string()) });
            }
            ("ok", exit_code::OK, details)
        }
        Some(Kind::UserError(error)) => (
            "user_error",
            exit_code::USER_ERROR,
            json!({ "type": error.r#type, "message": error.message, "traceback": error.traceback }),
        ),
        Some(Kind::Timeout(timeout)) => {
            let clock = if timeout.clock() == timeout::Clock::Cpu { "cpu" } else { "wall" };
            ("timeout", exit_code::TIMEOUT, json!({ "clock": clock, "limit_ms": timeout.limit_ms }))
        }
        Some(Kind::OutOfMemory(oom)) => (
            "out_of_memory",
            exit_code::OUT_OF_MEMORY,
            json!({ "limit_bytes": oom.limit_bytes, "peak_bytes": oom.peak_bytes }),
        ),
        Some(Kind::Killed(killed)) => (
            "killed",
            exit_code::KILLED,
            json!({ "signal": killed.signal, "signal_name": killed.signal_name, "syscall": killed.syscall }),
        ),
        Some(Kind::OutputRejected(rejected)) => {
            ("output_rejected", exit_code::OUTPUT_REJECTED, json!({ "reason": rejected.reason }))
        }
        Some(Kind::Rejected(rejection)) => {
            let code = rejected::Code::try_from(rejection.code).unwrap_or(rejected::Code::Unspecified);
            let code = code.as_str_name().trim_start_matches("CODE_").to_lowercase();
            ("rejected", exit_code::REJECTED, json!({ "code": code, "reason": rejection.reason }))
        }
        None => return Err("the outcome has no kind".into()),
    };
    report.insert("outcome".into(), name.into());
    if let Value::Object(details) = details {
        report.extend(details);
    }
    for (key, captured) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
        let captured = captured.clone().unwrap_or_default();
        let CapturedOutput { data, truncated } = captured;
        report.insert(key.into(), String::from_utf8_lossy(&data).into_owned().into());
        report.insert(format!("{key}_truncated"), truncated.into());
    }
    report.insert("disabled_layers".into(), outcome.disabled_layers.clone().into());
    let usage = outcome.usage.unwrap_or_default();
    report.insert(
        "usage".into(),
        json!({
            "queue_time_us": usage.queue_time_us,
            "wall_time_us": usage.wall_time_us,
            "cpu_time_us": usage.cpu_time_us,
            "peak_memory_bytes": usage.peak_memory_bytes,
        }),
    );
    Ok((Value::Object(report), status))
}
