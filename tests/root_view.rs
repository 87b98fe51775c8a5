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
