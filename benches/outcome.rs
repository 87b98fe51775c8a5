//! Micro-benchmarks of building a job's outcome (`pyclave::outcome::classify`)
//! and framing it for the caller. The `Evidence` is built outside the timed
//! part (`iter_batched`), since `classify` consumes it.
//!
//! Cases:
//! - `classify/ok`: the worker reported `Ok` (a table written, small JSON).
//! - `classify/killed`: the worker died by SIGKILL without a result and no OOM
//!   kill (builds the signal name).
//! - `encode_response/ok` and `encode_response/killed`: `encode_frame` of the
//!   `Response` carrying each classified `Outcome`, with short captured stdout
//!   and stderr and usage, as the supervisor sends it.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pyclave::channel::encode_frame;
use pyclave::job::EffectiveLimits;
use pyclave::outcome::{Ending, Evidence, classify};
use pyclave::proto::api::{self, Response, outcome::Kind, response};
use pyclave::proto::worker::{JobOk, JobResult, job_result};
use pyclave::reaper::ExitStatus;

const LIMITS: EffectiveLimits = EffectiveLimits {
    memory_limit_bytes: 512 << 20,
    wall_timeout: Duration::from_secs(30),
    cpu_timeout: Duration::from_secs(10),
};

fn ok_evidence() -> Evidence {
    Evidence {
        ending: Ending::Reported(JobResult {
            result: Some(job_result::Result::Ok(JobOk { wrote_table: true, json: r#"{"rows": 1000}"#.into() })),
            process_cpu_us: 0,
        }),
        exit: None,
        oom_kills: 0,
        peak_memory_bytes: 87 << 20,
        limits: LIMITS,
        blocked_syscall: None,
    }
}

fn killed_evidence() -> Evidence {
    Evidence {
        ending: Ending::Died,
        exit: Some(ExitStatus::Signal(libc::SIGKILL)),
        oom_kills: 0,
        peak_memory_bytes: 87 << 20,
        limits: LIMITS,
        blocked_syscall: None,
    }
}

fn response(kind: Kind) -> Response {
    Response {
        id: 42,
        body: Some(response::Body::Outcome(api::Outcome {
            kind: Some(kind),
            stdout: Some(api::CapturedOutput { data: b"processed 1000 rows\n".to_vec(), truncated: false }),
            stderr: Some(api::CapturedOutput { data: Vec::new(), truncated: false }),
            usage: Some(api::Usage {
                queue_time_us: 120,
                wall_time_us: 48_213,
                cpu_time_us: 41_007,
                peak_memory_bytes: 87 << 20,
            }),
            disabled_layers: Vec::new(),
        })),
    }
}

/// A case's name and how to build its evidence.
type Case = (&'static str, fn() -> Evidence);

fn classification(c: &mut Criterion) {
    let cases: [Case; 2] = [("ok", ok_evidence), ("killed", killed_evidence)];
    let mut group = c.benchmark_group("classify");
    for (name, evidence) in cases {
        group.bench_function(name, |b| b.iter_batched(evidence, classify, BatchSize::SmallInput));
    }
    group.finish();

    let mut group = c.benchmark_group("encode_response");
    for (name, evidence) in cases {
        let response = response(classify(evidence()));
        group.bench_function(name, |b| b.iter(|| encode_frame(black_box(&response))));
    }
    group.finish();

    assert!(matches!(classify(ok_evidence()), Kind::Ok(api::Ok { has_table: true, .. })));
    assert!(matches!(classify(killed_evidence()), Kind::Killed(ref killed) if killed.signal_name == "SIGKILL"));
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = classification
}
criterion_main!(benches);
