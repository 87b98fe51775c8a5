//! `pyclave bench --against OTHER`: this build against another one, on
//! this host, in one run. A single benchmark run cannot show a change of
//! 10–20 % on a host whose speed drifts that much from one minute to the
//! next; alternating the two builds' supervisors, pair after pair, and
//! comparing medians and per-pair wins can.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::workloads::Workload;
use super::{BenchArgs, IDLE_SETTLE, Supervisor, measure, progress, progress_done, run_level, workloads};

/// Pairs of runs unless `--pairs` says otherwise.
pub const DEFAULT_PAIRS: usize = 10;

/// What the two builds run (`--workload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ComparedWorkload {
    /// `return 1`: the supervisor, the pool and the worker's start.
    Trivial,
    /// A 1,000-row groupby: the transform path.
    SmallTransform,
}

impl ComparedWorkload {
    fn workload(self) -> &'static Workload {
        match self {
            Self::Trivial => &workloads::TRIVIAL,
            Self::SmallTransform => &workloads::SMALL_GROUPBY,
        }
    }

    /// Jobs per run: ~2-3 s of each on this host.
    fn jobs(self, quick: bool) -> usize {
        match (self, quick) {
            (Self::Trivial, false) => 1500,
            (Self::Trivial, true) => 400,
            (Self::SmallTransform, false) => 300,
            (Self::SmallTransform, true) => 100,
        }
    }
}

/// One closed-loop run of one build.
#[derive(Debug, Clone, Copy, Serialize)]
struct Run {
    jobs_per_second: f64,
    p50_us: u64,
    /// Non-idle CPU time of the whole machine per job (`/proc/stat`).
    machine_cpu_per_job_us: f64,
    supervisor_cpu_per_job_us: f64,
    /// Outcomes with an output table: every job's when the workload is a
    /// transform, which shows that it ran as one.
    tables_returned: usize,
}

/// Runs `args.pairs` pairs of closed-loop runs of `args.workload`, this
/// build's and `against`'s supervisors alternating (each pair in the other
/// order than the last, so neither build always goes first), and prints
/// medians.
pub async fn run(args: &BenchArgs, python: &Path, against: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::Builder::new().prefix("pyclave-bench-").tempdir()?;
    let builds = [std::env::current_exe()?, against.to_path_buf()];
    let callers = args.concurrency.iter().copied().max().unwrap_or(4).max(1);
    let workload = args.workload.workload();
    let jobs = args.workload.jobs(args.quick);
    let input = workload.input.map(|size| size.write(None)).transpose()?.map(|(fd, _)| fd);
    let pairs = args.pairs.max(1);
    let setup = RunSetup { dir: dir.path(), python, workers: args.workers, workload, input: input.as_ref() };
    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for pair in 0..pairs {
        let order = if pair % 2 == 0 { [0, 1] } else { [1, 0] };
        for build in order {
            progress(&format!("pair {}/{pairs}: {}", pair + 1, builds[build].display()));
            runs[build].push(run_once(&setup, &builds[build], callers, jobs).await?);
        }
    }
    progress_done();

    let [this, other] = [summary(&runs[0]), summary(&runs[1])];
    let this_faster = runs[0].iter().zip(&runs[1]).filter(|(a, b)| a.jobs_per_second > b.jobs_per_second).count();
    let this_cheaper =
        runs[0].iter().zip(&runs[1]).filter(|(a, b)| a.machine_cpu_per_job_us < b.machine_cpu_per_job_us).count();
    if args.json {
        println!(
            "{}",
            json!({
                "workload": workload.name,
                "callers": callers,
                "jobs_per_run": jobs,
                "builds": [builds[0].display().to_string(), builds[1].display().to_string()],
                "medians": [this, other],
                "pairs_this_faster": this_faster,
                "pairs_this_cheaper": this_cheaper,
                "runs": runs,
            })
        );
        return Ok(());
    }
    println!("{}, {callers} callers closed-loop, {jobs} jobs per run, {pairs} pairs; medians:\n", workload.name);
    println!("{:<46} {:>9} {:>8} {:>16} {:>12}", "build", "jobs/s", "p50 ms", "machine CPU/job", "sup CPU/job");
    for (build, median) in builds.iter().zip([this, other]) {
        println!(
            "{:<46} {:>9.1} {:>8.2} {:>13.0} µs {:>9.0} µs",
            build.display().to_string(),
            median.jobs_per_second,
            median.p50_us as f64 / 1000.0,
            median.machine_cpu_per_job_us,
            median.supervisor_cpu_per_job_us,
        );
    }
    println!(
        "\nthis build: {:+.1} % jobs/s, {:+.1} % machine CPU per job; faster in {this_faster} of {pairs} pairs, \
         cheaper in {this_cheaper}",
        100.0 * (this.jobs_per_second / other.jobs_per_second.max(f64::MIN_POSITIVE) - 1.0),
        100.0 * (this.machine_cpu_per_job_us / other.machine_cpu_per_job_us.max(f64::MIN_POSITIVE) - 1.0),
    );
    Ok(())
}

/// What every run of a comparison shares.
struct RunSetup<'a> {
    dir: &'a Path,
    python: &'a Path,
    workers: Option<usize>,
    workload: &'a Workload,
    /// The workload's input table, if it reads one.
    input: Option<&'a OwnedFd>,
}

/// Starts `build`'s supervisor, warms it up, measures one run, stops it.
async fn run_once(
    setup: &RunSetup<'_>,
    build: &Path,
    callers: usize,
    jobs: usize,
) -> Result<Run, Box<dyn std::error::Error>> {
    let mut supervisor = Supervisor::start_binary(build, setup.dir, setup.python, setup.workers)?;
    let socket = supervisor.socket.clone();
    // An eighth of the run's jobs (at least 40) at 2 callers: the pool has
    // seen the workload (what new workers warm up for follows recent jobs).
    run_level(&socket, setup.workload, setup.input, 2, (jobs / 8).max(40), None).await?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let (machine_before, supervisor_before) = (measure::machine_busy(), measure::process_cpu(supervisor.pid()));
    let level = run_level(&socket, setup.workload, setup.input, callers, jobs, None).await?;
    let (machine_after, supervisor_after) = (measure::machine_busy(), measure::process_cpu(supervisor.pid()));
    supervisor.stop();
    if level.failed > 0 {
        return Err(format!("{} of {} jobs failed on {}", level.failed, level.jobs, build.display()).into());
    }
    let per_job = |cpu: Duration| cpu.as_secs_f64() * 1e6 / level.jobs as f64;
    Ok(Run {
        jobs_per_second: level.jobs_per_second,
        p50_us: level.latency.p50_us,
        machine_cpu_per_job_us: per_job(machine_after.saturating_sub(machine_before)),
        supervisor_cpu_per_job_us: per_job(supervisor_after.saturating_sub(supervisor_before)),
        tables_returned: level.tables_returned,
    })
}

/// Each figure's median over `runs`.
fn summary(runs: &[Run]) -> Run {
    let of = |figure: fn(&Run) -> f64| measure::median(runs.iter().map(figure).collect());
    Run {
        jobs_per_second: of(|r| r.jobs_per_second),
        p50_us: of(|r| r.p50_us as f64) as u64,
        machine_cpu_per_job_us: of(|r| r.machine_cpu_per_job_us),
        supervisor_cpu_per_job_us: of(|r| r.supervisor_cpu_per_job_us),
        tables_returned: of(|r| r.tables_returned as f64) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(jobs_per_second: f64) -> Run {
        Run {
            jobs_per_second,
            p50_us: jobs_per_second as u64,
            machine_cpu_per_job_us: 0.0,
            supervisor_cpu_per_job_us: 0.0,
            tables_returned: 0,
        }
    }

    #[test]
    fn summaries_are_medians() {
        assert_eq!(summary(&[run(3.0), run(1.0), run(2.0)]).jobs_per_second, 2.0);
        assert_eq!(summary(&[run(4.0), run(1.0), run(2.0), run(3.0)]).jobs_per_second, 2.5);
        assert_eq!(summary(&[]).jobs_per_second, 0.0);
    }
}
