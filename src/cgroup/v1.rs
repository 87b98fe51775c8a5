//! cgroup v1: the `memory` hierarchy for the limit and OOM counter, `cpuacct`
//! for CPU time, `pids` (when mounted) for the process limit.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{
    CgroupError, KeptFile, Memberships, Mounts, create_dir, instance_name, join_cgroup_path, open_procs_for_writing,
    remove_stale_instances, remove_tree, write,
};

#[derive(Debug)]
pub struct Instance {
    memory: PathBuf,
    cpuacct: PathBuf,
    pids: Option<PathBuf>,
}

impl Instance {
    /// `None` when v1 `memory` or `cpuacct` is not mounted.
    pub(super) fn create(mounts: &Mounts, memberships: &Memberships) -> Result<Option<Self>, CgroupError> {
        let (Some(memory_mount), Some(cpuacct_mount)) = (mounts.v1_with("memory"), mounts.v1_with("cpuacct")) else {
            return Ok(None);
        };
        let parent = |mount: &Path, controller| join_cgroup_path(mount, memberships.v1_path(controller).unwrap_or("/"));
        let (memory_parent, cpuacct_parent) = (parent(memory_mount, "memory"), parent(cpuacct_mount, "cpuacct"));
        let pids_parent = mounts.v1_with("pids").map(|mount| parent(mount, "pids"));
        for dir in [Some(&memory_parent), Some(&cpuacct_parent), pids_parent.as_ref()].into_iter().flatten() {
            remove_stale_instances(dir);
        }
        let instance = Self {
            memory: memory_parent.join(instance_name()),
            cpuacct: cpuacct_parent.join(instance_name()),
            pids: pids_parent.map(|dir| dir.join(instance_name())),
        };
        for dir in instance.dirs() {
            create_dir(dir)?;
        }
        Ok(Some(instance))
    }

    pub(super) fn create_job(&self, name: &str) -> Result<Job, CgroupError> {
        let (memory, cpuacct) = (self.memory.join(name), self.cpuacct.join(name));
        let pids = self.pids.as_ref().map(|dir| dir.join(name));
        for dir in [Some(&memory), Some(&cpuacct), pids.as_ref()].into_iter().flatten() {
            create_dir(dir)?;
        }
        Job::new(memory, cpuacct, pids)
    }

    pub(super) fn has_pids(&self) -> bool {
        self.pids.is_some()
    }

    pub(super) fn remove(&self) {
        for dir in self.dirs() {
            remove_tree(dir);
        }
    }

    fn dirs(&self) -> Vec<&Path> {
        [Some(&self.memory), Some(&self.cpuacct), self.pids.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
            .collect()
    }
}

#[derive(Debug)]
pub struct Job {
    memory: PathBuf,
    cpuacct: PathBuf,
    pids: Option<PathBuf>,
    files: Box<JobFiles>,
    /// The limit last written; 0 before the first.
    memory_limit_bytes: AtomicU64,
}

/// The files read or written on every job, kept open. (`cgroup.procs` only
/// for writing: v1 caches its pid list per open file for a second.)
#[derive(Debug)]
struct JobFiles {
    /// Write-only, one per controller: a worker joins by writing "0" to each.
    procs: Vec<Arc<File>>,
    cpu_usage: KeptFile,
    peak: KeptFile,
    usage: KeptFile,
    oom_control: KeptFile,
    limit: KeptFile,
    /// Absent when swap accounting is off.
    memsw_limit: Option<KeptFile>,
}

impl Job {
    fn new(memory: PathBuf, cpuacct: PathBuf, pids: Option<PathBuf>) -> Result<Self, CgroupError> {
        let memsw = memory.join("memory.memsw.limit_in_bytes");
        let procs = [Some(&memory), Some(&cpuacct), pids.as_ref()]
            .into_iter()
            .flatten()
            .map(|dir| open_procs_for_writing(dir).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let files = Box::new(JobFiles {
            procs,
            cpu_usage: KeptFile::open(cpuacct.join("cpuacct.usage"), false)?,
            peak: KeptFile::open(memory.join("memory.max_usage_in_bytes"), true)?,
            usage: KeptFile::open(memory.join("memory.usage_in_bytes"), false)?,
            oom_control: KeptFile::open(memory.join("memory.oom_control"), false)?,
            limit: KeptFile::open(memory.join("memory.limit_in_bytes"), true)?,
            memsw_limit: if memsw.exists() { Some(KeptFile::open(memsw, true)?) } else { None },
        });
        Ok(Self { memory, cpuacct, pids, files, memory_limit_bytes: AtomicU64::new(0) })
    }

    pub(super) fn procs_files(&self) -> Vec<Arc<File>> {
        self.files.procs.clone()
    }

    pub(super) fn set_memory_limit(&self, bytes: u64) -> Result<(), CgroupError> {
        if self.memory_limit_bytes.load(Ordering::Relaxed) == bytes {
            return Ok(());
        }
        let value = bytes.to_string();
        match &self.files.memsw_limit {
            // memory+swap equal to memory: no swap. The kernel keeps memory
            // <= memory+swap at every step: raising, memsw goes first
            // (lowering, it is refused and goes second).
            Some(memsw) => {
                if memsw.write(&value).is_ok() {
                    self.files.limit.write(&value)?;
                } else {
                    self.files.limit.write(&value)?;
                    memsw.write(&value)?;
                }
            }
            None => self.files.limit.write(&value)?,
        }
        self.memory_limit_bytes.store(bytes, Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn cpu_usage(&self) -> Result<Duration, CgroupError> {
        Ok(Duration::from_nanos(self.files.cpu_usage.read_u64()?))
    }

    pub(super) fn peak_memory_bytes(&self) -> Result<u64, CgroupError> {
        self.files.peak.read_u64()
    }

    /// Memory still charged to the (empty) cgroup.
    pub(super) fn charged_bytes(&self) -> Result<u64, CgroupError> {
        self.files.usage.read_u64()
    }

    /// Restarts the peak from the current usage, for the next job.
    pub(super) fn reset_peak(&self) -> Result<(), CgroupError> {
        self.files.peak.write("0")
    }

    pub(super) fn oom_kills(&self) -> Result<u64, CgroupError> {
        self.files.oom_control.read_key("oom_kill")
    }

    pub(super) fn set_pids_limit(&self, max: u64) -> Result<(), CgroupError> {
        match &self.pids {
            Some(dir) => write(&dir.join("pids.max"), &max.to_string()),
            None => Ok(()),
        }
    }

    pub(super) fn dirs(&self) -> Vec<&Path> {
        [Some(&self.memory), Some(&self.cpuacct), self.pids.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
            .collect()
    }
}
