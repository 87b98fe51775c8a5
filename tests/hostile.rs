//! Hostile scripts against a real supervisor: one run as root, one run
//! rootless (started by an unprivileged user, see tests/rootless.rs).
//!
//! Every `tests/hostile/*.py` (sorted by name; names starting with `_` are
//! not scripts) is one attack. Its header states the exact outcome it must
//! produce and what it must not achieve; the grammar is in
//! `tests/hostile/README.md`. The runner prepends `tests/hostile/_guard.py`
//! (no hostile byte runs unless the job is confined), fills in placeholders
//! such as `{{TCP4_PORT}}`, runs the script, and checks after each one:
//!
//! - the outcome matches the header;
//! - the caller's input table (for scripts that get one) is unchanged;
//! - nothing reached the loopback listeners and the abstract Unix socket
//!   this runner opened (the only addresses any script is told about);
//! - no job process named `hx-*` (scripts name what they try to keep
//!   alive) outlived its job;
//! - a concurrent victim job, for scripts that ask for one, survived;
//! - the supervisor is alive and runs normal jobs on both workers again.
//!
//! Failures are collected and reported together, naming each script.
//! `HOSTILE_FILTER=substring` runs only the matching scripts.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use common::*;
use pyclave::client::Reply;
use pyclave::proto::api::{JobKind, Limits, outcome::Kind, timeout::Clock};

const SUITE_CONFIG: &str = r#"
[pool]
workers = 2

[sandbox]
uid_base = {{UID_BASE}}
tmp_size_bytes = 16777216
max_file_size_bytes = 33554432
max_processes = 64
extra_read_only_paths = ["{{PROBE_DIR}}"]

[output]
max_rows = 1000000
max_table_bytes = 25165824

[limits]
wall_timeout_ms = 10000
memory_limit_bytes = 268435456
max_captured_output_bytes = 65536
"#;

const CANARY_VARIABLE: &str = "PYCLAVE_HOSTILE_CANARY";
/// How long one script may take before the runner gives up on it.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);
/// Scripts name processes they try to keep alive with this prefix (only
/// processes running under this suite's job uids count: the test binary's
/// own name starts with `hostile-`).
const LEFTOVER_PREFIX: &str = "hx-";
/// Job uids of this suite's supervisor: `[uid_base, uid_base + UID_SPAN)`
/// (it leases 10 x workers of them).
const UID_SPAN: u32 = 64;

/// A `uid_base` no other supervisor on the host is likely to use: uids are
/// host-wide, and so is their RLIMIT_NPROC count, which res_fork_bomb.py pins.
fn suite_uid_base() -> u32 {
    3_000_000 + (std::process::id() % 100_000) * UID_SPAN
}
const MIN_SCRIPTS: usize = 40;

/// A setuid+setgid root program that prints its real, effective and saved
/// uids and gids: harmless on the host, telling inside a job.
const ID_PROBE_C: &str = r#"#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>
int main(void) {
    uid_t ruid, euid, suid;
    gid_t rgid, egid, sgid;
    getresuid(&ruid, &euid, &suid);
    getresgid(&rgid, &egid, &sgid);
    printf("%u %u %u %u %u %u\n", ruid, euid, suid, rgid, egid, sgid);
    return 0;
}
"#;

/// The victim: a concurrent job holding secrets other jobs must not reach.
/// It names itself only once every secret is in place.
const VICTIM_CODE: &str = r#"import ctypes, os, socket, time
def main(params):
    secret = params["secret"]
    with open("/tmp/victim-secret", "w") as secret_file:
        secret_file.write(secret)
    os.environ["VICTIM_SECRET"] = secret
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0pyclave-victim")
    listener.listen()
    libc = ctypes.CDLL(None, use_errno=True)
    shm = libc.shmget(0x50594356, 4096, 0o1600)  # IPC_CREAT | 0600
    if shm < 0:
        raise OSError(ctypes.get_errno(), "shmget")
    libc.shmat.restype = ctypes.c_void_p
    address = libc.shmat(shm, None, 0)
    ctypes.memmove(address, secret.encode(), len(secret))
    libc.prctl(15, params["name"].encode(), 0, 0, 0)
    time.sleep(60)
"#;

// ---------------------------------------------------------------- headers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equals,
    Contains,
}

#[derive(Debug)]
struct Check {
    field: String,
    op: Op,
    expected: String,
}

#[derive(Debug)]
struct Expectation {
    outcome: String,
    checks: Vec<Check>,
    /// The header line as written, for failure reports.
    text: String,
}

#[derive(Debug)]
struct Script {
    code: String,
    expect: Expectation,
    must_not: Vec<String>,
    kind: JobKind,
    limits: Option<Limits>,
    input_rows: Option<i64>,
    params: Option<String>,
    victim: bool,
}

const COMMON_FIELDS: &[&str] =
    &["stdout", "stderr", "stdout_truncated", "stderr_truncated", "stdout_bytes", "stderr_bytes"];

/// Fields each outcome has, and the one an expectation of it must pin
/// (an `ok` must pin `value` or `rows`: checked separately).
fn outcome_fields(outcome: &str) -> Option<(&'static [&'static str], Option<&'static str>)> {
    Some(match outcome {
        "ok" => (&["value", "rows", "columns"], None),
        "user_error" => (&["type", "message", "traceback"], Some("type")),
        "timeout" => (&["clock", "limit_ms"], Some("clock")),
        "out_of_memory" => (&["limit_bytes", "peak_bytes"], Some("limit_bytes")),
        "killed" => (&["signal", "signal_name", "syscall"], Some("signal_name")),
        "output_rejected" => (&["reason"], Some("reason")),
        "rejected" => (&["code", "reason"], Some("code")),
        _ => return None,
    })
}

fn parse_expectation(text: &str) -> Result<Expectation, String> {
    let text = text.trim();
    let (outcome, mut rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let Some((fields, required)) = outcome_fields(outcome) else {
        return Err(format!("unknown outcome `{outcome}`"));
    };
    let mut checks = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let key_end = rest.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(rest.len());
        let field = &rest[..key_end];
        rest = &rest[key_end..];
        let op = if let Some(after) = rest.strip_prefix("~=") {
            rest = after;
            Op::Contains
        } else if let Some(after) = rest.strip_prefix('=') {
            rest = after;
            Op::Equals
        } else {
            return Err(format!("expected `{field}=` or `{field}~=` at `{rest}`"));
        };
        if !fields.contains(&field) && !COMMON_FIELDS.contains(&field) {
            return Err(format!("`{outcome}` has no field `{field}`"));
        }
        let expected = if field == "value" && op == Op::Equals {
            // The rest of the line is one JSON value.
            let json = rest.trim();
            serde_json::from_str::<serde_json::Value>(json).map_err(|e| format!("value= is not JSON: {e}"))?;
            rest = "";
            json.to_owned()
        } else if rest.starts_with('"') {
            let mut values = serde_json::Deserializer::from_str(rest).into_iter::<String>();
            let value = values
                .next()
                .ok_or("missing quoted value")?
                .map_err(|e| format!("bad quoted value for `{field}`: {e}"))?;
            rest = &rest[values.byte_offset()..];
            value
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let value = rest[..end].to_owned();
            rest = &rest[end..];
            value
        };
        checks.push(Check { field: field.to_owned(), op, expected });
    }
    let pins = |name: &str| checks.iter().any(|c| c.field == name && c.op == Op::Equals);
    match required {
        Some(field) if !checks.iter().any(|c| c.field == field) => {
            return Err(format!("a `{outcome}` expectation must pin `{field}`"));
        }
        None if !(pins("value") || pins("rows")) => {
            return Err("an `ok` expectation must pin `value=` (exec) or `rows=` (transform)".into());
        }
        _ => {}
    }
    Ok(Expectation { outcome: outcome.to_owned(), checks, text: text.to_owned() })
}

fn parse_limits(text: &str) -> Result<Limits, String> {
    let mut limits = Limits::default();
    for pair in text.split_whitespace() {
        let (key, value) = pair.split_once('=').ok_or_else(|| format!("bad limit `{pair}`"))?;
        let value: u64 = value.parse().map_err(|_| format!("bad number in `{pair}`"))?;
        match key {
            "memory_limit_bytes" => limits.memory_limit_bytes = value,
            "wall_timeout_ms" => limits.wall_timeout_ms = value,
            "cpu_timeout_ms" => limits.cpu_timeout_ms = value,
            _ => return Err(format!("unknown limit `{key}`")),
        }
    }
    Ok(limits)
}

/// Parses the leading `# key: value` lines of a script (placeholders are
/// filled in later, in the code only).
fn parse_script(code: String) -> Result<Script, String> {
    let mut expect = None;
    let mut must_not = Vec::new();
    let mut kind = JobKind::Exec;
    let mut limits = None;
    let mut input_rows = None;
    let mut params = None;
    let mut victim = false;
    for line in code.lines() {
        let Some(comment) = line.strip_prefix('#') else { break };
        let Some((key, value)) = comment.trim().split_once(':') else { continue };
        let value = value.trim();
        match key {
            "expect" => {
                if expect.is_some() {
                    return Err("more than one `# expect:` line".into());
                }
                expect = Some(parse_expectation(value)?);
            }
            "must-not" => must_not.push(value.to_owned()),
            "kind" => {
                kind = match value {
                    "exec" => JobKind::Exec,
                    "transform" => JobKind::Transform,
                    _ => return Err(format!("unknown kind `{value}`")),
                }
            }
            "limits" => limits = Some(parse_limits(value)?),
            "input-rows" => input_rows = Some(value.parse().map_err(|_| format!("bad input-rows `{value}`"))?),
            "params" => {
                serde_json::from_str::<serde_json::Value>(value).map_err(|e| format!("params is not JSON: {e}"))?;
                params = Some(value.to_owned());
            }
            "victim" => {
                victim = match value {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(format!("victim must be yes or no, not `{value}`")),
                }
            }
            _ => {} // an ordinary comment that happens to contain a colon
        }
    }
    let expect = expect.ok_or("no `# expect:` line")?;
    if must_not.is_empty() {
        return Err("no `# must-not:` line".into());
    }
    Ok(Script { code, expect, must_not, kind, limits, input_rows, params, victim })
}

// ---------------------------------------------------------------- outcomes

/// The outcome flattened to `field -> text`, as expectations name them.
fn outcome_fields_of(reply: &Reply) -> BTreeMap<&'static str, String> {
    let mut fields = BTreeMap::new();
    let outcome = &reply.outcome;
    let (name, specific): (&str, Vec<(&'static str, String)>) = match kind(reply) {
        Kind::Ok(ok) => {
            let mut specific = Vec::new();
            if !ok.json.is_empty() {
                specific.push(("value", ok.json.clone()));
            }
            if let Some(table) = &reply.table {
                let batches: Vec<RecordBatch> = read_table(table);
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                specific.push(("rows", rows.to_string()));
                if let Some(first) = batches.first() {
                    let names: Vec<String> = first.schema().fields().iter().map(|f| f.name().clone()).collect();
                    specific.push(("columns", names.join(",")));
                }
            }
            ("ok", specific)
        }
        Kind::UserError(error) => (
            "user_error",
            vec![
                ("type", error.r#type.clone()),
                ("message", error.message.clone()),
                ("traceback", error.traceback.clone()),
            ],
        ),
        Kind::Timeout(timeout) => {
            let clock = match timeout.clock() {
                Clock::Wall => "wall",
                Clock::Cpu => "cpu",
                Clock::Unspecified => "unspecified",
            };
            ("timeout", vec![("clock", clock.to_owned()), ("limit_ms", timeout.limit_ms.to_string())])
        }
        Kind::OutOfMemory(oom) => (
            "out_of_memory",
            vec![("limit_bytes", oom.limit_bytes.to_string()), ("peak_bytes", oom.peak_bytes.to_string())],
        ),
        Kind::Killed(killed) => (
            "killed",
            vec![
                ("signal", killed.signal.to_string()),
                ("signal_name", killed.signal_name.clone()),
                ("syscall", killed.syscall.clone()),
            ],
        ),
        Kind::OutputRejected(rejection) => ("output_rejected", vec![("reason", rejection.reason.clone())]),
        Kind::Rejected(rejection) => (
            "rejected",
            vec![("code", rejection.code().as_str_name().to_owned()), ("reason", rejection.reason.clone())],
        ),
    };
    fields.insert("outcome", name.to_owned());
    fields.extend(specific);
    for (stream, captured) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
        let captured = captured.clone().unwrap_or_default();
        let (text, truncated, bytes) = match stream {
            "stdout" => ("stdout", "stdout_truncated", "stdout_bytes"),
            _ => ("stderr", "stderr_truncated", "stderr_bytes"),
        };
        fields.insert(text, String::from_utf8_lossy(&captured.data).into_owned());
        fields.insert(truncated, captured.truncated.to_string());
        fields.insert(bytes, captured.data.len().to_string());
    }
    fields
}

/// What differs between the expectation and the outcome (empty: a match).
fn mismatches(expect: &Expectation, fields: &BTreeMap<&'static str, String>) -> Vec<String> {
    let mut problems = Vec::new();
    if fields["outcome"] != expect.outcome {
        problems.push(format!("outcome is `{}`, expected `{}`", fields["outcome"], expect.outcome));
        return problems;
    }
    for check in &expect.checks {
        let Some(actual) = fields.get(check.field.as_str()) else {
            problems.push(format!("the outcome has no `{}`", check.field));
            continue;
        };
        let matches = match (check.field.as_str(), check.op) {
            ("value", Op::Equals) => {
                serde_json::from_str::<serde_json::Value>(actual).ok()
                    == serde_json::from_str::<serde_json::Value>(&check.expected).ok()
            }
            (_, Op::Equals) => *actual == check.expected,
            (_, Op::Contains) => actual.contains(&check.expected),
        };
        if !matches {
            let op = if check.op == Op::Equals { "=" } else { "~=" };
            problems.push(format!("{}{op}{:?} but it is {:?}", check.field, check.expected, shorten(actual)));
        }
    }
    problems
}

fn shorten(text: &str) -> String {
    const MAX: usize = 600;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

fn describe(fields: &BTreeMap<&'static str, String>) -> String {
    let mut text = String::new();
    for (field, value) in fields {
        let _ = write!(text, "{field}={:?} ", shorten(value));
    }
    text
}

// ---------------------------------------------------------------- host side

/// Listeners on loopback that no job may reach. They are the only
/// addresses scripts are told about; after every script each must have
/// received nothing.
struct Listeners {
    tcp4: TcpListener,
    tcp6: TcpListener,
    udp4: UdpSocket,
    udp6: UdpSocket,
    abstract_unix: UnixListener,
    abstract_name: String,
}

impl Listeners {
    fn open() -> Self {
        let tcp4 = TcpListener::bind("127.0.0.1:0").expect("TCP listener on 127.0.0.1");
        let tcp6 = TcpListener::bind("[::1]:0").expect("TCP listener on ::1 (the suite needs IPv6 loopback)");
        let udp4 = UdpSocket::bind("127.0.0.1:0").expect("UDP socket on 127.0.0.1");
        let udp6 = UdpSocket::bind("[::1]:0").expect("UDP socket on ::1");
        let abstract_name = format!("pyclave-hostile-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(abstract_name.as_bytes()).expect("abstract address");
        let abstract_unix = UnixListener::bind_addr(&address).expect("abstract Unix listener");
        tcp4.set_nonblocking(true).expect("nonblocking");
        tcp6.set_nonblocking(true).expect("nonblocking");
        udp4.set_nonblocking(true).expect("nonblocking");
        udp6.set_nonblocking(true).expect("nonblocking");
        abstract_unix.set_nonblocking(true).expect("nonblocking");
        Self { tcp4, tcp6, udp4, udp6, abstract_unix, abstract_name }
    }

    fn placeholders(&self) -> Vec<(&'static str, String)> {
        let port = |address: std::io::Result<std::net::SocketAddr>| address.expect("local address").port().to_string();
        vec![
            ("TCP4_PORT", port(self.tcp4.local_addr())),
            ("TCP6_PORT", port(self.tcp6.local_addr())),
            ("UDP4_PORT", port(self.udp4.local_addr())),
            ("UDP6_PORT", port(self.udp6.local_addr())),
            ("ABSTRACT_SOCKET", self.abstract_name.clone()),
        ]
    }

    /// What reached a listener since the last call (empty: nothing did).
    fn breaches(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (name, listener) in [("TCP 127.0.0.1", &self.tcp4), ("TCP ::1", &self.tcp6)] {
            loop {
                match listener.accept() {
                    Ok((_, peer)) => found.push(format!("{name} listener accepted a connection from {peer}")),
                    Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                    Err(error) => {
                        found.push(format!("{name} listener: {error}"));
                        break;
                    }
                }
            }
        }
        for (name, socket) in [("UDP 127.0.0.1", &self.udp4), ("UDP ::1", &self.udp6)] {
            let mut buffer = [0u8; 2048];
            loop {
                match socket.recv_from(&mut buffer) {
                    Ok((bytes, peer)) => found.push(format!("{name} socket received {bytes} bytes from {peer}")),
                    Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                    Err(error) => {
                        found.push(format!("{name} socket: {error}"));
                        break;
                    }
                }
            }
        }
        loop {
            match self.abstract_unix.accept() {
                Ok(_) => found.push("the abstract Unix listener accepted a connection".into()),
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) => {
                    found.push(format!("abstract Unix listener: {error}"));
                    break;
                }
            }
        }
        found
    }
}

/// Compiles the setuid-root id probe into a directory every job sees
/// read-only (`extra_read_only_paths`).
fn build_id_probe() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("hostile-probe-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("probe directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod probe directory");
    let source = dir.path().join("idprobe.c");
    let binary = dir.path().join("idprobe");
    write_file(&source, ID_PROBE_C);
    let status = Command::new("cc").arg("-o").arg(&binary).arg(&source).status().expect("run cc");
    assert!(status.success(), "cc failed to build the id probe");
    // Owned by root (we are root); setuid and setgid.
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o6755)).expect("chmod probe");
    (dir, binary)
}

/// Host pids of live processes of this suite's jobs (host uids in
/// `job_uids`) whose comm starts with `prefix`.
fn processes_with_prefix(prefix: &str, job_uids: &std::ops::Range<u32>) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|pid| pid.parse::<i32>().ok()))
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let comm = comm.trim_end().to_owned();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let uid: u32 =
                status.lines().find_map(|line| line.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()?;
            let ours = job_uids.contains(&uid);
            (comm.starts_with(prefix) && ours && process_exists(pid)).then_some((pid, comm))
        })
        .collect()
}

/// A concurrent victim job on its own connection.
struct Victim {
    name: String,
    host_pid: i32,
    secret: String,
    task: tokio::task::JoinHandle<()>,
}

impl Victim {
    async fn start(supervisor: &Supervisor, serial: usize) -> Result<Self, String> {
        let name = format!("victim{}-{serial}", std::process::id() % 100_000);
        let secret = format!("victim-secret-{:x}-{serial}", nanos());
        let mut job = with_limits(exec(VICTIM_CODE), 0, 0, 0);
        job.params_json = serde_json::json!({"name": name, "secret": secret}).to_string();
        let mut client = supervisor.client().await;
        let task = tokio::spawn(async move {
            // Runs until aborted (which closes the connection and so kills
            // the job) or until it ends by itself.
            let _ = client.run(job, None).await;
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(pid) = named_processes(&name).first() {
                return Ok(Self { name, host_pid: *pid, secret, task });
            }
            if Instant::now() > deadline || task.is_finished() {
                task.abort();
                return Err("the victim job did not start".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Checks the victim survived, then ends it.
    async fn finish(self) -> Vec<String> {
        let mut problems = Vec::new();
        if !process_exists(self.host_pid) || self.task.is_finished() {
            problems.push("the concurrent victim job did not survive the script".to_owned());
        }
        self.task.abort();
        let _ = self.task.await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !named_processes(&self.name).is_empty() {
            if Instant::now() > deadline {
                problems.push("the victim job's process outlived its cancelled connection".to_owned());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        problems
    }
}

/// The whole contents of a file descriptor (read with pread, so the fd's
/// offset does not matter).
fn file_bytes(fd: &std::os::fd::OwnedFd) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(fd.try_clone().expect("dup"));
    let mut bytes = vec![0; file.metadata().expect("stat").len() as usize];
    file.read_exact_at(&mut bytes, 0).expect("read");
    bytes
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos()
}

/// The supervisor is alive and both workers run normal jobs again.
async fn health_problem(supervisor: &mut Supervisor) -> Option<String> {
    if !supervisor.is_alive() {
        return Some("the supervisor died".into());
    }
    let normal = "def main():\n    return 'alive'\n";
    let run = async {
        let (mut first, mut second) = (supervisor.client().await, supervisor.client().await);
        tokio::join!(first.run(exec(normal), None), second.run(exec(normal), None))
    };
    match tokio::time::timeout(Duration::from_secs(30), run).await {
        Err(_) => Some("two normal jobs did not finish within 30 s".into()),
        Ok((first, second)) => {
            for reply in [first, second] {
                match reply {
                    Err(error) => return Some(format!("a normal job failed: {error}")),
                    Ok(reply) => match kind(&reply) {
                        Kind::Ok(ok) if ok.json == "\"alive\"" => {}
                        other => return Some(format!("a normal job got {other:?}")),
                    },
                }
            }
            None
        }
    }
}

fn hostile_dir() -> PathBuf {
    repo_root().join("tests/hostile")
}

fn script_paths() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(hostile_dir())
        .expect("tests/hostile")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".py") && !name.starts_with('_')
        })
        .collect();
    paths.sort();
    paths
}

fn fill_placeholders(text: &str, values: &[(&str, String)]) -> Result<String, String> {
    let mut text = text.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(start) = text.find("{{") {
        let rest = &text[start..];
        let end = rest.find("}}").map_or(rest.len().min(40), |e| e + 2);
        return Err(format!("unknown placeholder {}", &rest[..end]));
    }
    Ok(text)
}

// ---------------------------------------------------------------- the suite

struct Failure {
    script: String,
    must_not: Vec<String>,
    expected: String,
    problems: Vec<String>,
    got: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_scripts_are_contained() {
    run_suite(Privilege::Root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_scripts_are_contained_rootless() {
    run_suite(Privilege::Rootless { delegated_cgroup: true }).await;
}

/// Runs every script against one supervisor started as `privilege`.
async fn run_suite(privilege: Privilege) {
    // One suite at a time: both load the two cores with bombs and spins.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let paths = script_paths();
    let filter = std::env::var("HOSTILE_FILTER").ok();
    if filter.is_none() {
        assert!(
            paths.len() >= MIN_SCRIPTS,
            "tests/hostile holds {} scripts; at least {MIN_SCRIPTS} expected",
            paths.len()
        );
    }
    let guard = std::fs::read_to_string(hostile_dir().join("_guard.py")).expect("tests/hostile/_guard.py");

    let (_probe_dir, probe) = build_id_probe();
    let probe_dir = probe.parent().expect("probe directory").display().to_string();
    let uid_base = suite_uid_base();
    let config = SUITE_CONFIG.replace("{{PROBE_DIR}}", &probe_dir).replace("{{UID_BASE}}", &uid_base.to_string());
    let canary = format!("canary-{:x}-{}", nanos(), std::process::id());
    let mut supervisor = Supervisor::start_as(privilege, &config, &[(CANARY_VARIABLE, canary.as_str())]);
    // Rootless, workers' uids from `uid_base` are the user's subordinate uids on the host.
    let first_job_uid = if privilege == Privilege::Root { uid_base } else { subordinate_uids().start };
    let job_uids = first_job_uid..first_job_uid + UID_SPAN;
    let mode = if privilege == Privilege::Root { "root" } else { "rootless" };
    let listeners = Listeners::open();

    let mut constant: Vec<(&str, String)> = listeners.placeholders();
    constant.extend([
        ("CANARY", canary.clone()),
        ("CANARY_VARIABLE", CANARY_VARIABLE.to_owned()),
        ("SUPERVISOR_PID", supervisor.pid().to_string()),
        ("SOCKET_PATH", supervisor.socket.display().to_string()),
        ("CONFIG_PATH", supervisor.dir.path().join("pyclave.toml").display().to_string()),
        ("SETUID_PROBE", probe.display().to_string()),
    ]);

    let mut failures: Vec<Failure> = Vec::new();
    let mut ran = 0;
    for (serial, path) in paths.iter().enumerate() {
        let name = path.file_name().and_then(|n| n.to_str()).expect("utf-8 name").to_owned();
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        ran += 1;
        let script_started = Instant::now();
        let raw = std::fs::read_to_string(path).expect("read script");
        let fail = |problems: Vec<String>, expected: &str, must_not: &[String], got: String| Failure {
            script: name.clone(),
            must_not: must_not.to_vec(),
            expected: expected.to_owned(),
            problems,
            got,
        };

        let mut script = match parse_script(raw) {
            Ok(script) => script,
            Err(problem) => {
                failures.push(fail(vec![format!("bad script: {problem}")], "", &[], String::new()));
                continue;
            }
        };
        let victim = if script.victim {
            match Victim::start(&supervisor, serial).await {
                Ok(victim) => Some(victim),
                Err(problem) => {
                    failures.push(fail(vec![problem], &script.expect.text, &script.must_not, String::new()));
                    continue;
                }
            }
        } else {
            None
        };
        // The zygote is replaced after a crash: look it up each time.
        let zygote = zygote_pids(&supervisor).first().map(ToString::to_string);
        let mut values = constant.clone();
        if let Some(zygote) = zygote {
            values.push(("ZYGOTE_PID", zygote));
        }
        if let Some(victim) = &victim {
            values.push(("VICTIM_SECRET", victim.secret.clone()));
            values.push(("VICTIM_HOST_PID", victim.host_pid.to_string()));
        }
        match fill_placeholders(&script.code, &values) {
            Ok(code) => script.code = code,
            Err(problem) => {
                failures.push(fail(vec![format!("bad script: {problem}")], "", &script.must_not, String::new()));
                if let Some(victim) = victim {
                    victim.finish().await;
                }
                continue;
            }
        }

        let mut job = match script.kind {
            JobKind::Transform => transform(&format!("{guard}\n{}", script.code)),
            _ => exec(&format!("{guard}\n{}", script.code)),
        };
        job.limits = script.limits;
        if let Some(params) = &script.params {
            job.params_json = params.clone();
        }
        let input = script.input_rows.map(|rows| arrow_memfd(&sample_batch(rows)));
        let input_before = input.as_ref().map(file_bytes);
        let mut client = supervisor.client().await;
        let reply = tokio::time::timeout(SCRIPT_DEADLINE, client.run(job, input.as_ref().and_then(as_fd))).await;
        drop(client);

        let mut problems = Vec::new();
        let mut got = String::new();
        match reply {
            Err(_) => problems.push(format!("no outcome within {SCRIPT_DEADLINE:?}")),
            Ok(Err(error)) => problems.push(format!("the client failed: {error}")),
            Ok(Ok(reply)) => {
                let fields = outcome_fields_of(&reply);
                got = describe(&fields);
                problems.extend(mismatches(&script.expect, &fields));
            }
        }
        if let (Some(input), Some(before)) = (&input, &input_before)
            && file_bytes(input) != *before
        {
            problems.push("the caller's input table changed while the job ran".into());
        }
        problems.extend(listeners.breaches());
        if let Some(victim) = victim {
            problems.extend(victim.finish().await);
        }
        // Exec jobs are answered first and reaped after, and the kernel
        // takes a moment to tear a killed process down: allow for both.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut leftovers = processes_with_prefix(LEFTOVER_PREFIX, &job_uids);
        while !leftovers.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            leftovers = processes_with_prefix(LEFTOVER_PREFIX, &job_uids);
        }
        if !leftovers.is_empty() {
            problems.push(format!("processes outlived the job: {leftovers:?}"));
            for (pid, _) in &leftovers {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        let unhealthy = health_problem(&mut supervisor).await;
        if let Some(problem) = &unhealthy {
            problems.push(format!("after the script: {problem}"));
        }

        let verdict = if problems.is_empty() { "ok" } else { "FAILED" };
        println!("hostile[{mode}]/{name}: {verdict} ({:.2} s)", script_started.elapsed().as_secs_f64());
        if !problems.is_empty() {
            failures.push(fail(problems, &script.expect.text, &script.must_not, got));
        }
        if unhealthy.is_some() {
            println!("the supervisor is unhealthy: stopping the suite");
            break;
        }
    }

    println!("hostile[{mode}]: {ran} scripts in {:.1} s, {} failed", started.elapsed().as_secs_f64(), failures.len());
    if !failures.is_empty() {
        let mut report = String::new();
        for failure in &failures {
            let _ = writeln!(report, "\n=== hostile[{mode}]/{} FAILED", failure.script);
            for line in &failure.must_not {
                let _ = writeln!(report, "  must not: {line}");
            }
            if !failure.expected.is_empty() {
                let _ = writeln!(report, "  expected: {}", failure.expected);
            }
            for problem in &failure.problems {
                let _ = writeln!(report, "  problem:  {problem}");
            }
            if !failure.got.is_empty() {
                let _ = writeln!(report, "  got:      {}", failure.got);
            }
        }
        let names: Vec<&str> = failures.iter().map(|f| f.script.as_str()).collect();
        panic!("{} hostile script(s) failed ({mode}): {}\n{report}", failures.len(), names.join(", "));
    }
    supervisor.assert_healthy().await;
}

#[test]
fn expectation_grammar() {
    let e = parse_expectation(r#"killed signal_name=SIGSYS syscall=ptrace"#).expect("parses");
    assert_eq!((e.outcome.as_str(), e.checks.len()), ("killed", 2));
    let e = parse_expectation(r#"ok stdout_truncated=true value={"a": [1, "b c"]}"#).expect("parses");
    assert_eq!(e.checks[1].expected, r#"{"a": [1, "b c"]}"#);
    let e = parse_expectation(r#"output_rejected reason~="over the limit" stdout="""#).expect("parses");
    assert_eq!((e.checks[0].op, e.checks[0].expected.as_str()), (Op::Contains, "over the limit"));
    assert_eq!(e.checks[1].expected, "");
    assert!(parse_expectation("ok").is_err(), "an ok must pin a value or rows");
    assert!(parse_expectation("killed syscall=ptrace").is_err(), "killed must pin signal_name");
    assert!(parse_expectation("ok value=").is_err(), "value must be JSON");
    assert!(parse_expectation("ok reason=x value=1").is_err(), "ok has no reason");
    assert!(parse_expectation("exploded").is_err());
    assert!(fill_placeholders("{{NOPE}}", &[]).is_err());
    assert_eq!(fill_placeholders("a{{X}}b", &[("X", "1".into())]).expect("fills"), "a1b");
}
