//! The socket protocol from a hostile or sloppy caller's side: oversized and
//! garbage frames, missing fds, script names that try to escape.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use common::*;
use prost::Message;
use pyclave::proto::api::{Job, Response, job, outcome::Kind, rejected, response};

/// Sends raw bytes and reads the one response frame the server sends before closing.
fn send_raw(supervisor: &Supervisor, bytes: &[u8]) -> (Response, bool) {
    let mut stream = UnixStream::connect(&supervisor.socket).expect("connect");
    stream.write_all(bytes).expect("write");
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).expect("response header");
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut body).expect("response body");
    let response = Response::decode(body.as_slice()).expect("response");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).expect("timeout");
    let closed = matches!(stream.read(&mut [0u8; 1]), Ok(0));
    (response, closed)
}

fn protocol_error(response: &Response) -> &str {
    match &response.body {
        Some(response::Body::ProtocolError(error)) => &error.message,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn oversized_frame_gets_a_clear_error_and_only_that_connection_closes() {
    let mut supervisor = Supervisor::start("[server]\nmax_request_frame_bytes = 65536\n");
    let mut bystander = supervisor.client().await;
    let (response, closed) = send_raw(&supervisor, &(1u32 << 31).to_be_bytes());
    assert_eq!(protocol_error(&response), "frame of 2147483648 bytes exceeds the limit of 65536 bytes");
    assert!(closed);
    let reply = bystander.run(exec("def main():\n    return 1\n"), None).await.expect("bystander");
    assert_eq!(ok_json(&reply), "1");
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn garbage_frame_gets_a_clear_error() {
    let mut supervisor = Supervisor::start("");
    let mut frame = 16u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0xff; 16]);
    let (response, closed) = send_raw(&supervisor, &frame);
    assert!(protocol_error(&response).contains("not a valid protobuf message"), "{response:?}");
    assert!(closed);
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn announced_fd_that_never_came_is_a_protocol_error() {
    let mut supervisor = Supervisor::start("");
    let request =
        pyclave::proto::api::Request { id: 5, job: Some(Job { has_input_table: true, ..exec("def main(): pass") }) };
    let body = request.encode_to_vec();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let (response, _) = send_raw(&supervisor, &frame);
    assert!(protocol_error(&response).contains("file descriptor"), "{response:?}");
    supervisor.assert_healthy().await;
}

#[tokio::test]
async fn script_names_resolve_only_inside_the_scripts_directory() {
    let outside = tempfile::tempdir().expect("tempdir");
    let scripts = outside.path().join("scripts");
    std::fs::create_dir(&scripts).expect("mkdir");
    write_file(&scripts.join("hello.py"), "def main(params):\n    return 'hello ' + params['who']\n");
    write_file(&outside.path().join("secret.py"), "def main():\n    return 'secret'\n");
    std::os::unix::fs::symlink(outside.path().join("secret.py"), scripts.join("link.py")).expect("symlink");
    let mut supervisor = Supervisor::start(&format!("[scripts]\ndir = {:?}\n", scripts.display().to_string()));
    let mut client = supervisor.client().await;

    let mut request = Job { code: Some(job::Code::ScriptName("hello.py".into())), ..Job::default() };
    request.params_json = r#"{"who": "world"}"#.into();
    assert_eq!(ok_json(&client.run(request, None).await.expect("run")), "\"hello world\"");

    let secret = outside.path().join("secret.py").display().to_string();
    for name in ["../secret.py", "link.py", secret.as_str(), "missing.py", "./hello.py", ""] {
        let request = Job { code: Some(job::Code::ScriptName(name.into())), ..Job::default() };
        let reply = client.run(request, None).await.expect("run");
        assert!(
            matches!(kind(&reply), Kind::Rejected(r) if r.code() == rejected::Code::ScriptNotFound),
            "{name:?}: {:?}",
            reply.outcome
        );
    }
    supervisor.assert_healthy().await;
}

#[test]
fn cli_run_prints_the_outcome_as_json_with_documented_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let code = dir.path().join("job.py");
    write_file(&code, "def main(params):\n    print('hi')\n    return params\n");
    let path =
        format!("{}:{}", venv_python().parent().expect("bin").display(), std::env::var("PATH").unwrap_or_default());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pyclave"))
        .args(["run", "--code"])
        .arg(&code)
        .args(["--params", r#"{"a": 1}"#])
        .env("PATH", &path)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(report["outcome"], "ok");
    assert_eq!(report["value"], serde_json::json!({"a": 1}));
    assert_eq!(report["stdout"], "hi\n");

    write_file(&code, "def main():\n    raise KeyError('k')\n");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pyclave"))
        .args(["run", "--kind", "exec", "--code"])
        .arg(&code)
        .env("PATH", &path)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(i32::from(pyclave::cli::exit_code::USER_ERROR)));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!((report["outcome"].as_str(), report["type"].as_str()), (Some("user_error"), Some("KeyError")));
}

#[test]
fn doctor_reports_every_layer_and_whether_serve_would_start() {
    let output =
        std::process::Command::new(env!("CARGO_BIN_EXE_pyclave")).args(["doctor", "--json"]).output().expect("doctor");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    let layers: Vec<&str> =
        report["layers"].as_array().expect("layers").iter().map(|l| l["layer"].as_str().expect("name")).collect();
    assert_eq!(
        layers,
        ["namespaces", "minimal_root", "unprivileged_user", "seccomp", "memory_limit", "resource_limits"]
    );
    // This suite runs as root on a host with every layer (the other tests rely on it).
    assert_eq!(report["serve_would_start"], true, "{report}");
    assert_eq!(output.status.code(), Some(0));
    assert!(report["layers"].as_array().expect("layers").iter().all(|l| l["enforced"] == true), "{report}");

    let text = std::process::Command::new(env!("CARGO_BIN_EXE_pyclave")).arg("doctor").output().expect("doctor");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("seccomp") && text.contains("`pyclave serve` would start"), "{text}");
}

#[test]
fn cli_run_transforms_an_arrow_file_through_a_running_supervisor() {
    let supervisor = Supervisor::start("");
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, input, output) = (dir.path().join("t.py"), dir.path().join("in.arrow"), dir.path().join("out.arrow"));
    write_file(&code, "def transform(table, params):\n    return table[table['x'] < params['n']]\n");
    let batch = sample_batch(100);
    let mut file = std::fs::File::create(&input).expect("create");
    let mut writer = arrow_ipc::writer::FileWriter::try_new(&mut file, &batch.schema()).expect("writer");
    writer.write(&batch).expect("write");
    writer.finish().expect("finish");
    drop(writer);

    let result = std::process::Command::new(env!("CARGO_BIN_EXE_pyclave"))
        .args(["run", "--code"])
        .arg(&code)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(["--params", r#"{"n": 10}"#, "--memory-limit-bytes", "268435456", "--socket"])
        .arg(&supervisor.socket)
        .output()
        .expect("run");
    assert_eq!(result.status.code(), Some(0), "{}", String::from_utf8_lossy(&result.stdout));
    let report: serde_json::Value = serde_json::from_slice(&result.stdout).expect("one JSON object");
    assert_eq!(report["outcome"], "ok");
    assert_eq!(report["table"]["path"], output.display().to_string());
    let reader =
        arrow_ipc::reader::FileReader::try_new(std::fs::File::open(&output).expect("output"), None).expect("arrow");
    let rows: usize = reader.map(|batch| batch.expect("batch").num_rows()).sum();
    assert_eq!(rows, 10);

    let raised = std::process::Command::new(env!("CARGO_BIN_EXE_pyclave"))
        .args(["run", "--code"])
        .arg(&code)
        .args(["--wall-timeout-ms", "999999999", "--socket"])
        .arg(&supervisor.socket)
        .output()
        .expect("run");
    assert_eq!(raised.status.code(), Some(i32::from(pyclave::cli::exit_code::REJECTED)));
}
