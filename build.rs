//! Compiles `proto/` with prost-build, using the vendored protoc so a fresh
//! machine needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/pyclave/v1/api.proto", "proto/pyclave/v1/worker.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.compile_protos(&protos, &["proto"])?;
    Ok(())
}
