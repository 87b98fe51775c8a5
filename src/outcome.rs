//! Building a job's one outcome from what was observed of it.
//!
//! Outcomes are data, not errors: an OOM kill, a timeout or a crash is as
//! ordinary a result as a table. [`classify`] is pure so every rule is
//! unit-tested; the worker module gathers the evidence it needs.

use crate::job::{EffectiveLimits, Rejection};
use crate::proto::api::{self, outcome::Kind, timeout::Clock};
use crate::proto::worker::{JobResult, job_result};
use crate::reaper::ExitStatus;

/// How the job's run ended, as the supervisor saw it.
#[derive(Debug)]
pub enum Ending {
    /// The worker sent its result.
    Reported(JobResult),
    /// The worker sent something that is not a result.
    Malformed(String),
    /// The worker died without a result.
    Died,
    WallTimeout,
    CpuTimeout,
}

impl Ending {
    /// Whether an OOM kill in the job's cgroup would change the outcome
    /// ([`classify`]): not for a result the job reported as ok, nor for a
    /// timeout. Its count is read only then.
    pub fn may_be_out_of_memory(&self) -> bool {
        !matches!(
            self,
            Self::WallTimeout
                | Self::CpuTimeout
                | Self::Reported(JobResult { result: Some(job_result::Result::Ok(_)), .. })
        )
    }
}

/// Everything the outcome depends on.
#[derive(Debug)]
pub struct Evidence {
    pub ending: Ending,
    pub exit: Option<ExitStatus>,
    pub oom_kills: u64,
    pub peak_memory_bytes: u64,
    pub limits: EffectiveLimits,
    /// The syscall seccomp refused, if the worker reported one.
    pub blocked_syscall: Option<String>,
}

/// The outcome kind. `Ok` with `has_table` still needs the table validated.
pub fn classify(evidence: Evidence) -> Kind {
    let Evidence { ending, exit, oom_kills, peak_memory_bytes, limits, blocked_syscall } = evidence;
    let out_of_memory = || {
        Kind::OutOfMemory(api::OutOfMemory { limit_bytes: limits.memory_limit_bytes, peak_bytes: peak_memory_bytes })
    };
    match ending {
        Ending::WallTimeout => timeout(Clock::Wall, limits.wall_timeout.as_millis()),
        Ending::CpuTimeout => timeout(Clock::Cpu, limits.cpu_timeout.as_millis()),
        Ending::Reported(JobResult { result: Some(job_result::Result::Ok(ok)), .. }) => {
            Kind::Ok(api::Ok { has_table: ok.wrote_table, json: ok.json })
        }
        // A process of the job was OOM-killed and the job failed: the
        // memory limit is the cause, whatever error it surfaced as.
        _ if oom_kills > 0 => out_of_memory(),
        Ending::Reported(JobResult { result: Some(job_result::Result::Error(error)), .. }) => {
            Kind::UserError(api::UserError { r#type: error.r#type, message: error.message, traceback: error.traceback })
        }
        Ending::Reported(JobResult { result: Some(job_result::Result::BadInput(reason)), .. }) => {
            Kind::Rejected(api::Rejected {
                code: api::rejected::Code::BadInputTable.into(),
                reason: format!("the input table is not a readable Arrow IPC file: {reason}"),
            })
        }
        Ending::Reported(JobResult { result: None, .. }) => output_rejected("the worker sent an empty result".into()),
        Ending::Malformed(reason) => output_rejected(format!("the worker broke the protocol: {reason}")),
        // Seccomp refused a syscall: that is how it ended, even if the
        // process was finished off by our SIGKILL.
        Ending::Died if blocked_syscall.is_some() => Kind::Killed(api::Killed {
            signal: libc::SIGSYS,
            signal_name: signal_name(libc::SIGSYS),
            syscall: blocked_syscall.unwrap_or_default(),
        }),
        Ending::Died => match exit {
            Some(ExitStatus::Signal(signal)) => {
                Kind::Killed(api::Killed { signal, signal_name: signal_name(signal), syscall: String::new() })
            }
            Some(ExitStatus::Code(code)) => Kind::UserError(api::UserError {
                r#type: "ProcessExit".into(),
                message: format!("the job's process exited with status {code} before returning a result"),
                traceback: String::new(),
            }),
            None => Kind::Killed(api::Killed { signal: 0, signal_name: "unknown".into(), syscall: String::new() }),
        },
    }
}

pub fn output_rejected(reason: String) -> Kind {
    Kind::OutputRejected(api::OutputRejected { reason })
}

/// The outcome of a job that never started.
pub fn rejected(rejection: Rejection) -> api::Outcome {
    api::Outcome {
        kind: Some(Kind::Rejected(api::Rejected { code: rejection.code.into(), reason: rejection.reason })),
        ..api::Outcome::default()
    }
}

fn timeout(clock: Clock, limit_ms: u128) -> Kind {
    Kind::Timeout(api::Timeout { clock: clock.into(), limit_ms: limit_ms as u64 })
}

/// `SIGSEGV` for 11; `SIG<n>` for numbers without a name.
pub fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal).map_or_else(|_| format!("SIG{signal}"), |s| s.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::worker::{JobError, JobOk};
    use std::time::Duration;

    const LIMITS: EffectiveLimits = EffectiveLimits {
        memory_limit_bytes: 100,
        wall_timeout: Duration::from_millis(2000),
        cpu_timeout: Duration::from_millis(1000),
    };

    fn evidence(ending: Ending, exit: Option<ExitStatus>, oom_kills: u64) -> Evidence {
        Evidence { ending, exit, oom_kills, peak_memory_bytes: 99, limits: LIMITS, blocked_syscall: None }
    }

    fn reported(result: job_result::Result) -> Ending {
        Ending::Reported(JobResult { result: Some(result), process_cpu_us: 0 })
    }

    #[test]
    fn deaths_become_killed_oom_or_exit() {
        assert_eq!(
            classify(evidence(Ending::Died, Some(ExitStatus::Signal(9)), 1)),
            Kind::OutOfMemory(api::OutOfMemory { limit_bytes: 100, peak_bytes: 99 })
        );
        assert_eq!(
            classify(evidence(Ending::Died, Some(ExitStatus::Signal(9)), 0)),
            Kind::Killed(api::Killed { signal: 9, signal_name: "SIGKILL".into(), syscall: String::new() })
        );
        assert_eq!(
            classify(evidence(Ending::Died, Some(ExitStatus::Signal(11)), 0)),
            Kind::Killed(api::Killed { signal: 11, signal_name: "SIGSEGV".into(), syscall: String::new() })
        );
        let Kind::UserError(error) = classify(evidence(Ending::Died, Some(ExitStatus::Code(3)), 0)) else {
            panic!("exit without result is a user error");
        };
        assert!(error.message.contains("status 3"));
    }

    #[test]
    fn sigsys_names_the_refused_syscall() {
        let mut evidence = evidence(Ending::Died, Some(ExitStatus::Signal(libc::SIGSYS)), 0);
        evidence.blocked_syscall = Some("ptrace".into());
        assert_eq!(
            classify(evidence),
            Kind::Killed(api::Killed { signal: libc::SIGSYS, signal_name: "SIGSYS".into(), syscall: "ptrace".into() })
        );
    }

    #[test]
    fn a_refused_syscall_is_sigsys_even_when_finished_off_by_sigkill() {
        let mut evidence = evidence(Ending::Died, Some(ExitStatus::Signal(libc::SIGKILL)), 0);
        evidence.blocked_syscall = Some("bpf".into());
        assert!(matches!(classify(evidence), Kind::Killed(k) if k.signal == libc::SIGSYS && k.syscall == "bpf"));
    }

    #[test]
    fn timeouts_win_and_carry_their_limit() {
        assert_eq!(
            classify(evidence(Ending::WallTimeout, Some(ExitStatus::Signal(9)), 1)),
            Kind::Timeout(api::Timeout { clock: Clock::Wall.into(), limit_ms: 2000 })
        );
        assert_eq!(
            classify(evidence(Ending::CpuTimeout, None, 0)),
            Kind::Timeout(api::Timeout { clock: Clock::Cpu.into(), limit_ms: 1000 })
        );
    }

    #[test]
    fn oom_kills_are_read_only_for_endings_they_can_change() {
        let error = JobError { r#type: "ValueError".into(), message: "m".into(), traceback: String::new() };
        let endings = || {
            [
                reported(job_result::Result::Ok(JobOk { wrote_table: false, json: "1".into() })),
                reported(job_result::Result::Error(error.clone())),
                reported(job_result::Result::BadInput("x".into())),
                Ending::Reported(JobResult { result: None, process_cpu_us: 0 }),
                Ending::Malformed("x".into()),
                Ending::Died,
                Ending::WallTimeout,
                Ending::CpuTimeout,
            ]
        };
        let mut skipped = 0;
        for (with_oom, without) in endings().into_iter().zip(endings()) {
            if with_oom.may_be_out_of_memory() {
                continue;
            }
            skipped += 1;
            let name = format!("{with_oom:?}");
            let exit = Some(ExitStatus::Signal(9));
            assert_eq!(classify(evidence(with_oom, exit, 1)), classify(evidence(without, exit, 0)), "{name}");
        }
        assert_eq!(skipped, 3, "ok results and both timeouts skip the read");
    }

    #[test]
    fn results_map_to_ok_user_error_or_rejected() {
        let ok = reported(job_result::Result::Ok(JobOk { wrote_table: false, json: "1".into() }));
        assert_eq!(classify(evidence(ok, None, 0)), Kind::Ok(api::Ok { has_table: false, json: "1".into() }));
        let ok = reported(job_result::Result::Ok(JobOk { wrote_table: true, json: String::new() }));
        assert!(matches!(classify(evidence(ok, None, 1)), Kind::Ok(_)), "a child's OOM kill does not undo success");
        let error = JobError { r#type: "ValueError".into(), message: "m".into(), traceback: "t".into() };
        let failed = reported(job_result::Result::Error(error.clone()));
        assert!(matches!(classify(evidence(failed, None, 0)), Kind::UserError(e) if e.r#type == "ValueError"));
        let failed = reported(job_result::Result::Error(error));
        assert!(matches!(classify(evidence(failed, None, 1)), Kind::OutOfMemory(_)));
        let bad_input = reported(job_result::Result::BadInput("x".into()));
        assert!(matches!(classify(evidence(bad_input, None, 0)), Kind::Rejected(_)));
        assert!(matches!(classify(evidence(Ending::Malformed("x".into()), None, 0)), Kind::OutputRejected(_)));
    }
}
