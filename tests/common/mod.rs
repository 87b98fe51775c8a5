//! A real supervisor (the `pyclave` binary) on a temporary socket, with the
//! project's venv as its Python, and helpers to talk to it.

#![allow(dead_code)] // each test crate uses its own subset of these helpers

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

mod rootless;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use pyclave::client::{Client, Reply};
use pyclave::proto::api::{Job, JobKind, Limits, job, outcome::Kind};

pub struct Supervisor {
    child: Child,
    /// The supervisor process (in rootless mode the child is its shim).
    pid: u32,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// Rootless only: the cgroups delegated to it, removed after it exits.
    delegated: Vec<PathBuf>,
}

/// Where [`Supervisor::start_logged`] writes the supervisor's log, in its directory.
const LOG_FILE: &str = "serve.log";

/// How the test starts `pyclave serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    Root,
    /// As [`ROOTLESS_USER`], with or without a delegated cgroup.
    Rootless {
        delegated_cgroup: bool,
    },
}

/// The unprivileged user rootless tests run the supervisor as; it has a
/// subordinate id range (`scripts/setup.sh` creates both).
pub const ROOTLESS_USER: &str = "pyclave-rootless";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn venv_python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(python.exists(), "run scripts/setup.sh first: {} is missing", python.display());
    python
}

impl Supervisor {
    /// Starts `pyclave serve` with `extra_config` (TOML) appended to a
    /// config that points at the venv, and waits until it accepts.
    pub fn start(extra_config: &str) -> Self {
        Self::start_with_env(extra_config, &[])
    }

    pub fn start_with_env(extra_config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_as(Privilege::Root, extra_config, env)
    }

    pub fn start_as(privilege: Privilege, extra_config: &str, env: &[(&str, &str)]) -> Self {
        let (mut command, dir, socket, delegated) = serve_command(privilege, extra_config);
        Self::launch(command.envs(env.iter().copied()), privilege, dir, socket, delegated)
    }

    /// Starts like [`Supervisor::start`], its log (at debug level) written
    /// to a file that [`Supervisor::log`] reads.
    pub fn start_logged(extra_config: &str) -> Self {
        let (mut command, dir, socket, delegated) = serve_command(Privilege::Root, extra_config);
        let log = std::fs::File::create(dir.path().join(LOG_FILE)).expect("create the log file");
        Self::launch(command.stderr(log), Privilege::Root, dir, socket, delegated)
    }

    /// What a supervisor started by [`Supervisor::start_logged`] has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(LOG_FILE)).expect("the supervisor's log")
    }

    fn launch(
        command: &mut Command,
        privilege: Privilege,
        dir: tempfile::TempDir,
        socket: PathBuf,
        delegated: Vec<PathBuf>,
    ) -> Self {
        let child = command.spawn().expect("start pyclave serve");
        let mut supervisor = Self { pid: child.id(), child, dir, socket, delegated };
        supervisor.wait_ready();
        if privilege != Privilege::Root {
            let shim = supervisor.child.id() as i32;
            supervisor.pid = *children_of(shim).first().expect("the rootless shim runs the supervisor") as u32;
        }
        supervisor
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("supervisor did not start listening on {}", self.socket.display());
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.socket).await.expect("connect")
    }

    /// The supervisor process's host pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The supervisor process is still running.
    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Asserts the supervisor is alive and still runs a normal job.
    pub async fn assert_healthy(&mut self) {
        assert!(self.is_alive(), "the supervisor died");
        let reply = self.client().await.run(exec("def main():\n    return 'alive'\n"), None).await.expect("run");
        assert_eq!(ok_json(&reply), "\"alive\"");
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_delegated_cgroups(&self.delegated);
    }
}

/// `pyclave serve` on a fresh socket with `extra_config` (TOML) appended to
/// a config that points at the venv (unless it names a `python` itself);
/// with its directory, socket and (rootless) delegated cgroups.
pub fn serve_command(privilege: Privilege, extra_config: &str) -> (Command, tempfile::TempDir, PathBuf, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("pyclave.sock");
    let config = dir.path().join("pyclave.toml");
    let mut text = extra_config.to_owned();
    if !text.contains("[pool]") {
        text.push_str("\n[pool]\n");
    }
    if !text.contains("\npython = ") {
        text = text.replacen("[pool]", &format!("[pool]\npython = {:?}", venv_python().display().to_string()), 1);
    }
    std::fs::write(&config, text).expect("write config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_pyclave"));
    command
        .args(["serve", "--socket"])
        .arg(&socket)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "pyclave=debug")
        .stdin(Stdio::null());
    let delegated = match privilege {
        Privilege::Root => Vec::new(),
        Privilege::Rootless { delegated_cgroup } => rootless::prepare(&mut command, dir.path(), delegated_cgroup),
    };
    (command, dir, socket, delegated)
}

/// The subordinate uids of [`ROOTLESS_USER`]; a rootless supervisor maps
/// its workers' uids (from `uid_base`) to these, in order.
pub fn subordinate_uids() -> std::ops::Range<u32> {
    let text = std::fs::read_to_string("/etc/subuid").expect("/etc/subuid");
    let line =
        text.lines().find(|line| line.starts_with(&format!("{ROOTLESS_USER}:"))).expect("a range (scripts/setup.sh)");
    let mut fields = line.split(':').skip(1).map(|n| n.parse::<u32>().expect("number"));
    let (start, count) = (fields.next().expect("start"), fields.next().expect("count"));
    start..start + count
}

/// Host pids of the live children of `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|pid| pid.parse::<i32>().ok()))
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)) == Some(&parent.to_string())
        })
        .filter(|pid| process_exists(*pid))
        .collect()
}

fn remove_delegated_cgroups(dirs: &[PathBuf]) {
    for dir in dirs {
        // The supervisor removed its own cgroups below; give the kernel a
        // moment to let go of the exited processes.
        for _ in 0..100 {
            if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The value of `name` (e.g. `"worker="`) in a line of the supervisor's log.
pub fn log_field(line: &str, name: &str) -> Option<String> {
    line.split_whitespace().find_map(|token| token.strip_prefix(name)).map(|value| value.trim_matches('"').to_owned())
}

pub fn exec(code: &str) -> Job {
    Job { kind: JobKind::Exec.into(), code: Some(job::Code::InlineCode(code.into())), ..Job::default() }
}

pub fn transform(code: &str) -> Job {
    Job { kind: JobKind::Transform.into(), code: Some(job::Code::InlineCode(code.into())), ..Job::default() }
}

pub fn with_limits(mut job: Job, memory_limit_bytes: u64, wall_timeout_ms: u64, cpu_timeout_ms: u64) -> Job {
    job.limits = Some(Limits { memory_limit_bytes, wall_timeout_ms, cpu_timeout_ms });
    job
}

pub fn kind(reply: &Reply) -> &Kind {
    reply.outcome.kind.as_ref().expect("outcome has a kind")
}

/// The JSON of an `ok` exec outcome; panics with the outcome otherwise.
pub fn ok_json(reply: &Reply) -> String {
    match kind(reply) {
        Kind::Ok(ok) => ok.json.clone(),
        other => panic!("expected ok, got {other:?} (stderr: {})", stderr(reply)),
    }
}

pub fn stdout(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.outcome.stdout.clone().unwrap_or_default().data).into_owned()
}

pub fn stderr(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.outcome.stderr.clone().unwrap_or_default().data).into_owned()
}

/// A table with an Int64 column `x` = 0..rows and a Utf8 column `s`.
pub fn sample_batch(rows: i64) -> RecordBatch {
    let schema =
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false), Field::new("s", DataType::Utf8, false)]));
    let x = Int64Array::from_iter_values(0..rows);
    let s = StringArray::from_iter_values((0..rows).map(|i| format!("row{}", i % 100)));
    RecordBatch::try_new(schema, vec![Arc::new(x), Arc::new(s)]).expect("batch")
}

/// Writes `batch` as an Arrow IPC file into a memfd.
pub fn arrow_memfd(batch: &RecordBatch) -> OwnedFd {
    let memfd = nix::sys::memfd::memfd_create(c"test-input", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).expect("memfd");
    let mut file = std::fs::File::from(memfd);
    {
        let mut writer = arrow_ipc::writer::FileWriter::try_new(&mut file, &batch.schema()).expect("writer");
        writer.write(batch).expect("write");
        writer.finish().expect("finish");
    }
    file.flush().expect("flush");
    OwnedFd::from(file)
}

/// Reads an output table fd into batches.
pub fn read_table(fd: &OwnedFd) -> Vec<RecordBatch> {
    let file = std::fs::File::from(fd.try_clone().expect("dup"));
    let reader = arrow_ipc::reader::FileReader::try_new(file, None).expect("valid Arrow file");
    reader.collect::<Result<_, _>>().expect("batches")
}

pub fn process_exists(pid: i32) -> bool {
    // A zombie is gone for our purposes: it runs nothing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting until {what}");
}

pub fn write_file(path: &Path, contents: &str) {
    std::fs::write(path, contents).expect("write file");
}

pub fn as_fd(fd: &OwnedFd) -> Option<std::os::fd::BorrowedFd<'_>> {
    Some(fd.as_fd())
}

/// Python that names the calling process `name` (its `/proc/PID/comm`, at
/// most 15 bytes), so the test can find a job's processes from the host.
pub fn py_name_process(name: &str) -> String {
    format!("__import__('ctypes').CDLL(None).prctl(15, {name:?}.encode(), 0, 0, 0)")
}

/// Host pids of live processes whose comm is `name`.
pub fn named_processes(name: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|pid| pid.parse::<i32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim_end() == name))
        .filter(|pid| process_exists(*pid))
        .collect()
}

/// A unique process name for one test.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}-{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Job code that names itself `job`, starts a child named `child` that
/// sleeps, and sleeps itself.
pub fn sleeping_job_with_child(job: &str, child: &str) -> String {
    format!(
        "import subprocess, sys, time\ndef main():\n    {name_job}\n    subprocess.Popen([sys.executable, '-c', {child_code:?}])\n    time.sleep(1000)\n",
        name_job = py_name_process(job),
        child_code = format!("{}; __import__('time').sleep(1000)", py_name_process(child)),
    )
}

/// Host pids of the supervisor's zygote processes (its Python children).
pub fn zygote_pids(supervisor: &Supervisor) -> Vec<i32> {
    children_of(supervisor.pid as i32)
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains("zygote.main")
        })
        .collect()
}

/// The supervisor's one zygote.
pub fn zygote_pid(supervisor: &Supervisor) -> i32 {
    let pids = zygote_pids(supervisor);
    assert_eq!(pids.len(), 1, "expected one zygote, found {pids:?}");
    pids[0]
}
