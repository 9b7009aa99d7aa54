//! Generates the Rust code for the `apache.rocketmq.v2` protocol and for raftmq's own
//! services (`raftmq.raft.v1`, `raftmq.admin.v1`) with tonic-prost-build, using the protoc
//! binary shipped in the `protoc-bin-vendored` crate so that nothing needs to be installed
//! on the build machine.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "apache/rocketmq/v2/definition.proto",
    "apache/rocketmq/v2/service.proto",
    "apache/rocketmq/v2/admin.proto",
];

/// raftmq's own services (the Raft service and the admin service). Compiled separately so
/// that their descriptors never end up in the client protocol's descriptor set (which gRPC
/// reflection on the client port serves).
const INTERNAL_PROTOS: &[&str] = &[
    "raftmq/raft/v1/raft.proto",
    "raftmq/admin/v1/admin.proto",
    "raftmq/namesrv/v1/namesrv.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // google/protobuf/{timestamp,duration}.proto come with the vendored protoc.
    let wkt_include = protoc_bin_vendored::include_path()?;

    // The protoc path goes through prost-build's Config, so no environment variable
    // (and no `unsafe` `set_var`) is needed.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(&protoc);

    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| manifest_dir.join(p)).collect();
    let includes = vec![manifest_dir.clone(), wkt_include];

    // Message bodies as `bytes::Bytes`: decoding slices them out of the request buffer and
    // a delivered body is shared with the commit log's record instead of copied.
    // The messaging service's codec sends a pull's ready messages in bigger pieces
    // (`src/codec.rs`).
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::BulkCodec")
        .bytes(".apache.rocketmq.v2.Message.body")
        // Written by hand (`src/pull_answer.rs`): the broker sends messages it encoded.
        .extern_path(
            ".apache.rocketmq.v2.PullMessageResponse",
            "crate::pull_answer::PullMessageResponse",
        )
        .file_descriptor_set_path(out_dir.join("apache.rocketmq.v2.bin"))
        .compile_with_config(config, &protos, &includes)?;

    // The Raft payloads are opaque `bytes`; generate them as `bytes::Bytes` so that a
    // replicated batch of messages is not copied on its way in and out of protobuf.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(&protoc);
    let internal: Vec<PathBuf> = INTERNAL_PROTOS.iter().map(|p| manifest_dir.join(p)).collect();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".raftmq")
        .file_descriptor_set_path(out_dir.join("raftmq.internal.bin"))
        .compile_with_config(config, &internal, &includes)?;

    for p in PROTOS.iter().chain(INTERNAL_PROTOS) {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
