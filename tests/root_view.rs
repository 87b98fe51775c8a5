//! A job's view of the filesystem: the zygote's read-only root with a
//! private /tmp. Read-only paths the config puts under /tmp come back inside
//! that private /tmp (the zygote sees them in its own root; each worker
//! binds them again in the /tmp it puts together), and nothing else of the
//! host's /tmp does.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::json;

#[tokio::test]
async fn read_only_paths_under_tmp_come_back_in_the_private_tmp() {
    let shared = tempfile::Builder::new().prefix("pyclave-shared-").tempdir_in("/tmp").expect("a directory in /tmp");
    std::fs::create_dir(shared.path().join("nested")).expect("mkdir");
    write_file(&shared.path().join("nested/hello.txt"), "hello from the host");
    // Readable by the job's unprivileged uid.
    for path in [shared.path().to_owned(), shared.path().join("nested")] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let neighbour = tempfile::Builder::new().prefix("pyclave-neighbour-").tempfile_in("/tmp").expect("a file in /tmp");
    let shared_path = shared.path().display().to_string();
    let shared_name = shared.path().file_name().expect("a name").to_string_lossy().into_owned();

    let config = format!("[sandbox]\nextra_read_only_paths = [\"{shared_path}\"]\n");
    let mut supervisor = Supervisor::start(&config);
    // Only these two names are looked for in /tmp: other read-only paths
    // may lie under it too (a checkout there, and its venv).
    let code = format!(
        r#"
import os
def main():
    shared = {shared_path:?}
    text = open(shared + "/nested/hello.txt").read()
    try:
        open(shared + "/planted", "w")
        planted = "written"
    except OSError as error:
        planted = os.strerror(error.errno)
    open("/tmp/own", "w").write("mine")
    listed = os.listdir("/tmp")
    return [text, planted, os.path.exists({neighbour:?}), {neighbour_name:?} in listed, {shared_name:?} in listed]
"#,
        neighbour = neighbour.path().display().to_string(),
        neighbour_name = neighbour.path().file_name().expect("a name").to_string_lossy(),
    );
    let reply = supervisor.client().await.run(exec(&code), None).await.expect("reply");
    let value: serde_json::Value = serde_json::from_str(&ok_json(&reply)).expect("JSON");
    assert_eq!(
        value,
        json!(["hello from the host", "Read-only file system", false, false, true]),
        "the shared path is readable and read-only, the host's other files in /tmp are not there"
    );
    assert!(!shared.path().join("planted").exists() && !std::path::Path::new("/tmp/own").exists());
    supervisor.assert_healthy().await;
}

/// A tmpfs mounted on the host for one test, detached when dropped.
struct HostTmpfs(std::path::PathBuf);

impl HostTmpfs {
    fn mount(at: std::path::PathBuf) -> Self {
        std::fs::create_dir(&at).expect("mount point");
        nix::mount::mount(Some("tmpfs"), &at, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=1m,mode=1777"))
            .expect("mount a tmpfs (the tests run as root)");
        Self(at)
    }
}

impl Drop for HostTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn mounts_under_a_read_only_path_are_read_only_too() {
    // One read-only path outside /tmp, one inside (the worker binds those
    // again in its private /tmp); each has a writable tmpfs mounted in it.
    let outside = tempfile::Builder::new()
        .prefix("pyclave-submount-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("a directory");
    let inside = tempfile::Builder::new().prefix("pyclave-submount-").tempdir_in("/tmp").expect("a directory in /tmp");
    let mut mounts = Vec::new();
    for dir in [outside.path(), inside.path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mounted = HostTmpfs::mount(dir.join("mounted"));
        write_file(&mounted.0.join("marker.txt"), "on the tmpfs");
        mounts.push(mounted);
    }
    let paths: Vec<String> = [outside.path(), inside.path()].iter().map(|p| p.display().to_string()).collect();
    let config = format!("[sandbox]\nextra_read_only_paths = {paths:?}\n");
    let mut supervisor = Supervisor::start(&config);
    let code = format!(
        r#"
import os
def main():
    seen = []
    for path in {paths:?}:
        marker = open(path + "/mounted/marker.txt").read()
        try:
            open(path + "/mounted/planted", "w")
            planted = "written"
        except OSError as error:
            planted = os.strerror(error.errno)
        seen.append([marker, planted])
    return seen
"#
    );
    let reply = supervisor.client().await.run(exec(&code), None).await.expect("reply");
    let value: serde_json::Value = serde_json::from_str(&ok_json(&reply)).expect("JSON");
    let expected = json!(["on the tmpfs", "Read-only file system"]);
    assert_eq!(value, json!([expected, expected]), "the job sees each tmpfs, read-only");
    for mounted in &mounts {
        assert!(!mounted.0.join("planted").exists(), "nothing was written to {}", mounted.0.display());
    }
    supervisor.assert_healthy().await;
}
