//! Compiles `proto/` with prost-build (using the vendored protoc, so a fresh
//! machine needs no system package) and the worker's native part
//! (`worker/native/`: the zygote's serving loop, fork and confinement, the
//! SIGSYS reporter, the zygote's heaps on a file, the benchmark's fork floor)
//! into a shared library the binary embeds.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/pyclave/v1/api.proto", "proto/pyclave/v1/worker.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.compile_protos(&protos, &["proto"])?;

    let sources = [
        "worker/native/zygote.c",
        "worker/native/confine.c",
        "worker/native/sigsys.c",
        "worker/native/protobuf.c",
        "worker/native/memory.c",
        "worker/native/mappings.c",
        "worker/native/prefault.c",
        "worker/native/floor.c",
    ];
    for source in sources.iter().chain(&["worker/native/native.h"]) {
        println!("cargo:rerun-if-changed={source}");
    }
    let library = PathBuf::from(std::env::var("OUT_DIR")?).join("libpyclave_worker.so");
    let status = cc::Build::new()
        .get_compiler()
        .to_command()
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&library)
        .args(sources)
        .status()?;
    if !status.success() {
        return Err(format!("compiling {sources:?} failed").into());
    }
    Ok(())
}
