//! The worker runtime's Python files, embedded in the binary and written to a
//! private directory at start-up, so the supervisor needs nothing installed
//! beside it but an interpreter with pandas and pyarrow.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// (path inside the runtime directory, contents)
const FILES: &[(&str, &str)] = &[
    ("pyclave_worker/__init__.py", include_str!("../worker/pyclave_worker/__init__.py")),
    ("pyclave_worker/zygote.py", include_str!("../worker/pyclave_worker/zygote.py")),
    ("pyclave_worker/worker.py", include_str!("../worker/pyclave_worker/worker.py")),
    ("pyclave_worker/job.py", include_str!("../worker/pyclave_worker/job.py")),
    ("pyclave_worker/worker_pb2.py", include_str!("../worker/pyclave_worker/worker_pb2.py")),
    // Shared with the client package so the framing cannot drift.
    ("pyclave_worker/wire.py", include_str!("../python/pyclave/_wire.py")),
];

/// A directory holding the worker runtime; removed on drop.
#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    /// Creates `<parent>/pyclave-<pid>` (mode 0700 for the directory, 0644
    /// files) and writes the runtime into it. A directory left by a crashed
    /// run with the same pid is replaced.
    pub fn create(parent: &Path) -> io::Result<Self> {
        let path = parent.join(format!("pyclave-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        let runtime = Self { path };
        for (name, contents) in FILES {
            let file = runtime.path.join(name);
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(file.parent().expect("has a parent"))?;
            std::fs::write(&file, contents)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        }
        Ok(runtime)
    }

    /// The directory to put on the zygote's `sys.path`.
    pub fn path(&self) -> &Path {
        &self.path
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
            let zygote = std::fs::read_to_string(runtime.path().join("pyclave_worker/zygote.py")).expect("read");
            assert!(zygote.contains("def main("));
            assert!(runtime.path().join("pyclave_worker/wire.py").is_file());
            runtime.path().to_owned()
        };
        assert!(!path.exists(), "removed on drop");
    }
}
