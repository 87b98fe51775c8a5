//! A worker and every process its job starts: measured, limited and killed
//! as one. Through the job's cgroup when the host gives us one; otherwise
//! (the `memory_limit` layer lowered, e.g. rootless without a delegated
//! cgroup) through the worker process itself, which is pid 1 of the job's
//! pid namespace: killing it kills the namespace, and its own CPU time and
//! peak memory are what can be measured.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cgroup::{CgroupError, Cgroups, JobCgroup};

/// Rounds of "is the worker gone?" after SIGKILL before giving up.
const KILL_WAIT_ROUNDS: usize = 2000;

#[derive(Debug)]
pub enum JobTree {
    Cgroup {
        cgroup: JobCgroup,
        cgroups: Arc<Cgroups>,
    },
    /// No cgroup: the worker's pid (in the supervisor's pid namespace).
    Worker(Pid),
}

impl JobTree {
    /// The files a worker writes to join the job's cgroup (none without one).
    pub fn procs_files(&self) -> Result<Vec<Arc<std::fs::File>>, CgroupError> {
        match self {
            Self::Cgroup { cgroup, .. } => cgroup.procs_files(),
            Self::Worker(_) => Ok(Vec::new()),
        }
    }

    /// Sets the job's memory limit; without a cgroup there is none to set
    /// (the outcome lists `memory_limit` among the disabled layers).
    pub fn set_memory_limit(&self, bytes: u64) -> Result<(), CgroupError> {
        match self {
            Self::Cgroup { cgroup, .. } => cgroup.set_memory_limit(bytes),
            Self::Worker(_) => Ok(()),
        }
    }

    /// CPU time used so far: the whole cgroup, or the worker and the
    /// children it has waited for.
    pub fn cpu_usage(&self) -> Duration {
        match self {
            Self::Cgroup { cgroup, .. } => cgroup.cpu_usage().unwrap_or_default(),
            Self::Worker(pid) => process_cpu_time(*pid).unwrap_or_default(),
        }
    }

    /// Highest memory use: the cgroup's, or the worker's resident peak.
    pub fn peak_memory_bytes(&self) -> u64 {
        match self {
            Self::Cgroup { cgroup, .. } => cgroup.peak_memory_bytes().unwrap_or_default(),
            Self::Worker(pid) => process_peak_rss(*pid).unwrap_or_default(),
        }
    }

    /// OOM kills in the job's cgroup (none can be told apart without one).
    pub fn oom_kills(&self) -> u64 {
        match self {
            Self::Cgroup { cgroup, .. } => cgroup.oom_kills().unwrap_or_default(),
            Self::Worker(_) => 0,
        }
    }

    /// SIGKILLs everything of the job and returns once it is gone.
    pub async fn kill_all(&self) -> Result<(), CgroupError> {
        match self {
            Self::Cgroup { cgroup, .. } => cgroup.kill_all().await,
            Self::Worker(pid) => {
                // pid 1 of the job's pid namespace: the kernel kills the
                // rest of the namespace when it dies.
                let _ = kill(*pid, Signal::SIGKILL);
                for _ in 0..KILL_WAIT_ROUNDS {
                    if !is_running(*pid) {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(CgroupError::Unkillable { path: format!("/proc/{pid}").into() })
            }
        }
    }

    /// Hands an emptied job cgroup back for reuse.
    pub fn release(self) {
        if let Self::Cgroup { cgroup, cgroups } = self {
            cgroups.release_job(cgroup);
        }
    }
}

/// Alive and not yet a zombie (a zombie runs nothing).
fn is_running(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

/// utime + stime + cutime + cstime of `/proc/<pid>/stat`.
fn process_cpu_time(pid: Pid) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| {
        let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
        Duration::from_micros(ticks * 1_000_000 / per_second.max(1) as u64)
    })
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // Fields after the command (which may hold spaces and parentheses):
    // state is field 3, utime..cstime are fields 14..17.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields.get(11..15)?.iter().map(|field| field.parse::<u64>().ok()).sum()
}

/// VmHWM of `/proc/<pid>/status`, in bytes.
fn process_peak_rss(pid: Pid) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_peak_rss(&status)
}

fn parse_peak_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_fields_parse() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 2 1 20 0 1 0 100 1000 10";
        assert_eq!(parse_cpu_ticks(stat), Some(7 + 3 + 2 + 1));
        assert_eq!(parse_cpu_ticks("42 (x) S 1"), None);
        assert_eq!(parse_peak_rss("Name:\tpython\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n"), Some(2048 * 1024));
        assert_eq!(parse_peak_rss("Name:\tpython\n"), None);
    }

    #[tokio::test]
    async fn a_bare_worker_is_measured_and_killed_through_proc() {
        let mut child =
            std::process::Command::new("sh").args(["-c", "i=0; while :; do i=$((i+1)); done"]).spawn().expect("sh");
        let tree = JobTree::Worker(Pid::from_raw(child.id() as i32));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(tree.cpu_usage() > Duration::ZERO, "a spinning process uses CPU");
        assert!(tree.peak_memory_bytes() > 0);
        // The child is ours to reap: do it while kill_all waits.
        let reaper = std::thread::spawn(move || child.wait());
        tree.kill_all().await.expect("killed");
        assert!(!reaper.join().expect("join").expect("wait").success());
    }
}
