//! Micro-benchmarks of the wire framing every pyclave connection uses
//! (`pyclave::channel`, protobuf messages from `pyclave::proto::api`).
//!
//! Cases:
//! - `encode_request/inline_100B`: `encode_frame` of a `Request` whose inline
//!   code is ~100 bytes, with params and limits (a typical small job).
//! - `encode_request/inline_64KiB`: the same with 64 KiB of code.
//! - `round_trip/small_frame`: `FrameWriter::send` then `FrameReader::recv` of
//!   the small `Request` over a `UnixStream::pair()` (current-thread runtime).
//! - `round_trip/small_frame_with_fd`: the same with one fd attached (SCM_RIGHTS);
//!   includes `take_fd` and closing the received descriptor.
//! - `response/encode_1KiB_stdout` and `response/decode_1KiB_stdout`: prost encode
//!   into a reused buffer and decode of a `Response` whose `Outcome` is `Ok` with
//!   1 KiB of captured stdout, a short stderr and usage.

mod common;

use std::hint::black_box;
use std::os::fd::AsFd;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use pyclave::channel::{encode_frame, split};
use pyclave::proto::api::{self, Job, JobKind, Limits, Request, Response, job, outcome, response};
use std::os::unix::net::UnixStream;

const MAX_FRAME_BYTES: usize = 16 << 20;

fn request(code: String, has_input_table: bool) -> Request {
    Request {
        id: 42,
        job: Some(Job {
            kind: JobKind::Transform.into(),
            code: Some(job::Code::InlineCode(code)),
            params_json: r#"{"threshold": 3}"#.into(),
            has_input_table,
            limits: Some(Limits { memory_limit_bytes: 256 << 20, wall_timeout_ms: 5_000, cpu_timeout_ms: 2_000 }),
        }),
    }
}

/// ~100 bytes of Python.
fn small_code() -> String {
    let code = "def transform(table, params):\n    return table[table['x'] > params['threshold']].reset_index()\n";
    assert!((90..=110).contains(&code.len()), "small code is {} bytes", code.len());
    code.to_owned()
}

/// Exactly 64 KiB of Python-looking lines.
fn large_code() -> String {
    let line = "x = [i * i for i in range(100)]  # padding to grow the job's code\n";
    let mut code = line.repeat((64 << 10) / line.len() + 1);
    code.truncate(64 << 10);
    code
}

fn response_with_stdout() -> Response {
    let stdout: Vec<u8> = b"row 0123456789 processed\n".iter().copied().cycle().take(1 << 10).collect();
    Response {
        id: 42,
        body: Some(response::Body::Outcome(api::Outcome {
            kind: Some(outcome::Kind::Ok(api::Ok { has_table: true, json: String::new() })),
            stdout: Some(api::CapturedOutput { data: stdout, truncated: false }),
            stderr: Some(api::CapturedOutput { data: b"warning: deprecated\n".to_vec(), truncated: false }),
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

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_request");
    for (name, request) in
        [("inline_100B", request(small_code(), false)), ("inline_64KiB", request(large_code(), false))]
    {
        group.throughput(Throughput::Bytes(encode_frame(&request).len() as u64));
        group.bench_function(name, |b| b.iter(|| encode_frame(black_box(&request))));
    }
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("tokio runtime");
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let ((_, mut writer), (mut reader, _)) = {
        let _context = runtime.enter();
        (split(ours, MAX_FRAME_BYTES).expect("split"), split(theirs, MAX_FRAME_BYTES).expect("split"))
    };
    let plain = request(small_code(), false);
    let with_table = request(small_code(), true);
    let table = tempfile::tempfile().expect("tempfile to send");

    let mut group = c.benchmark_group("round_trip");
    group.bench_function("small_frame", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    writer.send(&plain, &[]).await.expect("send");
                    let received: Request = reader.recv().await.expect("recv").expect("a frame");
                    black_box(received);
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("small_frame_with_fd", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    writer.send(&with_table, &[table.as_fd()]).await.expect("send");
                    let received: Request = reader.recv().await.expect("recv").expect("a frame");
                    let fd = reader.take_fd().expect("the fd came with the frame");
                    black_box((received, fd));
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn response(c: &mut Criterion) {
    let response = response_with_stdout();
    let encoded = response.encode_to_vec();
    let mut group = c.benchmark_group("response");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    let mut buffer = Vec::with_capacity(encoded.len());
    group.bench_function("encode_1KiB_stdout", |b| {
        b.iter(|| {
            buffer.clear();
            black_box(&response).encode(&mut buffer).expect("buffer grows");
            black_box(buffer.len())
        });
    });
    group.bench_function("decode_1KiB_stdout", |b| {
        b.iter(|| Response::decode(black_box(encoded.as_slice())).expect("valid response"));
    });
    group.finish();
    assert_eq!(Response::decode(encoded.as_slice()).expect("valid"), response);
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = encode, round_trip, response
}
criterion_main!(benches);
