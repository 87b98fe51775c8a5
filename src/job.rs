//! Turns a caller's `Job` into a [`JobSpec`] a worker can run, or a
//! [`Rejection`]: code resolved and capped, params checked, limits merged
//! (a job may lower the server's limits, never raise them), input table fd
//! re-opened read-only.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::stat::{Mode, SFlag, fstat};

use crate::config::JobLimits;
use crate::proto::api::{self, JobKind, job, rejected};
use crate::proto::worker::worker_job;
use crate::scripts::{ScriptDir, ScriptError};

/// A job ready for a worker.
#[derive(Debug)]
pub struct JobSpec {
    pub kind: worker_job::Kind,
    pub code: String,
    /// Shown in tracebacks.
    pub filename: String,
    pub params_json: String,
    pub limits: EffectiveLimits,
    /// Read-only description of the caller's input table.
    pub input: Option<OwnedFd>,
}

impl JobSpec {
    /// Exec jobs return JSON; every other kind may produce a table.
    pub fn wants_output_table(&self) -> bool {
        self.kind != worker_job::Kind::Exec
    }
}

/// The limits a job runs under, after merging with the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveLimits {
    pub memory_limit_bytes: u64,
    pub wall_timeout: Duration,
    pub cpu_timeout: Duration,
}

/// Why a job never started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: rejected::Code,
    pub reason: String,
}

impl Rejection {
    pub fn new(code: rejected::Code, reason: impl Into<String>) -> Self {
        Self { code, reason: reason.into() }
    }
}

pub fn prepare(
    request: api::Job,
    input: Option<OwnedFd>,
    server: &JobLimits,
    scripts: Option<&ScriptDir>,
) -> Result<JobSpec, Rejection> {
    let kind = match request.kind() {
        JobKind::Auto => worker_job::Kind::Auto,
        JobKind::Transform => worker_job::Kind::Transform,
        JobKind::Exec => worker_job::Kind::Exec,
    };
    let limits = merge_limits(request.limits.unwrap_or_default(), server)?;
    let (code, filename) = match request.code {
        Some(job::Code::InlineCode(code)) => {
            if code.len() as u64 > server.max_code_bytes {
                return Err(Rejection::new(
                    rejected::Code::CodeTooLarge,
                    format!("code is {} bytes; the limit is {}", code.len(), server.max_code_bytes),
                ));
            }
            (code, "<inline>".to_owned())
        }
        Some(job::Code::ScriptName(name)) => {
            let code = read_script(scripts, &name, server.max_code_bytes)?;
            (code, name)
        }
        None => {
            return Err(Rejection::new(rejected::Code::BadRequest, "the job has neither inline_code nor script_name"));
        }
    };
    check_params(&request.params_json, server.max_params_bytes)?;
    let input = match (request.has_input_table, input) {
        (true, Some(fd)) => Some(reopen_read_only(&fd)?),
        (false, None) => None,
        _ => return Err(Rejection::new(rejected::Code::BadRequest, "has_input_table does not match the fds sent")),
    };
    Ok(JobSpec { kind, code, filename, params_json: request.params_json, limits, input })
}

fn merge_limits(requested: api::Limits, server: &JobLimits) -> Result<EffectiveLimits, Rejection> {
    let pick = |name: &str, requested: u64, ceiling: u64| {
        if requested > ceiling {
            Err(Rejection::new(
                rejected::Code::LimitTooHigh,
                format!("{name} {requested} exceeds the server's limit of {ceiling}"),
            ))
        } else if requested == 0 {
            Ok(ceiling)
        } else {
            Ok(requested)
        }
    };
    Ok(EffectiveLimits {
        memory_limit_bytes: pick("memory_limit_bytes", requested.memory_limit_bytes, server.memory_limit_bytes)?,
        wall_timeout: Duration::from_millis(pick(
            "wall_timeout_ms",
            requested.wall_timeout_ms,
            server.wall_timeout_ms,
        )?),
        cpu_timeout: Duration::from_millis(pick("cpu_timeout_ms", requested.cpu_timeout_ms, server.cpu_timeout_ms)?),
    })
}

fn read_script(scripts: Option<&ScriptDir>, name: &str, max_bytes: u64) -> Result<String, Rejection> {
    let Some(scripts) = scripts else {
        return Err(Rejection::new(rejected::Code::ScriptNotFound, ScriptError::Disabled.to_string()));
    };
    scripts.read(name, max_bytes).map_err(|error| {
        let code = match error {
            ScriptError::TooLarge { .. } => rejected::Code::CodeTooLarge,
            _ => rejected::Code::ScriptNotFound,
        };
        Rejection::new(code, error.to_string())
    })
}

fn check_params(params_json: &str, max_bytes: u64) -> Result<(), Rejection> {
    if params_json.len() as u64 > max_bytes {
        return Err(Rejection::new(
            rejected::Code::BadRequest,
            format!("params_json is {} bytes; the limit is {max_bytes}", params_json.len()),
        ));
    }
    if params_json.is_empty() {
        return Ok(());
    }
    match serde_json::from_str::<serde_json::Value>(params_json) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(Rejection::new(rejected::Code::BadRequest, "params_json must be a JSON object")),
        Err(error) => {
            Err(Rejection::new(rejected::Code::BadRequest, format!("params_json is not valid JSON: {error}")))
        }
    }
}

/// A fresh read-only open file description of the caller's table.
///
/// The caller must have been able to read it: `O_PATH` descriptors and
/// write-only ones are refused, so the supervisor never reads a file on the
/// caller's behalf that the caller could not read itself.
fn reopen_read_only(fd: &OwnedFd) -> Result<OwnedFd, Rejection> {
    let bad = |reason: String| Rejection::new(rejected::Code::BadInputTable, reason);
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL).map_err(|e| bad(format!("input fd: {e}")))?;
    let flags = OFlag::from_bits_truncate(flags);
    if flags.contains(OFlag::O_PATH) || (flags & OFlag::O_ACCMODE) == OFlag::O_WRONLY {
        return Err(bad("the input table fd must be open for reading".into()));
    }
    let stat = fstat(fd).map_err(|e| bad(format!("input fd: {e}")))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(bad("the input table must be a regular file or memfd".into()));
    }
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::fcntl::open(path.as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| bad(format!("cannot re-open the input table read-only: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn inline(code: &str) -> api::Job {
        api::Job { code: Some(job::Code::InlineCode(code.into())), ..api::Job::default() }
    }

    #[test]
    fn limits_may_be_lowered_not_raised() {
        let server = JobLimits::default();
        let mut request = inline("x");
        request.limits = Some(api::Limits { memory_limit_bytes: 64 << 20, wall_timeout_ms: 0, cpu_timeout_ms: 5 });
        let spec = prepare(request, None, &server, None).expect("valid");
        assert_eq!(spec.limits.memory_limit_bytes, 64 << 20);
        assert_eq!(spec.limits.wall_timeout, Duration::from_millis(server.wall_timeout_ms));
        assert_eq!(spec.limits.cpu_timeout, Duration::from_millis(5));

        let mut request = inline("x");
        request.limits = Some(api::Limits { wall_timeout_ms: server.wall_timeout_ms + 1, ..Default::default() });
        let rejection = prepare(request, None, &server, None).expect_err("raised");
        assert_eq!(rejection.code, rejected::Code::LimitTooHigh);
        assert!(rejection.reason.contains("wall_timeout_ms"), "{}", rejection.reason);
    }

    #[test]
    fn code_and_params_are_checked() {
        let server = JobLimits { max_code_bytes: 4, ..JobLimits::default() };
        assert_eq!(prepare(inline("12345"), None, &server, None).expect_err("big").code, rejected::Code::CodeTooLarge);
        let missing = api::Job::default();
        assert_eq!(prepare(missing, None, &server, None).expect_err("no code").code, rejected::Code::BadRequest);
        for params in ["[1]", "{", "3"] {
            let mut request = inline("x");
            request.params_json = params.into();
            assert_eq!(prepare(request, None, &server, None).expect_err(params).code, rejected::Code::BadRequest);
        }
        let mut request = inline("x");
        request.params_json = r#"{"k": 2}"#.into();
        assert!(prepare(request, None, &server, None).is_ok());
    }

    #[test]
    fn scripts_need_a_directory() {
        let request = api::Job { code: Some(job::Code::ScriptName("a.py".into())), ..api::Job::default() };
        let rejection = prepare(request, None, &JobLimits::default(), None).expect_err("disabled");
        assert_eq!(rejection.code, rejected::Code::ScriptNotFound);
    }

    #[test]
    fn input_is_reopened_read_only_and_must_be_readable() {
        let file = tempfile::tempfile().expect("tempfile");
        let reopened = reopen_read_only(&OwnedFd::from(file)).expect("regular file");
        let flags = OFlag::from_bits_truncate(fcntl(reopened.as_fd(), FcntlArg::F_GETFL).expect("flags"));
        assert_eq!(flags & OFlag::O_ACCMODE, OFlag::O_RDONLY);

        let path_only =
            nix::fcntl::open("/etc/hostname", OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).expect("O_PATH");
        assert_eq!(reopen_read_only(&path_only).expect_err("O_PATH").code, rejected::Code::BadInputTable);
        let directory = nix::fcntl::open("/", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).expect("dir");
        assert_eq!(reopen_read_only(&directory).expect_err("dir").code, rejected::Code::BadInputTable);
        let dir = tempfile::tempdir().expect("tempdir");
        let write_only = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("w"))
            .expect("open");
        assert_eq!(
            reopen_read_only(&OwnedFd::from(write_only)).expect_err("O_WRONLY").code,
            rejected::Code::BadInputTable
        );
    }
}
