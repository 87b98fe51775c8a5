//! The pool under load and failure: concurrency, worker replacement, zygote
//! death, caller disconnect, a full queue. Every accepted job gets exactly
//! one outcome.

mod common;

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::*;
use pyclave::proto::api::{outcome::Kind, rejected};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_jobs_over_several_connections_each_get_one_outcome() {
    let supervisor = Supervisor::start("");
    const CONNECTIONS: u64 = 4;
    const JOBS_PER_CONNECTION: u64 = 15;
    let mut tasks = Vec::new();
    for connection in 0..CONNECTIONS {
        let mut client = supervisor.client().await;
        tasks.push(tokio::spawn(async move {
            let mut expected = HashMap::new();
            // All submitted before any reply is read: they are in flight together.
            for job in 0..JOBS_PER_CONNECTION {
                let value = connection * 1000 + job;
                let mut request =
                    exec("import time\ndef main(params):\n    time.sleep(0.01)\n    return params['v']\n");
                request.params_json = format!(r#"{{"v": {value}}}"#);
                let id = client.submit(request, None).await.expect("submit");
                expected.insert(id, value);
            }
            let mut answered = HashMap::new();
            for _ in 0..JOBS_PER_CONNECTION {
                let reply = client.next_reply().await.expect("reply");
                assert!(answered.insert(reply.id, ok_json(&reply)).is_none(), "job {} answered twice", reply.id);
            }
            for (id, value) in expected {
                assert_eq!(answered.get(&id), Some(&value.to_string()), "job {id}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("connection task");
    }
}

/// Workers asked for while jobs find none ready skip their rehearsal (the
/// next job takes each the moment it is ready): such a worker still runs
/// its job right, output and result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_that_skip_their_rehearsal_run_their_jobs_right() {
    let supervisor = Supervisor::start_logged("[pool]\nworkers = 2\n");
    const CALLERS: u64 = 6;
    const JOBS_PER_CALLER: u64 = 8;
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let mut client = supervisor.client().await;
        tasks.push(tokio::spawn(async move {
            for job in 0..JOBS_PER_CALLER {
                let value = caller * 1000 + job;
                let mut request =
                    exec("import json\ndef main(params):\n    print(json.dumps(params))\n    return params['v']\n");
                request.params_json = format!(r#"{{"v": {value}}}"#);
                let reply = client.run(request, None).await.expect("run");
                assert_eq!(ok_json(&reply), value.to_string());
                assert_eq!(stdout(&reply), format!("{{\"v\": {value}}}\n"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("caller task");
    }
    let log = supervisor.log();
    let unrehearsed: std::collections::HashSet<String> = log
        .lines()
        .filter(|line| line.contains("worker asked of the zygote"))
        .filter(|line| log_field(line, "rehearsal=").as_deref() == Some("REHEARSAL_NONE"))
        .filter_map(|line| log_field(line, "worker="))
        .collect();
    let served = log
        .lines()
        .filter(|line| line.contains("worker handed a job"))
        .filter_map(|line| log_field(line, "worker="))
        .filter(|worker| unrehearsed.contains(worker))
        .count();
    assert!(served > 0, "no worker without a rehearsal ran a job ({} asked for):\n{log}", unrehearsed.len());
}

/// Each worker copies the zygote's pages a job's path writes in one go, as
/// the zygote's recorder learnt them when it started serving
/// (worker/native/prefault.c), and runs its job right.
#[tokio::test]
async fn workers_copy_the_pages_a_job_writes_in_one_go() {
    let supervisor = Supervisor::start_logged("[pool]\nworkers = 2\n");
    let mut client = supervisor.client().await;
    const JOBS: usize = 4;
    for value in 0..JOBS {
        let reply = client.run(exec(&format!("def main():\n    return {value}\n")), None).await.expect("run");
        assert_eq!(ok_json(&reply), value.to_string());
    }
    let log = supervisor.log();
    assert!(!log.contains("pyclave zygote: "), "the zygote reported a problem:\n{log}");
    let copied: Vec<u64> = log
        .lines()
        .filter(|line| line.contains("worker handed a job"))
        .filter_map(|line| log_field(line, "pages_copied="))
        .map(|count| count.parse().expect("a page count"))
        .collect();
    assert!(copied.len() >= JOBS, "a ready worker for each job:\n{log}");
    // A trivial job's path writes ~340 of the zygote's pages.
    assert!(copied.iter().all(|&pages| pages >= 50), "pages copied per worker: {copied:?}");
}

/// After a run of transforms, workers that will not rehearse one copy the
/// pages a transform's path writes (learnt by the zygote's second
/// recorder), not just a trivial job's; transforms then run right.
#[tokio::test]
async fn after_transforms_under_load_workers_copy_a_transforms_pages() {
    let supervisor = Supervisor::start_logged("[pool]\nworkers = 2\n");
    let mut client = supervisor.client().await;
    let code = "def transform(table, params):\n    return table.groupby('s', as_index=False)['x'].sum()\n";
    // Submitted together, more than there are workers: jobs find none
    // ready, so new workers rehearse nothing.
    const JOBS: usize = 24;
    let input = arrow_memfd(&sample_batch(1000));
    for _ in 0..JOBS {
        client.submit(transform(code), as_fd(&input)).await.expect("submit");
    }
    for _ in 0..JOBS {
        let reply = client.next_reply().await.expect("reply");
        let table = reply.table.as_ref().expect("an output table");
        assert_eq!(read_table(table).iter().map(|batch| batch.num_rows()).sum::<usize>(), 100);
    }
    let log = supervisor.log();
    assert!(!log.contains("pyclave zygote: "), "the zygote reported a problem:\n{log}");
    let mut transform_pages = HashMap::new();
    for line in log.lines().filter(|line| line.contains("worker asked of the zygote")) {
        let worker = log_field(line, "worker=").expect("a worker id");
        transform_pages.insert(worker, log_field(line, "transform_pages=").expect("transform_pages") == "true");
    }
    let (mut trivial, mut transform) = (Vec::new(), Vec::new());
    for line in log.lines().filter(|line| line.contains("worker handed a job")) {
        let worker = log_field(line, "worker=").expect("a worker id");
        let copied: u64 = log_field(line, "pages_copied=").expect("pages_copied").parse().expect("a count");
        if transform_pages[&worker] { &mut transform } else { &mut trivial }.push(copied);
    }
    assert!(!trivial.is_empty() && !transform.is_empty(), "workers of both kinds ran jobs:\n{log}");
    // ~340 pages against ~1,700.
    let most_trivial = trivial.iter().max().expect("one");
    assert!(
        transform.iter().all(|pages| pages > &(most_trivial * 2)),
        "pages copied: a trivial job's path {trivial:?}, a transform's {transform:?}"
    );
}

/// The zygote waits at most 10 s for each recorder (worker/native/prefault.c);
/// one that hangs is killed and workers fault their pages as before.
#[tokio::test]
async fn a_hanging_recorder_is_killed_and_workers_serve_without_its_pages() {
    use std::os::unix::fs::PermissionsExt;
    // The zygote's Python, with pyclave's recording replaced by a sleep: the
    // wrapper inserts it into the zygote's bootstrap (`... zygote.main(N)`).
    let dir = tempfile::tempdir().expect("tempdir");
    let wrapper = dir.path().join("python");
    let hang = "from pyclave_worker import worker; import time; worker.record = lambda *args: time.sleep(3600)";
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nexec {python:?} \"$1\" \"$2\" \"${{3/zygote.main(/{hang}; zygote.main(}}\"\n",
            python = venv_python().display().to_string()
        ),
    )
    .expect("write the wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = format!("[pool]\nworkers = 1\npython = {:?}\n", wrapper.display().to_string());
    let mut supervisor = Supervisor::start_logged(&config);
    let log = supervisor.log();
    for path in ["a trivial job's", "a transform's"] {
        assert!(
            log.contains(&format!("pyclave zygote: {path} recorder did not finish within 10000 ms")),
            "{path} recorder timed out:\n{log}"
        );
    }
    // Killed and reaped: every process the zygote still has is a worker,
    // which is born into a pid namespace of its own (a recorder is not).
    let zygote = zygote_pid(&supervisor);
    let pid_namespace_depth = |pid: i32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status.lines().find_map(|line| line.strip_prefix("NSpid:")).map(|pids| pids.split_whitespace().count())
    };
    let zygote_depth = pid_namespace_depth(zygote).expect("the zygote's NSpid");
    for child in children_of(zygote) {
        assert_ne!(pid_namespace_depth(child), Some(zygote_depth), "process {child} is a recorder left running");
    }
    let reply = supervisor.client().await.run(exec("def main():\n    return 1\n"), None).await.expect("run");
    assert_eq!(ok_json(&reply), "1");
    let log = supervisor.log();
    let handed = log.lines().find(|line| line.contains("worker handed a job")).expect("a worker was handed the job");
    assert_eq!(log_field(handed, "pages_copied=").as_deref(), Some("0"), "nothing learnt, nothing copied: {handed}");
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn every_job_runs_in_a_fresh_process() {
    let supervisor = Supervisor::start("[pool]\nworkers = 2\n");
    let mut client = supervisor.client().await;
    for _ in 0..6 {
        let name = unique_name("pyj");
        let code = format!(
            "SEEN = globals().setdefault('SEEN', 0)\ndef main():\n    global SEEN\n    SEEN += 1\n    {}\n    return SEEN\n",
            py_name_process(&name)
        );
        let reply = client.run(exec(&code), None).await.expect("run");
        assert_eq!(ok_json(&reply), "1", "module state never survives into another job");
        wait_until("the worker exits after its job", Duration::from_secs(5), || named_processes(&name).is_empty());
    }
}

#[tokio::test]
async fn a_job_whose_worker_dies_before_reading_it_runs_on_another_worker() {
    use nix::sys::signal::{Signal, kill};
    let supervisor = Supervisor::start("[pool]\nworkers = 1\n");
    let mut client = supervisor.client().await;
    let zygote = zygote_pid(&supervisor);
    // The one worker, ready: blocked reading its channel, which it does
    // only once it has reported ready.
    let mut worker = 0;
    wait_until("the worker waits for its job", Duration::from_secs(30), || {
        let idle: Vec<i32> = children_of(zygote)
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w == "unix_stream_read_generic")
            })
            .collect();
        worker = idle.first().copied().unwrap_or(0);
        idle.len() == 1
    });
    let worker = nix::unistd::Pid::from_raw(worker);
    kill(worker, Signal::SIGSTOP).expect("stop the worker");
    let id = client.submit(exec("def main():\n    return 'ran'\n"), None).await.expect("submit");
    // The job goes to the stopped worker, which never reads it; the next
    // one queues behind it, for the one running slot the first job keeps.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = client.submit(exec("def main():\n    return 'queued'\n"), None).await.expect("submit");
    tokio::time::sleep(Duration::from_millis(100)).await;
    kill(worker, Signal::SIGKILL).expect("kill the worker");
    let answered = Duration::from_secs(30);
    let reply = tokio::time::timeout(answered, client.next_reply()).await.expect("answered").expect("reply");
    assert_eq!(reply.id, id);
    assert_eq!(ok_json(&reply), "\"ran\"", "the job ran on the replacement, not reported killed");
    let reply = tokio::time::timeout(answered, client.next_reply()).await.expect("answered").expect("reply");
    assert_eq!((reply.id, ok_json(&reply)), (queued, "\"queued\"".to_owned()), "the retry did not block the queue");
}

#[tokio::test]
async fn zygote_is_single_threaded_and_restarts_after_being_killed() {
    let mut supervisor = Supervisor::start("[pool]\nworkers = 2\n");
    let mut client = supervisor.client().await;
    let zygote = zygote_pid(&supervisor);
    let status = std::fs::read_to_string(format!("/proc/{zygote}/status")).expect("zygote status");
    assert!(status.lines().any(|line| line == "Threads:\t1"), "zygote threads: {status}");

    // Jobs keep coming while the zygote dies.
    for _ in 0..6 {
        client
            .submit(exec("import time\ndef main():\n    time.sleep(0.05)\n    return 1\n"), None)
            .await
            .expect("submit");
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(zygote), nix::sys::signal::Signal::SIGKILL).expect("kill zygote");
    for _ in 0..6 {
        let reply = client.next_reply().await.expect("reply");
        assert_eq!(ok_json(&reply), "1");
    }
    for _ in 0..6 {
        let reply = client.run(exec("def main():\n    return 2\n"), None).await.expect("run");
        assert_eq!(ok_json(&reply), "2");
    }
    wait_until("a new zygote runs", Duration::from_secs(10), || {
        zygote_pids(&supervisor).iter().any(|pid| *pid != zygote)
    });
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn idle_worker_killed_is_replaced_and_its_job_not_lost() {
    let mut supervisor = Supervisor::start("[pool]\nworkers = 1\n");
    let mut client = supervisor.client().await;
    let zygote = zygote_pid(&supervisor);
    // Kill every idle worker (children of the zygote) a few times over.
    for _ in 0..3 {
        let children = std::fs::read_to_string(format!("/proc/{zygote}/task/{zygote}/children")).unwrap_or_default();
        for child in children.split_whitespace() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.parse().expect("pid")),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let reply = client.run(exec("def main():\n    return 2\n"), None).await.expect("run");
        assert_eq!(ok_json(&reply), "2");
    }
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn running_worker_killed_from_outside_gets_an_outcome() {
    let mut supervisor = Supervisor::start("");
    let (job, child) = (unique_name("pyj"), unique_name("pyc"));
    let mut client = supervisor.client().await;
    client.submit(exec(&sleeping_job_with_child(&job, &child)), None).await.expect("submit");
    wait_until("the job runs", Duration::from_secs(20), || !named_processes(&child).is_empty());
    let worker = named_processes(&job)[0];
    // The worker is pid 1 of its namespace: from outside only SIGKILL ends it.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let reply = client.next_reply().await.expect("reply");
    assert!(matches!(kind(&reply), Kind::Killed(k) if k.signal_name == "SIGKILL"), "{:?}", reply.outcome);
    assert!(named_processes(&child).is_empty(), "the job's child died with it");
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn caller_disconnect_kills_its_running_job_and_drops_queued_ones() {
    let mut supervisor = Supervisor::start("[pool]\nworkers = 1\n");
    let (job, child) = (unique_name("pyj"), unique_name("pyc"));
    let mut client = supervisor.client().await;
    for _ in 0..3 {
        client.submit(exec(&sleeping_job_with_child(&job, &child)), None).await.expect("submit");
    }
    wait_until("the first job runs", Duration::from_secs(20), || !named_processes(&child).is_empty());
    drop(client);
    wait_until("the job's processes are gone", Duration::from_secs(10), || {
        named_processes(&job).is_empty() && named_processes(&child).is_empty()
    });
    // The queued jobs were dropped, not run: nothing of them ever appears.
    std::thread::sleep(Duration::from_millis(500));
    assert!(named_processes(&job).is_empty(), "a queued job of a gone caller started");
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn a_full_queue_rejects_at_once_and_loses_nothing() {
    let mut supervisor = Supervisor::start("[pool]\nworkers = 1\n[server]\nmax_queued_jobs = 2\n");
    let mut client = supervisor.client().await;
    let slow = "import time\ndef main():\n    time.sleep(0.3)\n    return 'done'\n";
    let total = 8;
    for _ in 0..total {
        client.submit(exec(slow), None).await.expect("submit");
    }
    let (mut done, mut full) = (0, 0);
    for _ in 0..total {
        let reply = client.next_reply().await.expect("reply");
        match kind(&reply) {
            Kind::Ok(_) => done += 1,
            Kind::Rejected(r) if r.code() == rejected::Code::QueueFull => full += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(done + full, total);
    assert!(full >= 1 && done >= 2, "done {done}, rejected {full}");
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn shutdown_answers_every_job_then_exits() {
    let mut supervisor = Supervisor::start("[pool]\nworkers = 1\n[server]\nshutdown_grace_ms = 20000\n");
    let mut client = supervisor.client().await;
    let job = unique_name("pyj");
    let code = format!(
        "import time\ndef main():\n    {}\n    time.sleep(0.5)\n    return 'finished'\n",
        py_name_process(&job)
    );
    let first = client.submit(exec(&code), None).await.expect("submit");
    wait_until("the first job runs", Duration::from_secs(10), || !named_processes(&job).is_empty());
    for _ in 0..3 {
        client.submit(exec("def main():\n    return 'never'\n"), None).await.expect("submit");
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor.pid() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    let mut shut_out = 0;
    for _ in 0..4 {
        let reply = client.next_reply().await.expect("every job is answered");
        if reply.id == first {
            assert_eq!(ok_json(&reply), "\"finished\"", "a running job finishes within the grace period");
        } else {
            assert!(
                matches!(kind(&reply), Kind::Rejected(r) if r.code() == rejected::Code::ShuttingDown),
                "{:?}",
                reply.outcome
            );
            shut_out += 1;
        }
    }
    assert_eq!(shut_out, 3);
    wait_until("the supervisor exits", Duration::from_secs(10), || !supervisor.is_alive());
    assert!(!supervisor.socket.exists(), "the socket file is removed");
}

#[tokio::test]
async fn shutdown_kills_jobs_that_outlive_the_grace_period() {
    let mut supervisor = Supervisor::start("[server]\nshutdown_grace_ms = 300\n");
    let mut client = supervisor.client().await;
    let job = unique_name("pyj");
    let code = format!("import time\ndef main():\n    {}\n    time.sleep(60)\n", py_name_process(&job));
    client.submit(exec(&code), None).await.expect("submit");
    wait_until("the job runs", Duration::from_secs(10), || !named_processes(&job).is_empty());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor.pid() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    let reply = client.next_reply().await.expect("the killed job is answered");
    assert!(matches!(kind(&reply), Kind::Killed(k) if k.signal_name == "SIGKILL"), "{:?}", reply.outcome);
    wait_until("the supervisor exits", Duration::from_secs(10), || !supervisor.is_alive());
}

#[tokio::test]
async fn a_lowered_memory_limit_does_not_stick_to_a_reused_cgroup() {
    let mut supervisor = Supervisor::start("[pool]\nworkers = 1\n");
    let mut client = supervisor.client().await;
    let probe = "def main():\n    return open('/proc/self/cgroup').read().count(':')\n";
    for round in 0..12 {
        // Alternate lowered and default limits: the job cgroups are reused
        // (the pause lets a used one go back to the pool), and raising the
        // limit again must work (memory+swap ordering).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let limit = if round % 2 == 0 { 64 * 1024 * 1024 } else { 0 };
        let reply =
            tokio::time::timeout(Duration::from_secs(30), client.run(with_limits(exec(probe), limit, 0, 0), None))
                .await
                .expect("the pool keeps serving")
                .expect("run");
        assert!(matches!(kind(&reply), Kind::Ok(_)), "round {round}: {:?}", reply.outcome);
    }
    // A memory-hungry job under the default limit is not held to the lowered one.
    let big = "import numpy as np\ndef main():\n    return int(np.ones(20 * 1024 * 1024).sum())\n";
    let reply = client.run(exec(big), None).await.expect("run");
    assert_eq!(ok_json(&reply), (20 * 1024 * 1024).to_string(), "160 MiB fits the default 1 GiB limit");
    supervisor.assert_healthy().await;
}

/// Once it serves, the zygote's heaps (CPython's object arenas, the malloc
/// heap) are private mappings of a file: a fork copies no page-table entries
/// for them, so a worker maps only the pages it touches. A job's own memory
/// is not on huge pages even when it asks (an idle worker stays small, huge
/// pages are off in workers), and CPython's object
/// arenas, which come from the zygote's region, are given back and reused.
#[tokio::test]
async fn zygote_heaps_are_on_a_file_and_a_job_s_own_memory_is_its_own() {
    let mut supervisor = Supervisor::start("[pool]\nworkers = 1\n");
    let zygote = zygote_pid(&supervisor);
    let mut worker = 0;
    wait_until("the worker waits for its job", Duration::from_secs(30), || {
        worker = children_of(zygote).first().copied().unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{worker}/wchan")).is_ok_and(|w| w == "unix_stream_read_generic")
    });
    let in_zygote = heap_file_mappings(zygote);
    assert_eq!(in_zygote.len(), 2, "the malloc heap and the arena region: {in_zygote:?}");
    assert!(in_zygote.iter().all(|m| m.private_writable), "copy-on-write, as before: {in_zygote:?}");
    let size_kib: u64 = in_zygote.iter().map(|m| m.size_kib).sum();
    assert!(size_kib >= 16 * 1024, "pandas' objects are there: {size_kib} KiB");
    let mapped_by_worker: u64 = heap_file_mappings(worker).iter().map(|m| m.rss_kib).sum();
    assert!(
        mapped_by_worker < size_kib / 2,
        "a warm worker maps {mapped_by_worker} of the heaps' {size_kib} KiB: only what it touched"
    );

    let code = r#"
import ctypes
import mmap

def rss_kib():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS:')).split()[1])

def main():
    total, peaks, afters = 0, [], []
    for wave in range(3):
        objects = [(i, str(i)) for i in range(300_000)]
        total += sum(i for i, _ in objects)
        peaks.append(rss_kib())
        del objects
        afters.append(rss_kib())
    big = mmap.mmap(-1, 64 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    big.madvise(mmap.MADV_HUGEPAGE)  # asked for, and refused
    for offset in range(0, len(big), 4096):
        big[offset] = 1
    start = ctypes.addressof(ctypes.c_char.from_buffer(big))
    return {"total": total, "freed_kib": min(p - a for p, a in zip(peaks, afters)), "huge_kib": huge_kib(start)}

def huge_kib(start):
    inside = False
    for line in open('/proc/self/smaps'):
        first = line.split()[0]
        if '-' in first and not first.endswith(':'):
            inside = int(first.split('-')[0], 16) == start
        elif inside and line.startswith('AnonHugePages:'):
            return int(line.split()[1])
    raise LookupError("the buffer's mapping")
"#;
    let mut client = supervisor.client().await;
    let reply = client.run(exec(code), None).await.expect("run");
    let result: serde_json::Value = serde_json::from_str(&ok_json(&reply)).expect("json");
    assert_eq!(result["total"], 3 * (0..300_000u64).sum::<u64>(), "objects on reused arenas keep their values");
    assert!(result["freed_kib"].as_u64().unwrap() >= 16 * 1024, "emptied arenas go back: {result}");
    assert_eq!(result["huge_kib"], 0, "64 MiB of the job's own memory on 4 KiB pages: {result}");
    supervisor.assert_healthy().await;
}

/// The zygote's native library is preloaded so that CPython's arenas come
/// from its region from the interpreter's start: an object created then
/// lies on the heap file in a job too. The preload leaves nothing in a
/// job's environment, and Arrow allocates from glibc (whose heap is on the
/// file too), not from a mimalloc region every fork would copy.
#[tokio::test]
async fn zygote_arenas_are_in_its_region_from_the_start_and_the_preload_leaves_no_trace() {
    let mut supervisor = Supervisor::start("[pool]\nworkers = 1\n");
    let code = r#"
import encodings
import os
import pyarrow

def mapping_of(address):
    for line in open('/proc/self/maps'):
        fields = line.split(maxsplit=5)
        start, end = (int(bound, 16) for bound in fields[0].split('-'))
        if start <= address < end:
            return fields[5].strip() if len(fields) > 5 else 'anonymous'
    return 'unmapped'

def main():
    return {
        "startup_object": mapping_of(id(encodings)),
        "environment": sorted(k for k in os.environ if k in ("LD_PRELOAD", "PYCLAVE_ARENA_REGION_AT_START")),
        "arrow_pool": pyarrow.default_memory_pool().backend_name,
    }
"#;
    let reply = supervisor.client().await.run(exec(code), None).await.expect("run");
    let result: serde_json::Value = serde_json::from_str(&ok_json(&reply)).expect("json");
    assert!(
        result["startup_object"].as_str().is_some_and(|m| m.contains("/memfd:pyclave-zygote-heap")),
        "a module imported while CPython started is on the heap file: {result}"
    );
    assert_eq!(result["environment"], serde_json::json!([]), "{result}");
    assert_eq!(result["arrow_pool"], "system", "{result}");
    supervisor.assert_healthy().await;
}

/// The zygote merged its libraries' read-only segments into the code or
/// data next to them (a fork copies every mapping): none is left beside a
/// neighbour of its own file it could have merged with, and the zygote has
/// well under the five or six mappings per library the dynamic linker makes;
/// then it moved every library's data, bss included, onto a file.
#[tokio::test]
async fn zygote_libraries_are_merged_into_fewer_mappings() {
    if !may_make_file_mappings_executable() {
        eprintln!("skipped: this host refuses to make a mapping executable (the merge is then partial by design)");
        return;
    }
    let mut supervisor = Supervisor::start("[pool]\nworkers = 1\n");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", zygote_pid(&supervisor))).expect("maps");
    let mappings: Vec<Mapping> = maps.lines().filter_map(Mapping::parse).collect();
    let code_files: std::collections::HashSet<_> =
        mappings.iter().filter(|m| m.permissions == "r-xp").filter_map(Mapping::file).collect();
    assert!(code_files.len() >= 50, "pandas, pyarrow and numpy are loaded: {} libraries", code_files.len());
    for pair in mappings.windows(2) {
        let (first, second) = (&pair[0], &pair[1]);
        let continues = first.file().is_some()
            && first.file() == second.file()
            && first.end == second.start
            && second.offset == first.offset + (second.start - first.start);
        let mergeable = matches!(
            (first.permissions.as_str(), second.permissions.as_str()),
            ("r--p", "r-xp" | "rw-p") | ("r-xp", "r--p")
        );
        assert!(
            !(continues && mergeable && first.file().is_some_and(|file| code_files.contains(&file))),
            "left apart: {first:?} {second:?}"
        );
    }
    assert!(mappings.len() < 4 * code_files.len(), "{} mappings for {} libraries", mappings.len(), code_files.len());
    // And their data segments are on files of their own (mappings.c): none
    // is a private writable mapping of a loaded library's file any more.
    let left = mappings.iter().filter(|m| m.permissions == "rw-p" && m.file().is_some_and(|f| code_files.contains(&f)));
    assert_eq!(left.count(), 0, "libraries' data left where the dynamic linker put it");
    let moved = maps.lines().filter(|line| line.contains("/memfd:pyclave-zygote-library-data")).count();
    assert!(moved >= 50, "{moved} libraries' data segments on files");
    // Their bss too: a variable of libpython's far past the last page of its
    // data on disk (so in the anonymous mapping the dynamic linker made).
    let code = r#"
import ctypes
def main():
    address = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_Py_HashSecret"))
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(bound, 16) for bound in fields[0].split("-"))
            if start <= address < end:
                return fields[5] if len(fields) > 5 else "anonymous"
"#;
    let reply = supervisor.client().await.run(exec(code), None).await.expect("reply");
    assert_eq!(ok_json(&reply), "\"/memfd:pyclave-zygote-library-data\"", "where libpython's bss lies");
    supervisor.assert_healthy().await;
}

/// Whether this process (and so the supervisor and zygote it starts, which
/// inherit its restrictions: `MemoryDenyWriteExecute=`, `PR_SET_MDWE`, an
/// LSM) may make a read-only file mapping executable, as the merge does.
fn may_make_file_mappings_executable() -> bool {
    let file = std::fs::File::open(std::env::current_exe().expect("test binary")).expect("open");
    // SAFETY: a fresh private read-only mapping of a file we hold open; only
    // its protection is changed and it is unmapped before returning, never
    // read through a Rust reference.
    unsafe {
        let address = libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0);
        assert_ne!(address, libc::MAP_FAILED, "map the test binary");
        let allowed = libc::mprotect(address, 4096, libc::PROT_READ | libc::PROT_EXEC) == 0;
        libc::munmap(address, 4096);
        allowed
    }
}

/// One line of `/proc/<pid>/maps`.
#[derive(Debug)]
struct Mapping {
    start: u64,
    end: u64,
    permissions: String,
    offset: u64,
    device: String,
    inode: u64,
}

impl Mapping {
    /// The mapped file's device and inode; None for anonymous memory.
    fn file(&self) -> Option<(&str, u64)> {
        (self.inode != 0).then_some((self.device.as_str(), self.inode))
    }

    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        Some(Self {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            permissions: fields.next()?.to_string(),
            offset: u64::from_str_radix(fields.next()?, 16).ok()?,
            device: fields.next()?.to_string(),
            inode: fields.next()?.parse().ok()?,
        })
    }
}

/// A mapping of the zygote's heap file, from `/proc/<pid>/smaps`.
#[derive(Debug)]
struct HeapFileMapping {
    private_writable: bool,
    size_kib: u64,
    rss_kib: u64,
}

fn heap_file_mappings(pid: i32) -> Vec<HeapFileMapping> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut found: Vec<HeapFileMapping> = Vec::new();
    let mut inside = false;
    for line in smaps.lines() {
        let kib = |key: &str| line.strip_prefix(key).and_then(|rest| rest.split_whitespace().next()?.parse().ok());
        if let Some(mapping) = Mapping::parse(line) {
            inside = line.contains("/memfd:pyclave-zygote-heap");
            if inside {
                let private_writable = mapping.permissions == "rw-p";
                found.push(HeapFileMapping {
                    private_writable,
                    size_kib: (mapping.end - mapping.start) / 1024,
                    rss_kib: 0,
                });
            }
        } else if let (true, Some(rss)) = (inside, kib("Rss:")) {
            found.last_mut().expect("a mapping").rss_kib = rss;
        }
    }
    found
}
