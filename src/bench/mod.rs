//! `pyclave bench`: throughput and latency of a real supervisor over its
//! Unix socket, with the approaches callers would otherwise use measured in
//! the same run (see [`workloads`] for the jobs, `baselines.py` for the
//! baselines, [`headline`] for the two ratios the design is judged by,
//! [`measure`] for what is read off the system).

pub mod compare;
pub mod headline;
pub mod measure;
pub mod workloads;

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::client::Client;
use crate::proto::api::{Job, job, outcome::Kind};
use measure::Latencies;
use workloads::{TableSize, Workload};

const BASELINES_PY: &str = include_str!("baselines.py");
/// How long the pool is left alone before its idle workers are measured.
const IDLE_SETTLE: Duration = Duration::from_secs(1);
/// Pause between jobs of the warm-pool latency run: longer than a worker
/// takes to be forked and confined.
const WARM_PACE: Duration = Duration::from_millis(40);
/// Paced transforms after which new workers rehearse one (8 of the last 16
/// jobs; the bench runs twice as many, so several have).
const TRANSFORM_WARM_JOBS: usize = 8;
/// Alternating rounds of each headline ratio (`--quick`: 3).
const HEADLINE_ROUNDS: usize = 5;

/// Options of `pyclave bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Fewer jobs (same figures): finishes in about a minute.
    #[arg(long)]
    pub quick: bool,
    /// Print the results as one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Concurrent callers to measure, e.g. 1,2,4,8.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub concurrency: Vec<usize>,
    /// Warm workers of the benchmarked supervisor (default: its config's).
    #[arg(long)]
    pub workers: Option<usize>,
    /// The interpreter with pandas/pyarrow (also runs the baselines).
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// Skip the 1 GiB zero-copy check (it needs ~2 GiB of memory).
    #[arg(long)]
    pub skip_huge: bool,
    /// Instead of the full benchmark, compare this build with another
    /// pyclave binary: their supervisors alternate over closed-loop runs of
    /// --workload at the largest --concurrency level, and medians are printed.
    #[arg(long, value_name = "PYCLAVE")]
    pub against: Option<PathBuf>,
    /// Pairs of runs for --against.
    #[arg(long, default_value_t = compare::DEFAULT_PAIRS, requires = "against")]
    pub pairs: usize,
    /// What --against runs.
    #[arg(long, value_enum, default_value = "trivial", requires = "against")]
    pub workload: compare::ComparedWorkload,
}

#[derive(Debug, Serialize)]
struct LevelResult {
    workload: &'static str,
    callers: usize,
    jobs: usize,
    failed: usize,
    /// Outcomes that came with an output table (a transform's).
    tables_returned: usize,
    jobs_per_second: f64,
    latency: Latencies,
    supervisor_cpu_per_job_us: f64,
}

#[derive(Debug, Serialize)]
struct BaselineResult {
    workload: &'static str,
    baseline: &'static str,
    latency: Option<Latencies>,
    note: String,
}

/// Runs the benchmark; prints tables or JSON on stdout.
pub async fn run(args: BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let python = crate::zygote::resolve_program(&args.python).ok_or("python not found on PATH")?;
    if let Some(against) = &args.against {
        return compare::run(&args, &python, against).await;
    }
    let dir = tempfile::Builder::new().prefix("pyclave-bench-").tempdir()?;
    let scale = if args.quick { 1 } else { 5 };
    let mut supervisor = Supervisor::start(dir.path(), &python, args.workers)?;
    let socket = supervisor.socket.clone();

    // Inputs: a memfd for pyclave, the same bytes in a file for the baselines.
    let mut inputs = Vec::new();
    for size in [TableSize::Small, TableSize::Large] {
        let path = dir.path().join(format!("{size:?}.arrow"));
        let (fd, bytes) = size.write(Some(&path))?;
        inputs.push((size, fd, path, bytes));
    }
    let input_of = |workload: &Workload| {
        workload.input.map(|size| inputs.iter().find(|(s, ..)| *s == size).expect("every size is written"))
    };

    progress("warming up");
    run_level(&socket, &workloads::TRIVIAL, None, 2, 40, None).await?;
    // Replacements fork and confine within milliseconds of the last answer:
    // measured at once, the pool would be caught half refilled.
    tokio::time::sleep(IDLE_SETTLE).await;
    let idle = idle_memory(supervisor.pid());
    // Latency with a warm pool: one job at a time, paced so the pool refills.
    let cpu_before = measure::process_cpu(supervisor.pid());
    let mut warm = run_level(&socket, &workloads::TRIVIAL, None, 1, 100 * scale, Some(WARM_PACE)).await?;
    warm.supervisor_cpu_per_job_us =
        measure::process_cpu(supervisor.pid()).saturating_sub(cpu_before).as_secs_f64() * 1e6 / warm.jobs as f64;
    // After a run of paced transforms, new workers rehearse one too
    // (`pool.warm_transforms`) and hold more memory while idle.
    let small_input = input_of(&workloads::SMALL_GROUPBY).map(|(_, fd, ..)| fd);
    progress("warming up for transforms");
    run_level(&socket, &workloads::SMALL_GROUPBY, small_input, 1, 2 * TRANSFORM_WARM_JOBS, Some(WARM_PACE)).await?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let idle_transform_warmed = idle_memory(supervisor.pid());

    let script = dir.path().join("baselines.py");
    std::fs::write(&script, BASELINES_PY)?;
    let mut code_files = Vec::new();
    for (index, workload) in workloads::ALL.iter().enumerate() {
        code_files.push(dir.path().join(format!("workload{index}.py")));
        std::fs::write(&code_files[index], workload.code)?;
    }
    let mut levels = Vec::new();
    for workload in workloads::ALL {
        let jobs = scale * if workload.input == Some(TableSize::Large) { 8 } else { 200 };
        for &callers in &args.concurrency {
            let input = input_of(&workload).map(|(_, fd, ..)| fd);
            let cpu_before = measure::process_cpu(supervisor.pid());
            let mut level = run_level(&socket, &workload, input, callers, jobs.max(callers), None).await?;
            let cpu = measure::process_cpu(supervisor.pid()).saturating_sub(cpu_before);
            level.supervisor_cpu_per_job_us = cpu.as_secs_f64() * 1e6 / level.jobs as f64;
            levels.push(level);
        }
    }

    // The zygote forks from pyclave's native library: so does the floor.
    let runtime = crate::runtime_files::RuntimeDir::create(dir.path())?;
    let native_library = runtime.native_library().display().to_string();
    let trivial_index = workloads::ALL.iter().position(|w| w.name == workloads::TRIVIAL.name).expect("trivial");
    let setup = headline::Setup {
        socket: &socket,
        python: &python,
        script: &script,
        trivial_code: &code_files[trivial_index],
        native_library: &native_library,
        rounds: if args.quick { 3 } else { HEADLINE_ROUNDS },
        scale,
    };
    let cold_comparison = headline::cold_vs_warm(&setup).await?;
    let best_callers = levels
        .iter()
        .filter(|level| level.workload == workloads::TRIVIAL.name)
        .max_by(|a, b| a.jobs_per_second.total_cmp(&b.jobs_per_second))
        .map_or(1, |level| level.callers);
    let floor_comparison = headline::floor_vs_throughput(&setup, best_callers).await?;

    let copies = copy_checks(&socket, &inputs[1].1, inputs[1].3, args.skip_huge).await?;

    let mut baselines = Vec::new();
    let bwrap = crate::zygote::resolve_program(Path::new("bwrap"));
    for (workload, code_file) in workloads::ALL.into_iter().zip(&code_files) {
        let input = input_of(&workload).map(|(.., path, _)| path.display().to_string()).unwrap_or_default();
        let large = workload.input == Some(TableSize::Large);
        let cold_jobs = if large { 2 } else { 3 * scale };
        let runs: [(&'static str, &str, usize, Option<&str>); 3] = [
            ("cold python -c", "cold", cold_jobs, None),
            ("bwrap + python -c", "bwrap", cold_jobs, bwrap.is_none().then_some("bubblewrap not installed: skipped")),
            ("in-process (no sandbox)", "inprocess", if large { 5 } else { 50 * scale }, None),
        ];
        for (label, mode, jobs, skip) in runs {
            progress(&format!("baseline {label}: {}", workload.name));
            let result = match skip {
                Some(note) => {
                    BaselineResult { workload: workload.name, baseline: label, latency: None, note: note.into() }
                }
                None => match baseline(&python, &script, mode, code_file, &input, jobs) {
                    Ok(latency) => BaselineResult {
                        workload: workload.name,
                        baseline: label,
                        latency: Some(latency),
                        note: String::new(),
                    },
                    Err(error) => BaselineResult {
                        workload: workload.name,
                        baseline: label,
                        latency: None,
                        note: error.to_string(),
                    },
                },
            };
            baselines.push(result);
        }
    }
    progress_done();
    supervisor.stop();

    let report = json!({
        "machine": machine(),
        "workers": supervisor.workers,
        "warm_pool_latency": warm,
        "levels": levels,
        "baselines": baselines,
        "cold_comparison": cold_comparison,
        "floor_comparison": { "callers": best_callers, "comparison": floor_comparison },
        "idle_memory": idle,
        "idle_memory_transform_warmed": idle_transform_warmed,
        "input_copy": copies,
    });
    if args.json {
        println!("{report}");
    } else {
        print_tables(&warm, &levels, &baselines, (&cold_comparison, &floor_comparison, best_callers), &report);
    }
    Ok(())
}

/// A `pyclave serve` child with its default config (plus `--workers`).
struct Supervisor {
    child: Child,
    socket: PathBuf,
    workers: usize,
}

impl Supervisor {
    fn start(dir: &Path, python: &Path, workers: Option<usize>) -> Result<Self, Box<dyn std::error::Error>> {
        Self::start_binary(&std::env::current_exe()?, dir, python, workers)
    }

    /// The supervisor of the pyclave binary at `binary`.
    fn start_binary(
        binary: &Path,
        dir: &Path,
        python: &Path,
        workers: Option<usize>,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let socket = dir.join("bench.sock");
        let config = dir.join("bench.toml");
        let workers = workers.unwrap_or_else(|| crate::config::PoolConfig::default().worker_count());
        std::fs::write(&config, format!("[pool]\nworkers = {workers}\npython = {:?}\n", python.display().to_string()))?;
        let child = Command::new(binary)
            .args(["serve", "--socket"])
            .arg(&socket)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "pyclave=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let supervisor = Self { child, socket, workers };
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::os::unix::net::UnixStream::connect(&supervisor.socket).is_err() {
            if Instant::now() > deadline {
                return Err("the benchmarked supervisor did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(supervisor)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

fn job_for(workload: &Workload) -> Job {
    Job { kind: workload.kind.into(), code: Some(job::Code::InlineCode(workload.code.into())), ..Job::default() }
}

/// `jobs` jobs from `callers` concurrent connections, each closed-loop
/// (or, with `pace`, waiting that long between jobs).
async fn run_level(
    socket: &Path,
    workload: &Workload,
    input: Option<&OwnedFd>,
    callers: usize,
    jobs: usize,
    pace: Option<Duration>,
) -> Result<LevelResult, Box<dyn std::error::Error>> {
    let per_caller = jobs.div_ceil(callers);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let mut client = Client::connect(socket).await?;
        let job = job_for(workload);
        let input = input.map(|fd| fd.try_clone()).transpose()?;
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per_caller);
            let (mut failed, mut tables) = (0, 0);
            for _ in 0..per_caller {
                if let Some(pace) = pace {
                    tokio::time::sleep(pace).await;
                }
                let sent = Instant::now();
                let reply = client.run(job.clone(), input.as_ref().map(AsFd::as_fd)).await;
                latencies.push(sent.elapsed().as_micros() as u64);
                match reply {
                    Ok(reply) if matches!(reply.outcome.kind, Some(Kind::Ok(_))) => {
                        tables += usize::from(reply.table.is_some());
                    }
                    _ => failed += 1,
                }
            }
            (latencies, failed, tables)
        });
    }
    let (mut latencies, mut failed, mut tables_returned) = (Vec::new(), 0, 0);
    while let Some(result) = tasks.join_next().await {
        let (caller_latencies, caller_failed, caller_tables) = result?;
        latencies.extend(caller_latencies);
        failed += caller_failed;
        tables_returned += caller_tables;
        progress(&format!("{} x{callers}: {}/{}", workload.name, latencies.len(), per_caller * callers));
    }
    let elapsed = started.elapsed();
    let jobs = latencies.len();
    Ok(LevelResult {
        workload: workload.name,
        callers,
        jobs,
        failed,
        tables_returned,
        jobs_per_second: jobs as f64 / elapsed.as_secs_f64(),
        latency: Latencies::of(&mut latencies),
        supervisor_cpu_per_job_us: 0.0,
    })
}

/// Bytes of the input's numeric columns that reached `transform` copied,
/// for the 128 MiB table and (unless skipped) a 1 GiB one.
async fn copy_checks(
    socket: &Path,
    large: &OwnedFd,
    large_bytes: u64,
    skip_huge: bool,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let mut results = vec![copy_check(socket, large, large_bytes).await?];
    if !skip_huge {
        progress("writing a 1 GiB input table");
        let (huge, bytes) = TableSize::Huge.write(None)?;
        results.push(copy_check(socket, &huge, bytes).await?);
    }
    Ok(results.into())
}

async fn copy_check(
    socket: &Path,
    input: &OwnedFd,
    table_bytes: u64,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    progress(&format!("zero-copy check on a {} MiB table", table_bytes >> 20));
    let job = Job {
        kind: crate::proto::api::JobKind::Transform.into(),
        code: Some(job::Code::InlineCode(workloads::COPY_CHECK.into())),
        ..Job::default()
    };
    let reply = Client::connect(socket).await?.run(job, Some(input.as_fd())).await?;
    let stdout = reply.outcome.stdout.map(|captured| captured.data).unwrap_or_default();
    let mut measured: serde_json::Value =
        serde_json::from_slice(&stdout).map_err(|_| format!("the copy check failed: {:?}", reply.outcome.kind))?;
    measured["table_bytes"] = table_bytes.into();
    Ok(measured)
}

fn baseline(
    python: &Path,
    script: &Path,
    mode: &str,
    code_file: &Path,
    input: &str,
    jobs: usize,
) -> Result<Latencies, Box<dyn std::error::Error>> {
    let mut command = Command::new(python);
    command.arg(script).args([mode, &code_file.display().to_string(), input, &jobs.to_string()]);
    if mode == "forkrate" {
        // The floor forks a process laid out as the zygote is.
        crate::zygote::zygote_environment(&mut command, Path::new(input));
    } else {
        command.env("OPENBLAS_NUM_THREADS", "1");
    }
    let output = command.stderr(Stdio::piped()).output()?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{mode} failed: {}", stderr.lines().last().unwrap_or("")).into());
    }
    let parsed: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let mut samples: Vec<u64> = serde_json::from_value(parsed["latencies_us"].clone())?;
    Ok(Latencies::of(&mut samples))
}

fn idle_memory(supervisor: u32) -> serde_json::Value {
    let zygote = measure::children(supervisor).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("zygote.main"))
    });
    let Some(zygote) = zygote else { return json!(null) };
    let workers: Vec<(u64, u64)> = measure::children(zygote).into_iter().filter_map(measure::pss_uss_bytes).collect();
    let average = |pick: fn(&(u64, u64)) -> u64| workers.iter().map(pick).sum::<u64>() / workers.len().max(1) as u64;
    json!({
        "zygote_rss_bytes": measure::rss_bytes(zygote),
        "idle_workers": workers.len(),
        "idle_worker_pss_bytes": average(|w| w.0),
        "idle_worker_uss_bytes": average(|w| w.1),
        "idle_worker_uss_max_bytes": workers.iter().map(|w| w.1).max(),
    })
}

fn machine() -> serde_json::Value {
    let uname = nix::sys::utsname::uname().ok();
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
        info.lines()
            .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()))
    });
    json!({
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu": model,
        "kernel": uname.map(|u| u.release().to_string_lossy().into_owned()),
    })
}

fn progress(message: &str) {
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "\r\x1b[2K[bench] {message}");
    let _ = stderr.flush();
}

fn progress_done() {
    eprintln!("\r\x1b[2K[bench] done");
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn print_tables(
    warm: &LevelResult,
    levels: &[LevelResult],
    baselines: &[BaselineResult],
    (cold, floor, floor_callers): (&headline::Alternated, &headline::Alternated, usize),
    report: &serde_json::Value,
) {
    println!("machine: {}", report["machine"]);
    println!("supervisor: {} warm workers, every confinement layer on\n", report["workers"]);
    println!(
        "trivial exec, warm pool (1 caller, {} ms between jobs): p50 {} ms, p90 {} ms, p99 {} ms, max {} ms, supervisor CPU {:.0} µs/job\n",
        WARM_PACE.as_millis(),
        ms(warm.latency.p50_us),
        ms(warm.latency.p90_us),
        ms(warm.latency.p99_us),
        ms(warm.latency.max_us),
        warm.supervisor_cpu_per_job_us,
    );
    println!(
        "{:<46} {:>5} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>12}",
        "pyclave", "calls", "jobs", "jobs/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "sup CPU/job"
    );
    for level in levels {
        println!(
            "{:<46} {:>5} {:>6} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>9.0} µs{}",
            level.workload,
            level.callers,
            level.jobs,
            level.jobs_per_second,
            ms(level.latency.p50_us),
            ms(level.latency.p90_us),
            ms(level.latency.p99_us),
            ms(level.latency.max_us),
            level.supervisor_cpu_per_job_us,
            if level.failed > 0 { format!("  ({} failed)", level.failed) } else { String::new() },
        );
    }
    println!("\n{:<46} {:<24} {:>8} {:>8} {:>14}", "baseline (1 caller)", "", "p50 ms", "p99 ms", "p50 / pyclave");
    for baseline in baselines {
        let ours = levels.iter().find(|l| l.workload == baseline.workload && l.callers == 1);
        match (&baseline.latency, ours) {
            (Some(latency), Some(ours)) => println!(
                "{:<46} {:<24} {:>8} {:>8} {:>13.1}x",
                baseline.workload,
                baseline.baseline,
                ms(latency.p50_us),
                ms(latency.p99_us),
                latency.p50_us as f64 / ours.latency.p50_us.max(1) as f64
            ),
            _ => println!("{:<46} {:<24} {}", baseline.workload, baseline.baseline, baseline.note),
        }
    }
    println!(
        "\ncold python -c per trivial job vs pyclave with a warm pool, {} alternating rounds (medians): {} ms vs {} ms = {:.0}x (rounds {:.0}x to {:.0}x)",
        cold.rounds.len(),
        format_args!("{:.1}", cold.baseline),
        format_args!("{:.2}", cold.pyclave),
        cold.ratio,
        cold.ratio_min,
        cold.ratio_max,
    );
    println!(
        "fork+exit+wait of a pandas zygote (floor of this design) vs pyclave trivial x{floor_callers}, {} alternating rounds (medians): {:.0}/s vs {:.0} jobs/s = {:.0}% of it (rounds {:.0}% to {:.0}%)",
        floor.rounds.len(),
        floor.baseline,
        floor.pyclave,
        100.0 * floor.ratio,
        100.0 * floor.ratio_min,
        100.0 * floor.ratio_max,
    );
    println!("idle memory: {}", report["idle_memory"]);
    println!("idle memory, workers warmed for transforms: {}", report["idle_memory_transform_warmed"]);
    println!("input bytes copied before transform(): {}", report["input_copy"]);
}
