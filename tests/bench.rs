//! `pyclave bench` through its command line: `--quick` reports every figure
//! (the full benchmark takes minutes and is run by `scripts/bench.sh`).

mod common;

use std::process::Command;

use common::*;

/// `pyclave bench --quick --json --concurrency 2 --workers 2` with `extra`
/// arguments: its one JSON object, once it succeeded.
fn quick_bench_report(extra: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_pyclave"))
        .args(["bench", "--quick", "--json", "--concurrency", "2", "--workers", "2", "--python"])
        .arg(venv_python())
        .args(extra)
        .output()
        .expect("run pyclave bench");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

/// One quick run measures every workload, baseline and headline ratio, and
/// finds the 128 MB input reaching `transform` uncopied.
#[test]
fn quick_bench_reports_every_figure() {
    let report = quick_bench_report(&["--skip-huge"]);

    let levels = report["levels"].as_array().expect("levels");
    assert_eq!(levels.len(), 4, "one level per workload");
    for level in levels {
        assert_eq!(level["failed"], 0, "{level}");
        let tables = if level["workload"] == "trivial exec" { 0.into() } else { level["jobs"].clone() };
        assert_eq!(level["tables_returned"], tables, "every transform returned its table: {level}");
        assert!(level["jobs_per_second"].as_f64().is_some_and(|rate| rate > 0.0), "{level}");
    }
    assert!(report["warm_pool_latency"]["latency"]["p50_us"].as_u64().is_some_and(|p50| p50 > 0));
    let cold = &report["baselines"][0];
    assert_eq!((cold["workload"].as_str(), cold["baseline"].as_str()), (Some("trivial exec"), Some("cold python -c")));
    assert!(cold["latency"]["p50_us"].as_u64().is_some_and(|p50| p50 > 0), "{cold}");

    let cold_vs_warm = &report["cold_comparison"];
    assert_eq!(cold_vs_warm["rounds"].as_array().map(Vec::len), Some(3));
    assert!(cold_vs_warm["ratio"].as_f64().is_some_and(|ratio| ratio > 1.0), "{cold_vs_warm}");
    let floor = &report["floor_comparison"];
    assert_eq!(floor["callers"], 2);
    assert_eq!(floor["comparison"]["rounds"].as_array().map(Vec::len), Some(3));
    assert!(floor["comparison"]["ratio"].as_f64().is_some_and(|ratio| ratio > 0.0), "{floor}");

    assert_eq!(report["idle_memory"]["idle_workers"], 2);
    let idle_uss = report["idle_memory"]["idle_worker_uss_max_bytes"].as_u64().expect("idle USS");
    assert!(idle_uss > 0);
    // After a run of paced transforms, a new worker rehearsed one and holds
    // the pages it copied.
    let warmed_uss = report["idle_memory_transform_warmed"]["idle_worker_uss_max_bytes"].as_u64().expect("USS");
    assert!(warmed_uss > idle_uss + (1 << 20), "{warmed_uss} vs {idle_uss}");
    let copy = &report["input_copy"][0];
    assert!(copy["column_bytes"].as_u64().is_some_and(|bytes| bytes >= 128_000_000), "{copy}");
    assert_eq!(copy["copied_bytes"], 0, "{copy}");
}

/// `--against` runs both builds' supervisors, alternately, and reports each
/// one's medians and the per-pair comparison (here the build against itself).
#[test]
fn bench_against_another_build_reports_both() {
    let report = quick_bench_report(&["--pairs", "2", "--against", env!("CARGO_BIN_EXE_pyclave")]);
    assert_eq!(report["callers"], 2);
    assert_eq!(report["workload"], "trivial exec");
    assert_eq!(report["builds"].as_array().map(Vec::len), Some(2));
    for (median, runs) in
        report["medians"].as_array().expect("medians").iter().zip(report["runs"].as_array().expect("runs"))
    {
        assert!(median["jobs_per_second"].as_f64().is_some_and(|rate| rate > 0.0), "{median}");
        assert!(median["machine_cpu_per_job_us"].as_f64().is_some_and(|cpu| cpu > 0.0), "{median}");
        assert_eq!(runs.as_array().map(Vec::len), Some(2), "one run per pair");
        assert!(runs.as_array().expect("runs").iter().all(|run| run["tables_returned"] == 0), "{runs}");
    }
    assert!(report["pairs_this_faster"].as_u64().is_some_and(|wins| wins <= 2));
}

/// `--against --workload small-transform` compares the builds on a
/// transform that reads its input table.
#[test]
fn bench_against_another_build_runs_a_transform_when_asked() {
    let binary = env!("CARGO_BIN_EXE_pyclave");
    let report = quick_bench_report(&["--pairs", "1", "--against", binary, "--workload", "small-transform"]);
    assert_eq!(report["workload"], "small transform (1k rows, groupby)");
    assert_eq!(report["jobs_per_run"], 100);
    for median in report["medians"].as_array().expect("medians") {
        assert!(median["jobs_per_second"].as_f64().is_some_and(|rate| rate > 0.0), "{median}");
    }
    // Each job ran as a transform: it came back with a table.
    for run in
        report["runs"].as_array().expect("runs of both builds").iter().flat_map(|runs| runs.as_array().expect("runs"))
    {
        assert_eq!(run["tables_returned"], 100, "{run}");
    }
}
