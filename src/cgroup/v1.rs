//! cgroup v1: the `memory` hierarchy for the limit and OOM counter, `cpuacct`
//! for CPU time.

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
}

impl Instance {
    /// `None` when v1 `memory` or `cpuacct` is not mounted.
    pub(super) fn create(mounts: &Mounts, memberships: &Memberships) -> Result<Option<Self>, CgroupError> {
        let (Some(memory_mount), Some(cpuacct_mount)) = (mounts.v1_with("memory"), mounts.v1_with("cpuacct")) else {
            return Ok(None);
        };
        let parent = |mount: &Path, controller| join_cgroup_path(mount, memberships.v1_path(controller).unwrap_or("/"));
        let (memory_parent, cpuacct_parent) = (parent(memory_mount, "memory"), parent(cpuacct_mount, "cpuacct"));
        remove_stale_instances(&memory_parent);
        remove_stale_instances(&cpuacct_parent);
        let instance =
            Self { memory: memory_parent.join(instance_name()), cpuacct: cpuacct_parent.join(instance_name()) };
        create_dir(&instance.memory)?;
        create_dir(&instance.cpuacct)?;
        Ok(Some(instance))
    }

    pub(super) fn create_job(&self, name: &str) -> Result<Job, CgroupError> {
        let job = Job { memory: self.memory.join(name), cpuacct: self.cpuacct.join(name) };
        create_dir(&job.memory)?;
        create_dir(&job.cpuacct)?;
        Ok(job)
    }

    pub(super) fn remove(&self) {
        remove_tree(&self.memory);
        remove_tree(&self.cpuacct);
    }
}

#[derive(Debug)]
pub struct Job {
    memory: PathBuf,
    cpuacct: PathBuf,
}

impl Job {
    pub(super) fn set_memory_limit(&self, bytes: u64) -> Result<(), CgroupError> {
        write(&self.memory.join("memory.limit_in_bytes"), &bytes.to_string())?;
        // memory+swap equal to memory: no swap. Absent when swap accounting is off.
        let memsw = self.memory.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write(&memsw, &bytes.to_string())?;
        }
        Ok(())
    }

    pub(super) fn cpu_usage(&self) -> Result<Duration, CgroupError> {
        Ok(Duration::from_nanos(read_u64(&self.cpuacct.join("cpuacct.usage"))?))
    }

    pub(super) fn peak_memory_bytes(&self) -> Result<u64, CgroupError> {
        read_u64(&self.memory.join("memory.max_usage_in_bytes"))
    }

    pub(super) fn oom_kills(&self) -> Result<u64, CgroupError> {
        read_key(&self.memory.join("memory.oom_control"), "oom_kill")
    }

    pub(super) fn dirs(&self) -> Vec<&Path> {
        vec![&self.memory, &self.cpuacct]
    }
}
