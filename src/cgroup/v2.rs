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

    pub(super) fn set_pids_limit(&self, max: u64) -> Result<(), CgroupError> {
        write(&self.dir.join("pids.max"), &max.to_string())
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

    /// A directory of plain files standing in for a cgroup2 mount.
    fn fake_mount(controllers: &str) -> (tempfile::TempDir, Mounts, Memberships) {
        let root = tempfile::tempdir().expect("tempdir");
        let own = root.path().join("system.slice/pyclave.service");
        std::fs::create_dir_all(&own).expect("mkdir");
        std::fs::write(own.join("cgroup.controllers"), controllers).expect("write");
        let mounts = Mounts { v2: Some(root.path().to_owned()), v1: Vec::new() };
        let memberships = Memberships { v2: Some("/system.slice/pyclave.service".into()), v1: Vec::new() };
        (root, mounts, memberships)
    }

    #[test]
    fn without_the_memory_controller_v2_is_not_used() {
        let (_root, mounts, memberships) = fake_mount("cpu io pids\n");
        assert!(Instance::create(&mounts, &memberships).expect("no error").is_none());
        let no_v2 = Mounts::default();
        assert!(Instance::create(&no_v2, &memberships).expect("no error").is_none());
    }

    #[test]
    fn instance_moves_the_supervisor_to_a_leaf_and_delegates_controllers() {
        let (root, mounts, memberships) = fake_mount("cpu io memory pids\n");
        let instance = Instance::create(&mounts, &memberships).expect("create").expect("v2 with memory");
        let own = root.path().join("system.slice/pyclave.service");
        let pid = std::fs::read_to_string(own.join("supervisor/cgroup.procs")).expect("leaf procs");
        assert_eq!(pid, std::process::id().to_string());
        assert_eq!(std::fs::read_to_string(own.join("cgroup.subtree_control")).expect("control"), CONTROLLERS);
        assert_eq!(instance.dir, own.join(instance_name()));
        assert_eq!(std::fs::read_to_string(instance.dir.join("cgroup.subtree_control")).expect("control"), CONTROLLERS);
    }

    #[test]
    fn job_files_are_read_and_written_with_v2_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = Job { dir: dir.path().to_owned() };
        job.set_memory_limit(64 << 20).expect("limit");
        assert_eq!(std::fs::read_to_string(dir.path().join("memory.max")).expect("max"), "67108864");
        assert_eq!(std::fs::read_to_string(dir.path().join("memory.swap.max")).expect("swap"), "0");
        std::fs::write(dir.path().join("memory.events"), "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n").expect("w");
        std::fs::write(dir.path().join("cpu.stat"), "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n").expect("w");
        std::fs::write(dir.path().join("memory.peak"), "1048576\n").expect("w");
        assert_eq!(job.oom_kills().expect("oom"), 1);
        assert_eq!(job.cpu_usage().expect("cpu"), Duration::from_micros(2500));
        assert_eq!(job.peak_memory_bytes().expect("peak"), 1 << 20);
        job.kill().expect("kill");
        assert_eq!(std::fs::read_to_string(dir.path().join("cgroup.kill")).expect("kill"), "1");
    }
}
