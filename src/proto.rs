//! Generated protobuf types (prost-build, from `proto/`). Never edited by hand.

/// The caller-facing API.
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/pyclave.v1.rs"));
}

/// The supervisor's private protocol with the zygote and its workers.
// `Configure` (the sandbox plan, sent once per zygote) dwarfs `Spawn`;
// boxing generated code is not ours to choose.
#[allow(clippy::large_enum_variant)]
pub mod worker {
    include!(concat!(env!("OUT_DIR"), "/pyclave.worker.v1.rs"));
}
