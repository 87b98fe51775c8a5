//! cgroup v2: one unified directory per job with `memory`, `cpu` and `pids`.
//!
//! v2 forbids processes in a cgroup that delegates controllers to children,
//! so the supervisor first moves itself into a `supervisor` leaf of its own
//! cgroup, then enables the controllers for the instance directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    CgroupError, Memberships, Mounts, create_dir, instance_name, join_cgroup_path, read, read_key,
    remove_stale_instances, remove_tree, write,
};

const CONTROLLERS: &str = "+memory +cpu +pids";

#[derive(Debug)]
pub struct Instance {
    dir: PathBuf,
}

impl Instance {
    /// `None` when no cgroup2 mount offers the memory controller to us.
    pub(super) fn create(mounts: &Mounts, memberships: &Memberships) -> Result<Option<Self>, CgroupError> {
        let (Some(mount), Some(own)) = (&mounts.v2, &memberships.v2) else { return Ok(None) };
        let base = join_cgroup_path(mount, own);
        let Ok(controllers) = read(&base.join("cgroup.controllers")) else { return Ok(None) };
        if !has_controller(&controllers, "memory") {
            return Ok(None);
        }
        let leaf = base.join("supervisor");
        create_dir(&leaf)?;
        write(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
        write(&base.join("cgroup.subtree_control"), CONTROLLERS)?;
        remove_stale_instances(&base);
        let dir = base.join(instance_name());
        create_dir(&dir)?;
        write(&dir.join("cgroup.subtree_control"), CONTROLLERS)?;
        Ok(Some(Self { dir }))
    }

    pub(super) fn create_job(&self, name: &str) -> Result<Job, CgroupError> {
        let job = Job { dir: self.dir.join(name) };
        create_dir(&job.dir)?;
        Ok(job)
    }

    pub(super) fn remove(&self) {
        remove_tree(&self.dir);
    }
}

fn has_controller(controllers: &str, name: &str) -> bool {
    controllers.split_whitespace().any(|c| c == name)
}

#[derive(Debug)]
pub struct Job {
    dir: PathBuf,
}

impl Job {
    pub(super) fn set_memory_limit(&self, bytes: u64) -> Result<(), CgroupError> {
        write(&self.dir.join("memory.max"), &bytes.to_string())?;
        write(&self.dir.join("memory.swap.max"), "0")
    }

    pub(super) fn cpu_usage(&self) -> Result<Duration, CgroupError> {
        Ok(Duration::from_micros(read_key(&self.dir.join("cpu.stat"), "usage_usec")?))
    }

    pub(super) fn peak_memory_bytes(&self) -> Result<u64, CgroupError> {
        super::read_u64(&self.dir.join("memory.peak"))
    }

    pub(super) fn oom_kills(&self) -> Result<u64, CgroupError> {
        read_key(&self.dir.join("memory.events"), "oom_kill")
    }

    /// Kills every process in the cgroup at once (kernel 5.14+).
    pub(super) fn kill(&self) -> Result<(), CgroupError> {
        write(&self.dir.join("cgroup.kill"), "1")
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_lists_are_matched_by_word() {
        assert!(has_controller("cpuset cpu io memory pids\n", "memory"));
        assert!(!has_controller("cpuset cpu io hugetlb pids", "memory"));
        assert!(!has_controller("memory_extra", "memory"));
    }

    #[test]
    fn job_files_are_the_v2_names() {
        let job = Job { dir: PathBuf::from("/nonexistent/cg") };
        let error = job.set_memory_limit(1).expect_err("no such directory");
        assert!(error.to_string().contains("/nonexistent/cg/memory.max"), "{error}");
        let error = job.oom_kills().expect_err("no such directory");
        assert!(error.to_string().contains("memory.events"), "{error}");
    }
}
