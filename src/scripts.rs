//! Resolves `script_name` strictly inside the configured scripts directory.
//!
//! The name must be a plain relative path; it is then opened with
//! `openat2(RESOLVE_BENEATH)`, so neither `..` nor a symlink (at any depth)
//! can lead outside the directory, whatever happens to the tree meanwhile.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScriptError {
    #[error("scripts are not enabled on this server")]
    Disabled,
    #[error("script name {name:?} must be a relative path without `..`")]
    BadName { name: String },
    #[error("script {name:?} not found in the scripts directory")]
    NotFound { name: String },
    #[error("script {name:?} is larger than the {limit}-byte limit")]
    TooLarge { name: String, limit: u64 },
    #[error("script {name:?} is not valid UTF-8")]
    NotUtf8 { name: String },
}

/// Opens the scripts directory once; lookups are relative to this handle.
#[derive(Debug)]
pub struct ScriptDir {
    dir: OwnedFd,
}

impl ScriptDir {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let dir = nix::fcntl::open(path, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(Self { dir })
    }

    /// Reads the script `name`, at most `max_bytes` of it.
    pub fn read(&self, name: &str, max_bytes: u64) -> Result<String, ScriptError> {
        check_name(name)?;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let not_found = || ScriptError::NotFound { name: name.to_owned() };
        let fd = openat2(&self.dir, name, how).map_err(|_| not_found())?;
        let mut file = std::fs::File::from(fd);
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(not_found());
        }
        let mut bytes = Vec::new();
        file.by_ref().take(max_bytes + 1).read_to_end(&mut bytes).map_err(|_| not_found())?;
        if bytes.len() as u64 > max_bytes {
            return Err(ScriptError::TooLarge { name: name.to_owned(), limit: max_bytes });
        }
        String::from_utf8(bytes).map_err(|_| ScriptError::NotUtf8 { name: name.to_owned() })
    }
}

fn check_name(name: &str) -> Result<(), ScriptError> {
    let path = Path::new(name);
    let plain = !name.is_empty()
        && !name.contains('\0')
        && path.components().all(|component| matches!(component, Component::Normal(_)));
    if plain { Ok(()) } else { Err(ScriptError::BadName { name: name.to_owned() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, ScriptDir) {
        let root = tempfile::tempdir().expect("tempdir");
        let scripts = root.path().join("scripts");
        std::fs::create_dir_all(scripts.join("sub")).expect("mkdir");
        std::fs::write(scripts.join("ok.py"), "def main(): return 1\n").expect("write");
        std::fs::write(scripts.join("sub/nested.py"), "x = 1\n").expect("write");
        std::fs::write(root.path().join("secret.py"), "secret\n").expect("write");
        std::os::unix::fs::symlink(root.path().join("secret.py"), scripts.join("escape.py")).expect("symlink");
        std::os::unix::fs::symlink("/etc", scripts.join("etc")).expect("symlink");
        std::os::unix::fs::symlink("ok.py", scripts.join("alias.py")).expect("symlink");
        let dir = ScriptDir::open(&scripts).expect("open");
        (root, dir)
    }

    #[test]
    fn plain_names_resolve() {
        let (_root, dir) = fixture();
        assert_eq!(dir.read("ok.py", 1000).expect("read"), "def main(): return 1\n");
        assert_eq!(dir.read("sub/nested.py", 1000).expect("read"), "x = 1\n");
        assert_eq!(dir.read("alias.py", 1000).expect("symlink inside"), "def main(): return 1\n");
    }

    #[test]
    fn escapes_are_rejected() {
        let (_root, dir) = fixture();
        for name in ["../secret.py", "sub/../../secret.py", "/etc/passwd", "./ok.py", "", "a\0b"] {
            assert!(matches!(dir.read(name, 1000), Err(ScriptError::BadName { .. })), "{name:?}");
        }
        for name in ["escape.py", "etc/passwd", "missing.py", "sub"] {
            assert!(matches!(dir.read(name, 1000), Err(ScriptError::NotFound { .. })), "{name:?}");
        }
    }

    #[test]
    fn size_is_capped() {
        let (_root, dir) = fixture();
        assert_eq!(dir.read("ok.py", 5), Err(ScriptError::TooLarge { name: "ok.py".into(), limit: 5 }));
    }
}
