//! cgroup v1: the `memory` hierarchy for the limit and OOM counter, `cpuacct`
//! for CPU time, `pids` (when mounted) for the process limit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    CgroupError, Memberships, Mounts, create_dir, instance_name, join_cgroup_path, read_key, read_u64,
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
        let job = Job {
            memory: self.memory.join(name),
            cpuacct: self.cpuacct.join(name),
            pids: self.pids.as_ref().map(|dir| dir.join(name)),
        };
        for dir in job.dirs() {
            create_dir(dir)?;
        }
        Ok(job)
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
}

impl Job {
    pub(super) fn set_memory_limit(&self, bytes: u64) -> Result<(), CgroupError> {
        let memory = self.memory.join("memory.limit_in_bytes");
        // memory+swap equal to memory: no swap. Absent when swap accounting is off.
        let memsw = self.memory.join("memory.memsw.limit_in_bytes");
        if !memsw.exists() {
            return write(&memory, &bytes.to_string());
        }
        // The kernel keeps memory <= memory+swap at every step: raising,
        // memsw goes first (lowering, it is refused and goes second).
        if write(&memsw, &bytes.to_string()).is_ok() {
            write(&memory, &bytes.to_string())
        } else {
            write(&memory, &bytes.to_string())?;
            write(&memsw, &bytes.to_string())
        }
    }

    pub(super) fn cpu_usage(&self) -> Result<Duration, CgroupError> {
        Ok(Duration::from_nanos(read_u64(&self.cpuacct.join("cpuacct.usage"))?))
    }

    pub(super) fn peak_memory_bytes(&self) -> Result<u64, CgroupError> {
        read_u64(&self.memory.join("memory.max_usage_in_bytes"))
    }

    /// Memory still charged to the (empty) cgroup.
    pub(super) fn charged_bytes(&self) -> Result<u64, CgroupError> {
        read_u64(&self.memory.join("memory.usage_in_bytes"))
    }

    /// Restarts the peak from the current usage, for the next job.
    pub(super) fn reset_peak(&self) -> Result<(), CgroupError> {
        write(&self.memory.join("memory.max_usage_in_bytes"), "0")
    }

    pub(super) fn oom_kills(&self) -> Result<u64, CgroupError> {
        read_key(&self.memory.join("memory.oom_control"), "oom_kill")
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
