//! The worker runtime (Python files and the native library), embedded
//! in the binary and written to a private directory at start-up, so the
//! supervisor needs nothing installed beside it but an interpreter with
//! pandas and pyarrow. The directory also holds the (empty) mount point each
//! worker builds its root on.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// (path inside the runtime's `python` directory, contents)
const FILES: &[(&str, &[u8])] = &[
    ("pyclave_worker/__init__.py", include_bytes!("../worker/pyclave_worker/__init__.py")),
    ("pyclave_worker/zygote.py", include_bytes!("../worker/pyclave_worker/zygote.py")),
    ("pyclave_worker/worker.py", include_bytes!("../worker/pyclave_worker/worker.py")),
    ("pyclave_worker/job.py", include_bytes!("../worker/pyclave_worker/job.py")),
    ("pyclave_worker/worker_pb2.py", include_bytes!("../worker/pyclave_worker/worker_pb2.py")),
    // Shared with the client package so the framing cannot drift.
    ("pyclave_worker/wire.py", include_bytes!("../python/pyclave/_wire.py")),
    ("pyclave_worker/confine.py", include_bytes!("../worker/pyclave_worker/confine.py")),
    ("pyclave_worker/memory.py", include_bytes!("../worker/pyclave_worker/memory.py")),
    (NATIVE_LIBRARY, include_bytes!(concat!(env!("OUT_DIR"), "/libpyclave_worker.so"))),
];
pub const NATIVE_LIBRARY: &str = "libpyclave_worker.so";

/// A directory holding the worker runtime; removed on drop.
#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    /// Creates `<parent>/pyclave-<host pid>` (mode 0755 directories, 0644 files:
    /// the unprivileged workers read them) and writes the runtime into it. A
    /// directory left by a crashed run with the same pid is replaced.
    pub fn create(parent: &Path) -> io::Result<Self> {
        let path = parent.join(format!("pyclave-{}", crate::instance::host_pid()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::DirBuilder::new().mode(0o755).create(&path)?;
        let runtime = Self { path };
        std::fs::DirBuilder::new().mode(0o755).create(runtime.root_mount_point())?;
        for (name, contents) in FILES {
            let file = runtime.python_dir().join(name);
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(file.parent().expect("has a parent"))?;
            std::fs::write(&file, contents)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        }
        Ok(runtime)
    }

    /// The directory to put on the zygote's `sys.path` (bound read-only
    /// into every worker's root).
    pub fn python_dir(&self) -> PathBuf {
        self.path.join("python")
    }

    /// The worker's native library: confinement and the SIGSYS reporter.
    pub fn native_library(&self) -> PathBuf {
        self.python_dir().join(NATIVE_LIBRARY)
    }

    /// An empty directory the zygote builds the workers' root on.
    pub fn root_mount_point(&self) -> PathBuf {
        self.path.join("root")
    }

    /// `/run` when we may write there (root), else the temp directory.
    pub fn default_parent() -> PathBuf {
        let run = Path::new("/run");
        if nix::unistd::access(run, nix::unistd::AccessFlags::W_OK).is_ok() {
            run.to_owned()
        } else {
            std::env::temp_dir()
        }
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_is_written_and_removed() {
        let parent = tempfile::tempdir().expect("tempdir");
        let path = {
            let runtime = RuntimeDir::create(parent.path()).expect("create");
            let zygote = std::fs::read_to_string(runtime.python_dir().join("pyclave_worker/zygote.py")).expect("read");
            assert!(zygote.contains("def main("));
            assert!(runtime.python_dir().join("pyclave_worker/wire.py").is_file());
            assert!(runtime.native_library().is_file());
            assert!(runtime.root_mount_point().is_dir());
            runtime.path.clone()
        };
        assert!(!path.exists(), "removed on drop");
    }
}
