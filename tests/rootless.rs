//! Rootless mode: `pyclave serve` started by an unprivileged user (the test
//! drops to `pyclave-rootless`, which has a subordinate id range), with and
//! without a cgroup delegated to it. The hostile suite also runs against a
//! rootless supervisor (tests/hostile.rs).

mod common;

use std::time::Duration;

use common::*;
use pyclave::proto::api::{outcome::Kind, timeout::Clock};

/// `Uid:` (real) and the given fields of `/proc/<pid>/status`.
fn status_field(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find_map(|line| line.strip_prefix(&format!("{field}:"))).expect("field");
    line.split_whitespace().next().expect("value").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprivileged_supervisor_confines_jobs_under_subordinate_uids() {
    let user = nix::unistd::User::from_name(ROOTLESS_USER).expect("passwd").expect("run scripts/setup.sh");
    let supervisor = Supervisor::start_as(Privilege::Rootless { delegated_cgroup: true }, "", &[]);
    let supervisor_uid: u32 = status_field(supervisor.pid() as i32, "Uid").parse().expect("uid");
    assert_eq!(supervisor_uid, user.uid.as_raw(), "the supervisor runs as the unprivileged user");

    let reply = supervisor.client().await.run(exec("def main():\n    return 1\n"), None).await.expect("run");
    assert_eq!(ok_json(&reply), "1");
    assert!(reply.outcome.disabled_layers.is_empty(), "every layer is on: {:?}", reply.outcome.disabled_layers);

    // Look at a running job from the host.
    let name = unique_name("rl-");
    let code = format!("import time\ndef main():\n    {}\n    time.sleep(60)\n", py_name_process(&name));
    let mut client = supervisor.client().await;
    let job = tokio::spawn(async move { client.run(exec(&code), None).await });
    wait_until("the job runs", Duration::from_secs(20), || !named_processes(&name).is_empty() || job.is_finished());
    assert!(!job.is_finished(), "the job ended: {:?}", job.await.map(|reply| reply.map(|reply| reply.outcome)));
    let pid = named_processes(&name)[0];
    let uid: u32 = status_field(pid, "Uid").parse().expect("uid");
    assert!(subordinate_uids().contains(&uid), "the job's host uid {uid} is a subordinate uid");
    assert_ne!(uid, user.uid.as_raw(), "not the supervisor's uid");
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(pid, "CapBnd"), "0000000000000000");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2");
    job.abort();
    wait_until("the cancelled job is gone", Duration::from_secs(20), || named_processes(&name).is_empty());

    // The delegated cgroup enforces the memory limit.
    let bomb = "def main():\n    x = bytearray(1 << 30)\n    for i in range(0, len(x), 4096):\n        x[i] = 1\n";
    let reply = supervisor.client().await.run(with_limits(exec(bomb), 128 << 20, 0, 0), None).await.expect("run");
    assert!(matches!(kind(&reply), Kind::OutOfMemory(_)), "got {:?}", kind(&reply));
    let mut supervisor = supervisor;
    supervisor.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_delegated_cgroup_it_fails_closed_unless_the_limits_are_lowered() {
    let (mut command, _dir, _socket, _) = serve_command(Privilege::Rootless { delegated_cgroup: false }, "");
    let output = command.output().expect("run pyclave serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "serve must refuse to start: {stderr}");
    assert!(stderr.contains("`memory_limit`") && stderr.contains("require_memory_limit = false"), "{stderr}");

    let lowered = "[sandbox]\nrequire_memory_limit = false\nrequire_resource_limits = false\n";
    let mut supervisor = Supervisor::start_as(Privilege::Rootless { delegated_cgroup: false }, lowered, &[]);
    let reply = supervisor.client().await.run(exec("def main():\n    return 2\n"), None).await.expect("run");
    assert_eq!(ok_json(&reply), "2");
    assert_eq!(reply.outcome.disabled_layers, ["memory_limit", "resource_limits"]);

    // Without a cgroup the CPU deadline is kept from the worker's own time...
    let spin = "def main():\n    while True:\n        pass\n";
    let reply = supervisor.client().await.run(with_limits(exec(spin), 0, 20_000, 300), None).await.expect("run");
    assert!(matches!(kind(&reply), Kind::Timeout(timeout) if timeout.clock() == Clock::Cpu), "got {:?}", kind(&reply));
    let usage = reply.outcome.usage.expect("usage");
    assert!(usage.cpu_time_us >= 300_000, "the killed job's CPU time is reported: {usage:?}");
    // ...and the job's processes still all end with it (its pid namespace).
    let (job_name, child_name) = (unique_name("rlj-"), unique_name("rlc-"));
    let code = sleeping_job_with_child(&job_name, &child_name);
    let reply = supervisor.client().await.run(with_limits(exec(&code), 0, 1_500, 0), None).await.expect("run");
    assert!(matches!(kind(&reply), Kind::Timeout(timeout) if timeout.clock() == Clock::Wall), "got {:?}", kind(&reply));
    wait_until("the job and its child are gone", Duration::from_secs(10), || {
        named_processes(&job_name).is_empty() && named_processes(&child_name).is_empty()
    });
    supervisor.assert_healthy().await;
}
