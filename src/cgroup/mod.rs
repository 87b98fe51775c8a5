//! Per-job cgroups: the memory limit (no swap), CPU accounting, OOM detection
//! from the kernel's OOM-kill counter, and killing a job's whole process tree.
//!
//! cgroup v2 is used when its memory controller is available to us; otherwise
//! the v1 `memory` and `cpuacct` hierarchies. Job cgroups live in an instance
//! directory `pyclave-<supervisor's host pid>` below the supervisor's own cgroup, so
//! the limits of whoever runs the supervisor still apply; instance directories
//! left by a crashed run are cleaned at start-up.

mod v1;
mod v2;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const INSTANCE_PREFIX: &str = "pyclave-";
/// Rounds of "list processes, SIGKILL them" before giving up on a job cgroup.
const KILL_ROUNDS: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no usable cgroup hierarchy with a memory controller (need cgroup v2 with `memory`, or v1 `memory` and `cpuacct`)"
    )]
    NoMemoryController,
    #[error("cgroup file {path}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unexpected content in cgroup file {path}")]
    Format { path: PathBuf },
    #[error("processes of cgroup {path} survived {KILL_ROUNDS} rounds of SIGKILL")]
    Unkillable { path: PathBuf },
}

/// A released job cgroup charged with more than this (page cache, an output
/// table the caller still holds) is removed instead of reused: its charges
/// would count against the next job.
const REUSE_MAX_CHARGED_BYTES: u64 = 4 * 1024 * 1024;

/// Which cgroup version the host gives us, with the instance directories,
/// and the job cgroups that are free for reuse (creating and removing a
/// cgroup per job costs more than the rest of the supervisor's work).
#[derive(Debug)]
pub struct Cgroups {
    layout: Layout,
    free: std::sync::Mutex<Vec<JobCgroup>>,
    next_job: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
enum Layout {
    V1(v1::Instance),
    V2(v2::Instance),
}

impl Cgroups {
    /// Detects the hierarchy, cleans instances left by crashed runs and
    /// creates this run's instance directory.
    pub fn init() -> Result<Self, CgroupError> {
        let mountinfo = read(Path::new("/proc/self/mountinfo"))?;
        let own = read(Path::new("/proc/self/cgroup"))?;
        let mounts = Mounts::parse(&mountinfo);
        let memberships = Memberships::parse(&own);
        let layout = if let Some(instance) = v2::Instance::create(&mounts, &memberships)? {
            Layout::V2(instance)
        } else if let Some(instance) = v1::Instance::create(&mounts, &memberships)? {
            Layout::V1(instance)
        } else {
            return Err(CgroupError::NoMemoryController);
        };
        Ok(Self { layout, free: std::sync::Mutex::new(Vec::new()), next_job: std::sync::atomic::AtomicU64::new(1) })
    }

    /// "v1" or "v2", for start-up logs.
    pub fn version(&self) -> &'static str {
        match self.layout {
            Layout::V1(_) => "v1",
            Layout::V2(_) => "v2",
        }
    }

    /// Whether a per-job process limit is available.
    pub fn has_pids(&self) -> bool {
        match &self.layout {
            Layout::V1(instance) => instance.has_pids(),
            Layout::V2(_) => true,
        }
    }

    /// A cgroup for a worker and its job: a free one, or a new one.
    pub fn acquire_job(&self, memory_limit_bytes: u64, max_processes: Option<u64>) -> Result<JobCgroup, CgroupError> {
        let reused = self.free.lock().expect("cgroup pool lock").pop();
        if let Some(job) = reused {
            match job.set_memory_limit(memory_limit_bytes) {
                Ok(()) => return Ok(job),
                Err(error) => {
                    tracing::warn!(%error, "cannot reuse a job cgroup; creating a new one");
                    let _ = job.remove();
                }
            }
        }
        let name = format!("j{}", self.next_job.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        self.create_job(&name, memory_limit_bytes, max_processes)
    }

    /// Takes back an empty job cgroup: kept for reuse when nothing is
    /// charged to it any more, removed otherwise.
    pub fn release_job(&self, job: JobCgroup) {
        let reusable = match &job {
            JobCgroup::V1(v1) => {
                v1.charged_bytes().is_ok_and(|bytes| bytes <= REUSE_MAX_CHARGED_BYTES) && v1.reset_peak().is_ok()
            }
            // memory.peak cannot be reset on every v2 kernel: start afresh.
            JobCgroup::V2(_) => false,
        };
        if reusable {
            self.free.lock().expect("cgroup pool lock").push(job);
        } else if let Err(error) = job.remove() {
            tracing::warn!(%error, "cannot remove a job cgroup");
        }
    }

    fn create_job(
        &self,
        name: &str,
        memory_limit_bytes: u64,
        max_processes: Option<u64>,
    ) -> Result<JobCgroup, CgroupError> {
        let job = match &self.layout {
            Layout::V1(instance) => JobCgroup::V1(instance.create_job(name)?),
            Layout::V2(instance) => JobCgroup::V2(instance.create_job(name)?),
        };
        job.set_memory_limit(memory_limit_bytes)?;
        if let Some(max) = max_processes {
            match &job {
                JobCgroup::V1(v1) => v1.set_pids_limit(max)?,
                JobCgroup::V2(v2) => v2.set_pids_limit(max)?,
            }
        }
        Ok(job)
    }

    /// Kills whatever still runs in this run's job cgroups and removes them.
    pub fn remove(&self) {
        self.free.lock().expect("cgroup pool lock").clear();
        match &self.layout {
            Layout::V1(instance) => instance.remove(),
            Layout::V2(instance) => instance.remove(),
        }
    }
}

/// One job's cgroup. All its processes can be listed, measured and killed.
#[derive(Debug)]
pub enum JobCgroup {
    V1(v1::Job),
    V2(v2::Job),
}

impl JobCgroup {
    /// The `cgroup.procs` files, write-only: a process that writes "0" to
    /// each joins this cgroup (the worker does, first thing). Kept open
    /// with a v1 cgroup, which is reused; opened afresh for a v2 one.
    pub fn procs_files(&self) -> Result<Vec<Arc<std::fs::File>>, CgroupError> {
        match self {
            Self::V1(job) => Ok(job.procs_files()),
            Self::V2(job) => Ok(vec![Arc::new(open_procs_for_writing(job.dir())?)]),
        }
    }

    /// Sets the memory limit, with swap off.
    pub fn set_memory_limit(&self, bytes: u64) -> Result<(), CgroupError> {
        match self {
            Self::V1(job) => job.set_memory_limit(bytes),
            Self::V2(job) => job.set_memory_limit(bytes),
        }
    }

    pub fn cpu_usage(&self) -> Result<Duration, CgroupError> {
        match self {
            Self::V1(job) => job.cpu_usage(),
            Self::V2(job) => job.cpu_usage(),
        }
    }

    /// Highest memory use since the cgroup was created.
    pub fn peak_memory_bytes(&self) -> Result<u64, CgroupError> {
        match self {
            Self::V1(job) => job.peak_memory_bytes(),
            Self::V2(job) => job.peak_memory_bytes(),
        }
    }

    /// How many processes the kernel's OOM killer has killed in this cgroup.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        match self {
            Self::V1(job) => job.oom_kills(),
            Self::V2(job) => job.oom_kills(),
        }
    }

    /// The processes in the cgroup; none once it has been removed.
    pub fn processes(&self) -> Result<Vec<Pid>, CgroupError> {
        let path = self.dirs()[0].join("cgroup.procs");
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_pids(&text).ok_or(CgroupError::Format { path }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(CgroupError::File { path, source }),
        }
    }

    /// SIGKILLs every process in the cgroup until none is left (children
    /// forked meanwhile included). Returns once the cgroup is empty.
    pub async fn kill_all(&self) -> Result<(), CgroupError> {
        if let Self::V2(job) = self {
            job.kill()?;
        }
        for _ in 0..KILL_ROUNDS {
            let pids = self.processes()?;
            if pids.is_empty() {
                return Ok(());
            }
            for pid in pids {
                // ESRCH: it is already gone, which is what we want.
                let _ = kill(pid, Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Err(CgroupError::Unkillable { path: self.dirs()[0].to_owned() })
    }

    /// Removes the (empty) cgroup; one already removed (at shutdown) is fine.
    pub fn remove(self) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            match std::fs::remove_dir(dir) {
                Err(source) if source.kind() != io::ErrorKind::NotFound => {
                    return Err(CgroupError::File { path: dir.to_owned(), source });
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn dirs(&self) -> Vec<&Path> {
        match self {
            Self::V1(job) => job.dirs(),
            Self::V2(job) => vec![job.dir()],
        }
    }
}

/// The cgroup mounts of this process's mount namespace.
#[derive(Debug, Default, PartialEq)]
struct Mounts {
    v2: Option<PathBuf>,
    /// v1 mount points with the controllers each carries.
    v1: Vec<(PathBuf, Vec<String>)>,
}

impl Mounts {
    /// Parses `/proc/self/mountinfo`.
    fn parse(mountinfo: &str) -> Self {
        let mut mounts = Self::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let Some(mount_point) = left.split(' ').nth(4) else { continue };
            let mut right = right.split(' ');
            let (Some(fs_type), Some(_source), Some(options)) = (right.next(), right.next(), right.next()) else {
                continue;
            };
            match fs_type {
                "cgroup2" => mounts.v2 = Some(PathBuf::from(mount_point)),
                "cgroup" => {
                    let controllers = options.split(',').map(str::to_owned).collect();
                    mounts.v1.push((PathBuf::from(mount_point), controllers));
                }
                _ => {}
            }
        }
        mounts
    }

    fn v1_with(&self, controller: &str) -> Option<&Path> {
        self.v1.iter().find(|(_, controllers)| controllers.iter().any(|c| c == controller)).map(|(p, _)| p.as_path())
    }
}

/// This process's cgroup paths, from `/proc/self/cgroup`.
#[derive(Debug, Default, PartialEq)]
struct Memberships {
    v2: Option<String>,
    /// (comma-separated controllers, path)
    v1: Vec<(String, String)>,
}

impl Memberships {
    fn parse(text: &str) -> Self {
        let mut memberships = Self::default();
        for line in text.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_id), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            if controllers.is_empty() {
                memberships.v2 = Some(path.to_owned());
            } else {
                memberships.v1.push((controllers.to_owned(), path.to_owned()));
            }
        }
        memberships
    }

    fn v1_path(&self, controller: &str) -> Option<&str> {
        self.v1
            .iter()
            .find(|(controllers, _)| controllers.split(',').any(|c| c == controller))
            .map(|(_, path)| path.as_str())
    }
}

/// `mount` joined with a cgroup path like `/a/b` from `/proc/self/cgroup`.
fn join_cgroup_path(mount: &Path, cgroup: &str) -> PathBuf {
    mount.join(cgroup.trim_start_matches('/'))
}

fn instance_name() -> String {
    format!("{INSTANCE_PREFIX}{}", crate::instance::host_pid())
}

/// Removes `pyclave-<pid>` directories in `parent` whose supervisor is gone,
/// killing whatever still runs in their job cgroups.
fn remove_stale_instances(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(INSTANCE_PREFIX)).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == crate::instance::host_pid() || crate::instance::host_process_exists(pid) {
            continue;
        }
        tracing::warn!(path = %entry.path().display(), "removing cgroups left by a crashed supervisor");
        remove_tree(&entry.path());
    }
}

/// Kills the processes in `dir` and its descendants, then removes them.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    for _ in 0..100 {
        let pids = read(&dir.join("cgroup.procs")).ok().and_then(|text| parse_pids(&text)).unwrap_or_default();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    match std::fs::remove_dir(dir) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(path = %dir.display(), %error, "cannot remove cgroup");
        }
        _ => {}
    }
}

fn parse_pids(text: &str) -> Option<Vec<Pid>> {
    text.split_whitespace().map(|pid| pid.parse().ok().map(Pid::from_raw)).collect()
}

/// The value of `key` in a flat-keyed file like `memory.events` or `cpu.stat`.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        if name == key { value.trim().parse().ok() } else { None }
    })
}

/// A cgroup file kept open: read again (from offset 0) or written without a
/// path lookup, which is most of what a cgroup file access costs.
#[derive(Debug)]
struct KeptFile {
    path: PathBuf,
    file: std::fs::File,
}

impl KeptFile {
    fn open(path: PathBuf, writable: bool) -> Result<Self, CgroupError> {
        match std::fs::OpenOptions::new().read(true).write(writable).open(&path) {
            Ok(file) => Ok(Self { path, file }),
            Err(source) => Err(CgroupError::File { path, source }),
        }
    }

    fn read(&self) -> Result<String, CgroupError> {
        use std::os::unix::fs::FileExt;
        let mut text = Vec::with_capacity(256);
        let mut chunk = [0u8; 4096];
        loop {
            match self.file.read_at(&mut chunk, text.len() as u64) {
                Ok(read) => {
                    text.extend_from_slice(&chunk[..read]);
                    // A cgroup file comes whole in one read when it fits.
                    if read < chunk.len() {
                        break;
                    }
                }
                Err(source) => return Err(CgroupError::File { path: self.path.clone(), source }),
            }
        }
        String::from_utf8(text).map_err(|_| CgroupError::Format { path: self.path.clone() })
    }

    fn read_u64(&self) -> Result<u64, CgroupError> {
        self.read()?.trim().parse().map_err(|_| CgroupError::Format { path: self.path.clone() })
    }

    fn read_key(&self, key: &str) -> Result<u64, CgroupError> {
        keyed_value(&self.read()?, key).ok_or_else(|| CgroupError::Format { path: self.path.clone() })
    }

    fn write(&self, value: &str) -> Result<(), CgroupError> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_at(value.as_bytes(), 0)
            .map(drop)
            .map_err(|source| CgroupError::File { path: self.path.clone(), source })
    }
}

/// `dir`'s `cgroup.procs`, opened write-only.
fn open_procs_for_writing(dir: &Path) -> Result<std::fs::File, CgroupError> {
    let path = dir.join("cgroup.procs");
    std::fs::OpenOptions::new().write(true).open(&path).map_err(|source| CgroupError::File { path, source })
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::File { path: path.to_owned(), source })
}

fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    read(path)?.trim().parse().map_err(|_| CgroupError::Format { path: path.to_owned() })
}

fn read_key(path: &Path, key: &str) -> Result<u64, CgroupError> {
    keyed_value(&read(path)?, key).ok_or_else(|| CgroupError::Format { path: path.to_owned() })
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::File { path: path.to_owned(), source })
}

fn create_dir(path: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(path) {
        Err(error) if error.kind() != io::ErrorKind::AlreadyExists => {
            Err(CgroupError::File { path: path.to_owned(), source: error })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_finds_v1_controllers_and_v2() {
        let mounts = Mounts::parse(MOUNTINFO);
        assert_eq!(mounts.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(mounts.v1_with("memory"), Some(Path::new("/sys/fs/cgroup/memory")));
        assert_eq!(mounts.v1_with("cpuacct"), Some(Path::new("/sys/fs/cgroup/cpuacct")));
        assert_eq!(mounts.v1_with("pids"), None);
    }

    #[test]
    fn proc_self_cgroup_gives_paths_per_controller() {
        let memberships = Memberships::parse("4:memory:/process_api/ab\n2:cpu,cpuacct:/x\n0::/user.slice/s\n");
        assert_eq!(memberships.v1_path("memory"), Some("/process_api/ab"));
        assert_eq!(memberships.v1_path("cpuacct"), Some("/x"));
        assert_eq!(memberships.v2.as_deref(), Some("/user.slice/s"));
        assert_eq!(
            join_cgroup_path(Path::new("/sys/fs/cgroup/memory"), "/process_api/ab"),
            PathBuf::from("/sys/fs/cgroup/memory/process_api/ab")
        );
        assert_eq!(join_cgroup_path(Path::new("/sys/fs/cgroup"), "/"), PathBuf::from("/sys/fs/cgroup/"));
    }

    /// Real cgroups (the suite runs as root): a reused job cgroup must take a
    /// higher limit after a lower one (memory+swap must stay >= memory).
    #[test]
    fn memory_limits_go_down_and_up_again() {
        let cgroups = Cgroups::init().expect("cgroups (run the tests as root)");
        let job = cgroups.acquire_job(256 << 20, None).expect("job cgroup");
        job.set_memory_limit(64 << 20).expect("lower");
        job.set_memory_limit(512 << 20).expect("raise again");
        job.set_memory_limit(512 << 20).expect("same again");
        cgroups.release_job(job);
        let reused = cgroups.acquire_job(1 << 30, None).expect("reused at a higher limit");
        reused.remove().expect("remove");
        cgroups.remove();
    }

    #[test]
    fn keyed_files_parse() {
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(events, "oom_kill"), Some(1));
        assert_eq!(keyed_value(events, "oom"), Some(2));
        assert_eq!(keyed_value("usage_usec 1500\nuser_usec 1000\n", "usage_usec"), Some(1500));
        assert_eq!(keyed_value("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"), Some(3));
        assert_eq!(keyed_value("", "oom_kill"), None);
        assert_eq!(parse_pids("12\n34\n"), Some(vec![Pid::from_raw(12), Pid::from_raw(34)]));
        assert_eq!(parse_pids("x"), None);
    }
}
