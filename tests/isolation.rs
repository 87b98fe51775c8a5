//! Network namespaces are reused from one job to a later one (the zygote
//! keeps them): nothing a job leaves there may reach the next job, and jobs
//! running at once never share one.

mod common;

use std::collections::HashSet;

use common::*;
use pyclave::proto::api::outcome::Kind;

/// What every job here starts with: it refuses to run unless confined (it
/// binds sockets), knows its network namespace, and can listen on the name
/// every job looks for.
const PRELUDE: &str = r#"
import os, socket, sys
if os.getpid() != 1 or os.getuid() < 1000 or "Seccomp:\t2" not in open("/proc/self/status").read():
    raise SystemExit("NOT CONFINED")
NAMESPACE = os.stat("/proc/self/ns/net").st_ino
def listen():
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0pyclave-leftover")
    listener.listen()
    return listener
"#;

/// Looks for a listener an earlier job left, then leaves one behind itself
/// and reports its network namespace.
const PROBE_AND_LEAVE: &str = r#"
def main():
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect("\0pyclave-leftover")
        found = "connected"
    except OSError as error:
        found = type(error).__name__
    listener = listen()
    return [NAMESPACE, found]
"#;

/// Ways a job tries to make a listener outlive it; each prints its network
/// namespace first. Passed to the supervisor with the result (the only way
/// out of a job): refused, the job's outcome is a protocol error.
const PASS_OUT_WITH_THE_RESULT: &str = r#"
def main():
    print(NAMESPACE, flush=True)
    listener = listen()
    wire = sys.modules["pyclave_worker.wire"]
    send = wire.send_frame
    wire.send_frame = lambda sock, payload, fds=(): send(sock, payload, [listener.fileno()])
    return "passed"
"#;

/// Passed in a frame after the result, which the supervisor never reads.
const PASS_OUT_AFTER_THE_RESULT: &str = r#"
def main():
    print(NAMESPACE, flush=True)
    listener = listen()
    wire = sys.modules["pyclave_worker.wire"]
    send = wire.send_frame
    def send_then_pass(sock, payload, fds=()):
        send(sock, payload, fds)
        send(sock, b"", [listener.fileno()])
    wire.send_frame = send_then_pass
    return "passed"
"#;

/// Left in flight in a cycle of sockets (freed only by the kernel's
/// garbage collector, some time after the job is gone).
const LEAVE_IN_A_CYCLE: &str = r#"
def main():
    print(NAMESPACE, flush=True)
    listener = listen()
    a, b = socket.socketpair()
    socket.send_fds(a, [b"x"], [listener.fileno(), b.fileno()])
    return "in flight"
"#;

fn namespace_and_probe(reply: &pyclave::client::Reply) -> (u64, String) {
    serde_json::from_str(&ok_json(reply)).expect("[inode, probe]")
}

#[tokio::test]
async fn a_reused_network_namespace_holds_nothing_of_the_previous_job() {
    let mut supervisor = Supervisor::start("[pool]\nworkers = 1\n");
    let mut client = supervisor.client().await;
    let probe = format!("{PRELUDE}{PROBE_AND_LEAVE}");
    let mut used = HashSet::new();
    let mut reused = false;
    for round in 0..24 {
        let leave = [PASS_OUT_WITH_THE_RESULT, PASS_OUT_AFTER_THE_RESULT, LEAVE_IN_A_CYCLE][round % 3];
        let left = client.run(exec(&format!("{PRELUDE}{leave}")), None).await.expect("run");
        match kind(&left) {
            Kind::OutputRejected(r) if r.reason.contains("file descriptors arrived from a peer that may send none") => {
            }
            Kind::Ok(_) if round % 3 != 0 => {}
            other => panic!("unexpected outcome {other:?} ({:?})", left.outcome),
        }
        used.insert(stdout(&left).trim().parse::<u64>().expect("the job printed its namespace"));
        let reply = client.run(exec(&probe), None).await.expect("run");
        let (namespace, found) = namespace_and_probe(&reply);
        assert_eq!(found, "ConnectionRefusedError", "a job reached a listener an earlier job left (round {round})");
        reused |= !used.insert(namespace);
    }
    // (An inode number can also come back on a new namespace; with one
    // worker and clean probes in between, most of these are reuses.)
    assert!(reused, "no network namespace was reused: the test proved nothing ({used:?})");
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn jobs_running_at_once_have_their_own_network_namespaces() {
    let mut supervisor = Supervisor::start("[pool]\nworkers = 3\n");
    let code = format!("{PRELUDE}import time\ndef main():\n    time.sleep(0.5)\n    return [NAMESPACE, '']\n");
    let (mut a, mut b, mut c) = (supervisor.client().await, supervisor.client().await, supervisor.client().await);
    let replies = tokio::join!(a.run(exec(&code), None), b.run(exec(&code), None), c.run(exec(&code), None));
    let namespaces: HashSet<u64> = [replies.0, replies.1, replies.2]
        .iter()
        .map(|reply| namespace_and_probe(reply.as_ref().expect("run")).0)
        .collect();
    assert_eq!(namespaces.len(), 3, "jobs running at once shared a network namespace");
    supervisor.assert_healthy().await;
}
