//! Every outcome kind, produced by real jobs on a real supervisor.

mod common;

use arrow_array::{Array, Int64Array};
use common::*;
use pyclave::proto::api::{outcome::Kind, rejected, timeout::Clock};

#[tokio::test]
async fn exec_returns_json_and_stdout() {
    let supervisor = Supervisor::start("");
    let code = "import sys\ndef main(params):\n    print('to stdout')\n    print('to stderr', file=sys.stderr)\n    return {'sum': params['a'] + 1, 'list': [1, None]}\n";
    let mut job = exec(code);
    job.params_json = r#"{"a": 41}"#.into();
    let reply = supervisor.client().await.run(job, None).await.expect("run");
    assert_eq!(ok_json(&reply), r#"{"sum": 42, "list": [1, null]}"#);
    assert_eq!(stdout(&reply), "to stdout\n");
    assert_eq!(stderr(&reply), "to stderr\n");
    assert!(reply.outcome.disabled_layers.is_empty(), "every confinement layer is on");
    let usage = reply.outcome.usage.expect("usage");
    assert!(usage.wall_time_us > 0 && usage.peak_memory_bytes > 0, "{usage:?}");
}

#[tokio::test]
async fn main_without_params_and_auto_kind_work() {
    let supervisor = Supervisor::start("");
    let mut job = exec("def main():\n    return 7\n");
    job.kind = pyclave::proto::api::JobKind::Auto.into();
    let reply = supervisor.client().await.run(job, None).await.expect("run");
    assert_eq!(ok_json(&reply), "7");
}

#[tokio::test]
async fn every_job_gets_its_own_random_streams() {
    // Workers are forked from one zygote: without reseeding, every job would
    // draw the zygote's numbers. OpenSSL's generator is among them for the
    // day the zygote draws from it at start-up: the zygote forks without
    // atfork handlers, and OpenSSL must then reseed on its own, on a new pid.
    let supervisor = Supervisor::start("");
    let mut client = supervisor.client().await;
    let code = "import random, ssl, numpy\ndef main():\n    return [random.getrandbits(64), int(numpy.random.randint(2**62)), \
                float(numpy.random.normal()), int.from_bytes(ssl.RAND_bytes(6), 'big')]\n";
    let mut draws = Vec::new();
    for _ in 0..4 {
        draws.push(ok_json(&client.run(exec(code), None).await.expect("run")));
    }
    for (i, first) in draws.iter().enumerate() {
        for second in &draws[i + 1..] {
            let (a, b): (Vec<f64>, Vec<f64>) =
                (serde_json::from_str(first).expect("json"), serde_json::from_str(second).expect("json"));
            assert!(a.iter().zip(&b).all(|(x, y)| x != y), "two jobs drew the same numbers: {first} {second}");
        }
    }
}

#[tokio::test]
async fn transform_gets_the_table_and_returns_one() {
    let supervisor = Supervisor::start("");
    let input = arrow_memfd(&sample_batch(1000));
    let code = "def transform(table, params):\n    table['y'] = table['x'] * params['k']\n    return table[table['x'] % 2 == 0]\n";
    let mut job = transform(code);
    job.params_json = r#"{"k": 3}"#.into();
    let reply = supervisor.client().await.run(job, as_fd(&input)).await.expect("run");
    assert!(matches!(kind(&reply), Kind::Ok(ok) if ok.has_table), "{:?}", reply.outcome);
    let batches = read_table(reply.table.as_ref().expect("table fd"));
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 500);
    let y = batches[0].column_by_name("y").expect("y").as_any().downcast_ref::<Int64Array>().expect("int64");
    assert_eq!((y.value(0), y.value(1)), (0, 6));
}

#[tokio::test]
async fn output_fd_is_sealed_and_read_only() {
    let supervisor = Supervisor::start("");
    let reply = supervisor
        .client()
        .await
        .run(transform("import pandas as pd\ndef transform(t, p):\n    return pd.DataFrame({'a': [1]})\n"), None)
        .await
        .expect("run");
    let table = reply.table.expect("table");
    let flags = nix::fcntl::fcntl(&table, nix::fcntl::FcntlArg::F_GETFL).expect("flags");
    assert_eq!(flags & libc::O_ACCMODE, libc::O_RDONLY);
    let seals = nix::fcntl::fcntl(&table, nix::fcntl::FcntlArg::F_GET_SEALS).expect("seals");
    assert_eq!(
        seals & (libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK),
        libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK
    );
}

#[tokio::test]
async fn million_row_transform() {
    let supervisor = Supervisor::start("");
    let input = arrow_memfd(&sample_batch(1_000_000));
    let code = "def transform(table, params):\n    return table.groupby('s', as_index=False)['x'].sum()\n";
    let reply = supervisor.client().await.run(transform(code), as_fd(&input)).await.expect("run");
    let batches = read_table(reply.table.as_ref().unwrap_or_else(|| panic!("{:?}", reply.outcome)));
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 100);
    let total: i64 = batches
        .iter()
        .map(|b| {
            b.column_by_name("x")
                .expect("x")
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("int64")
                .iter()
                .flatten()
                .sum::<i64>()
        })
        .sum();
    assert_eq!(total, (0..1_000_000i64).sum::<i64>());
}

#[tokio::test]
async fn user_error_has_type_message_and_traceback() {
    let supervisor = Supervisor::start("");
    let code = "def helper():\n    raise ValueError('bad value')\n\ndef main():\n    helper()\n";
    let reply = supervisor.client().await.run(exec(code), None).await.expect("run");
    let Kind::UserError(error) = kind(&reply) else { panic!("{:?}", reply.outcome) };
    assert_eq!((error.r#type.as_str(), error.message.as_str()), ("ValueError", "bad value"));
    assert!(error.traceback.contains("File \"<inline>\", line 2, in helper"), "{}", error.traceback);
    assert!(!error.traceback.contains("pyclave_worker"), "runner frames are hidden: {}", error.traceback);

    let reply = supervisor.client().await.run(exec("def main(:\n"), None).await.expect("run");
    assert!(matches!(kind(&reply), Kind::UserError(e) if e.r#type == "SyntaxError"));
    let reply = supervisor.client().await.run(exec("x = 1\n"), None).await.expect("run");
    assert!(matches!(kind(&reply), Kind::UserError(e) if e.r#type == "NameError"), "no entry point");
    let reply = supervisor.client().await.run(exec("def main():\n    return object()\n"), None).await.expect("run");
    assert!(matches!(kind(&reply), Kind::UserError(e) if e.r#type == "TypeError"), "not JSON");
    let reply =
        supervisor.client().await.run(transform("def transform(t, p):\n    return 5\n"), None).await.expect("run");
    assert!(matches!(kind(&reply), Kind::UserError(e) if e.message.contains("DataFrame")));
    let reply =
        supervisor.client().await.run(exec("import os\ndef main():\n    os._exit(3)\n"), None).await.expect("run");
    assert!(matches!(kind(&reply), Kind::UserError(e) if e.r#type == "ProcessExit" && e.message.contains("status 3")));
}

#[tokio::test]
async fn memory_bomb_is_out_of_memory_from_the_cgroup() {
    let mut supervisor = Supervisor::start("");
    let code = "import numpy as np\ndef main():\n    blocks = [np.ones(16 * 1024 * 1024) for _ in range(100)]\n    return len(blocks)\n";
    let limit = 256 * 1024 * 1024;
    let reply = supervisor.client().await.run(with_limits(exec(code), limit, 0, 0), None).await.expect("run");
    let Kind::OutOfMemory(oom) = kind(&reply) else { panic!("{:?}", reply.outcome) };
    assert_eq!(oom.limit_bytes, limit);
    assert!(oom.peak_bytes >= limit * 9 / 10, "peak {} near the limit", oom.peak_bytes);
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn crashes_are_killed_not_out_of_memory() {
    let mut supervisor = Supervisor::start("");
    let code = "import ctypes\ndef main():\n    ctypes.string_at(0)\n";
    let reply = supervisor.client().await.run(exec(code), None).await.expect("run");
    assert!(
        matches!(kind(&reply), Kind::Killed(k) if k.signal_name == "SIGSEGV" && k.syscall.is_empty()),
        "{:?}",
        reply.outcome
    );
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn wall_timeout_kills_the_whole_tree() {
    let mut supervisor = Supervisor::start("");
    let (job, child) = (unique_name("pyj"), unique_name("pyc"));
    let reply = supervisor
        .client()
        .await
        .run(with_limits(exec(&sleeping_job_with_child(&job, &child)), 0, 1500, 0), None)
        .await
        .expect("run");
    assert_eq!(
        kind(&reply),
        &Kind::Timeout(pyclave::proto::api::Timeout { clock: Clock::Wall.into(), limit_ms: 1500 })
    );
    assert!(named_processes(&job).is_empty() && named_processes(&child).is_empty(), "the job's processes are gone");
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn cpu_timeout_counts_cpu_not_wall() {
    let mut supervisor = Supervisor::start("");
    let code = "def main():\n    while True:\n        pass\n";
    let reply = supervisor.client().await.run(with_limits(exec(code), 0, 20_000, 300), None).await.expect("run");
    assert_eq!(kind(&reply), &Kind::Timeout(pyclave::proto::api::Timeout { clock: Clock::Cpu.into(), limit_ms: 300 }));
    let usage = reply.outcome.usage.expect("usage");
    assert!(usage.cpu_time_us >= 300_000, "{usage:?}");
    // Sleeping uses no CPU: a CPU limit does not end it.
    let reply = supervisor
        .client()
        .await
        .run(with_limits(exec("import time\ndef main():\n    time.sleep(0.5)\n    return 1\n"), 0, 20_000, 100), None)
        .await
        .expect("run");
    assert_eq!(ok_json(&reply), "1");
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn output_violating_limits_is_rejected() {
    let mut supervisor = Supervisor::start("[output]\nmax_rows = 1000\n");
    let cases = [
        ("import pandas as pd\ndef transform(t, p):\n    return pd.DataFrame({'a': range(1001)})\n", "1001"),
        ("import pandas as pd\ndef transform(t, p):\n    return pd.DataFrame({'a\\x01b': [1]})\n", "control"),
        ("import pandas as pd\ndef transform(t, p):\n    return pd.DataFrame({'': [1]})\n", "empty"),
    ];
    for (code, expected) in cases {
        let reply = supervisor.client().await.run(transform(code), None).await.expect("run");
        let Kind::OutputRejected(rejection) = kind(&reply) else { panic!("{code}: {:?}", reply.outcome) };
        assert!(rejection.reason.contains(expected), "{code}: {}", rejection.reason);
        assert!(reply.table.is_none());
    }
    supervisor.assert_healthy().await;
}

/// Output tables beyond 64 KiB are validated off the supervisor's async
/// thread, smaller ones on it (`output_violating_limits_is_rejected`):
/// both ways a valid table reaches the caller and an invalid one is
/// rejected.
#[tokio::test]
async fn large_outputs_are_validated_too() {
    let mut supervisor = Supervisor::start("[output]\nmax_rows = 150000\n");
    let identity = "def transform(table, params):\n    return table\n";
    let input = arrow_memfd(&sample_batch(100_000));
    let reply = supervisor.client().await.run(transform(identity), as_fd(&input)).await.expect("run");
    let table = reply.table.as_ref().unwrap_or_else(|| panic!("{:?}", reply.outcome));
    assert!(std::fs::File::from(table.try_clone().expect("dup")).metadata().expect("stat").len() > 64 << 10);
    assert_eq!(read_table(table).iter().map(|batch| batch.num_rows()).sum::<usize>(), 100_000);
    let input = arrow_memfd(&sample_batch(200_000));
    let reply = supervisor.client().await.run(transform(identity), as_fd(&input)).await.expect("run");
    let Kind::OutputRejected(rejection) = kind(&reply) else { panic!("{:?}", reply.outcome) };
    assert!(rejection.reason.contains("200000"), "{}", rejection.reason);
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn bad_requests_are_rejected_with_a_reason() {
    let mut supervisor = Supervisor::start("[limits]\nmax_code_bytes = 1000\nmemory_limit_bytes = 536870912\n");
    let mut client = supervisor.client().await;
    let reply = client.run(exec(&"#".repeat(1001)), None).await.expect("run");
    assert!(matches!(kind(&reply), Kind::Rejected(r) if r.code() == rejected::Code::CodeTooLarge));
    let reply = client.run(with_limits(exec("def main(): pass"), 1 << 30, 0, 0), None).await.expect("run");
    assert!(
        matches!(kind(&reply), Kind::Rejected(r) if r.code() == rejected::Code::LimitTooHigh && r.reason.contains("536870912"))
    );
    let mut job = exec("def main(): pass");
    job.params_json = "[1, 2]".into();
    let reply = client.run(job, None).await.expect("run");
    assert!(matches!(kind(&reply), Kind::Rejected(r) if r.code() == rejected::Code::BadRequest));
    let not_arrow = tempfile::tempfile().expect("tempfile");
    std::io::Write::write_all(&mut &not_arrow, b"definitely not arrow").expect("write");
    let reply = client
        .run(transform("def transform(t, p):\n    return t\n"), Some(std::os::fd::AsFd::as_fd(&not_arrow)))
        .await
        .expect("run");
    assert!(
        matches!(kind(&reply), Kind::Rejected(r) if r.code() == rejected::Code::BadInputTable),
        "{:?}",
        reply.outcome
    );
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn a_short_job_s_cpu_time_is_counted_and_a_job_cannot_lower_or_inflate_it() {
    let mut supervisor = Supervisor::start("[pool]\nworkers = 2\n");
    let mut client = supervisor.client().await;
    // At least what the job measured of itself: the cgroup's counter alone
    // lacks the last slice of a process still running when the result
    // arrives (sub-millisecond jobs read 0 in a release build).
    let spin = r#"
import time
def main():
    start = time.process_time_ns()
    while time.process_time_ns() - start < 2_000_000:
        pass
    return (time.process_time_ns() - start) // 1000
"#;
    for _ in 0..10 {
        let reply = client.run(exec(spin), None).await.expect("run");
        let measured: u64 = ok_json(&reply).parse().expect("microseconds");
        let usage = reply.outcome.usage.expect("usage");
        assert!(usage.cpu_time_us >= measured, "the job measured {measured} us of itself: {usage:?}");
    }
    // A job that makes the worker report no CPU time still has the cgroup's.
    let forging = r#"
import time
def main():
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    time.process_time_ns = lambda: 0
    return 1
"#;
    let reply = client.run(exec(forging), None).await.expect("run");
    assert_eq!(ok_json(&reply), "1");
    let usage = reply.outcome.usage.expect("usage");
    assert!(usage.cpu_time_us >= 250_000, "{usage:?}");
    // Nor inflate it past its wall time on every core.
    let inflating = "import time\ndef main():\n    time.process_time_ns = lambda: 10**18\n    return 1\n";
    let reply = client.run(exec(inflating), None).await.expect("run");
    assert_eq!(ok_json(&reply), "1");
    let usage = reply.outcome.usage.expect("usage");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    assert!(usage.cpu_time_us <= usage.wall_time_us * cores, "{usage:?}");
    supervisor.assert_healthy().await;
}
