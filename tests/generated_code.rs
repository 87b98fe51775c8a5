//! The committed Python protobuf modules are exactly what protoc generates
//! from `proto/` (the Rust side is generated at build time).

use std::path::Path;
use std::process::Command;

#[test]
fn python_protobuf_modules_match_the_protos() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().expect("tempdir");
    let status = Command::new(protoc_bin_vendored::protoc_bin_path().expect("vendored protoc"))
        .arg(format!("--python_out={}", out.path().display()))
        .arg("-I")
        .arg(root.join("proto"))
        .args(["pyclave/v1/api.proto", "pyclave/v1/worker.proto"])
        .status()
        .expect("run protoc");
    assert!(status.success());
    for (generated, committed) in [
        ("pyclave/v1/api_pb2.py", "python/pyclave/_proto/api_pb2.py"),
        ("pyclave/v1/worker_pb2.py", "worker/pyclave_worker/worker_pb2.py"),
    ] {
        let expected = std::fs::read_to_string(out.path().join(generated)).expect("generated");
        let actual = std::fs::read_to_string(root.join(committed)).expect("committed");
        assert!(expected == actual, "{committed} is stale: run scripts/gen-proto.sh");
    }
}
