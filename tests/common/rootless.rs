//! Running `pyclave` as an unprivileged user from the root test process:
//! [`ROOTLESS_USER`](super::ROOTLESS_USER), which has a subordinate id range,
//! optionally in a cgroup delegated to it, and able to reach the interpreter.
//!
//! The interpreter may live under a 0700 `/root` (it does on the CI hosts):
//! the command then runs in a mount namespace of its own in which `/root`
//! is a 0755 tmpfs holding only the entries the test needs, as on a host
//! whose Python is world-readable.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// Makes `command` run as the rootless user with `dir` as its (owned)
/// working directory; returns the cgroups delegated to it.
pub fn prepare(command: &mut Command, dir: &Path, delegated_cgroup: bool) -> Vec<PathBuf> {
    assert!(nix::unistd::geteuid().is_root(), "rootless tests start the supervisor as another user: run them as root");
    let user = nix::unistd::User::from_name(super::ROOTLESS_USER)
        .expect("read the user database")
        .unwrap_or_else(|| panic!("user {} is missing: run scripts/setup.sh", super::ROOTLESS_USER));
    chown_tree(dir, user.uid, user.gid);
    let delegated = if delegated_cgroup { delegate_cgroups(user.uid, user.gid) } else { Vec::new() };
    let procs_files: Vec<std::fs::File> = delegated
        .iter()
        .map(|cgroup| std::fs::OpenOptions::new().write(true).open(cgroup.join("cgroup.procs")).expect("cgroup.procs"))
        .collect();

    let needed = [super::venv_python().canonicalize().expect("interpreter"), super::repo_root()];
    let mut kept: Vec<PathBuf> = needed.iter().filter_map(|path| entry_under_root(path)).collect();
    kept.dedup();
    let c = |path: &Path| CString::new(path.as_os_str().as_encoded_bytes()).expect("path without NUL");
    // Each kept entry is bound to a stash first, then moved into the tmpfs.
    let kept: Vec<(CString, CString)> = kept
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let stash = dir.join(format!(".stash-{index}"));
            std::fs::create_dir(&stash).expect("stash directory");
            (c(entry), c(&stash))
        })
        .collect();
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    command.current_dir(dir);
    // SAFETY: the closure runs in the forked child before exec and makes
    // only raw syscalls on strings and files prepared above (no allocation,
    // no locks), which is what a child of a multi-threaded parent may do.
    unsafe {
        command.pre_exec(move || {
            let check = |result: libc::c_int| if result == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
            let null = std::ptr::null::<libc::c_char>();
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(null, c"/".as_ptr(), null, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()))?;
            for (entry, stash) in &kept {
                check(libc::mount(
                    entry.as_ptr(),
                    stash.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
            }
            if !kept.is_empty() {
                let options = c"mode=0755";
                check(libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/root".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    options.as_ptr().cast(),
                ))?;
            }
            for (entry, stash) in &kept {
                check(libc::mkdir(entry.as_ptr(), 0o755))?;
                check(libc::mount(stash.as_ptr(), entry.as_ptr(), null, libc::MS_MOVE, std::ptr::null()))?;
            }
            for file in &procs_files {
                // "0" moves the writing process into the cgroup.
                if libc::write(file.as_raw_fd(), c"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(gid, gid, gid))?;
            check(libc::setresuid(uid, uid, uid))
        });
    }
    delegated
}

/// `/root/<first component>` when `path` is under `/root`.
fn entry_under_root(path: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix("/root").ok()?;
    match rest.components().next()? {
        Component::Normal(name) => Some(Path::new("/root").join(name)),
        _ => None,
    }
}

fn chown_tree(path: &Path, uid: nix::unistd::Uid, gid: nix::unistd::Gid) {
    nix::unistd::chown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir").flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

/// Creates a cgroup owned by the user below ours, in every v1 hierarchy the
/// supervisor uses (or in the v2 one), as a delegating service manager does.
fn delegate_cgroups(uid: nix::unistd::Uid, gid: nix::unistd::Gid) -> Vec<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!("pyclave-rootless-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    let path_of = |controller: &str| {
        own.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let matches = if controller.is_empty() {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == controller)
            };
            matches.then(|| path.trim_start_matches('/').to_owned())
        })
    };
    let v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    let dirs: Vec<PathBuf> = if v1 {
        ["memory", "cpuacct", "pids"]
            .iter()
            .filter_map(|controller| {
                Some(Path::new("/sys/fs/cgroup").join(controller).join(path_of(controller)?).join(&name))
            })
            .collect()
    } else {
        vec![Path::new("/sys/fs/cgroup").join(path_of("").expect("a cgroup v2 path")).join(&name)]
    };
    for dir in &dirs {
        std::fs::create_dir(dir).unwrap_or_else(|error| panic!("create {}: {error}", dir.display()));
        chown_tree(dir, uid, gid);
    }
    dirs
}
