//! `pyclave bench` through its command line (the full benchmark takes
//! minutes and measures, so it is run by `scripts/bench.sh`, not here).

mod common;

use std::process::Command;

use common::*;

/// `--against` runs both builds' supervisors, alternately, and reports each
/// one's medians and the per-pair comparison (here the build against itself).
#[test]
fn bench_against_another_build_reports_both() {
    let binary = env!("CARGO_BIN_EXE_pyclave");
    let output = Command::new(binary)
        .args(["bench", "--quick", "--json", "--pairs", "2", "--concurrency", "2", "--workers", "2", "--python"])
        .arg(venv_python())
        .args(["--against", binary])
        .output()
        .expect("run pyclave bench");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(report["callers"], 2);
    assert_eq!(report["builds"].as_array().map(Vec::len), Some(2));
    for (median, runs) in
        report["medians"].as_array().expect("medians").iter().zip(report["runs"].as_array().expect("runs"))
    {
        assert!(median["jobs_per_second"].as_f64().is_some_and(|rate| rate > 0.0), "{median}");
        assert!(median["machine_cpu_per_job_us"].as_f64().is_some_and(|cpu| cpu > 0.0), "{median}");
        assert_eq!(runs.as_array().map(Vec::len), Some(2), "one run per pair");
    }
    assert!(report["pairs_this_faster"].as_u64().is_some_and(|wins| wins <= 2));
}
