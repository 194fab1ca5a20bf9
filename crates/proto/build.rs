//! Compiles `proto/profiled/v1/*.proto` with protox (pure Rust, no system
//! `protoc`), generates prost messages and tonic clients/servers, and writes
//! the encoded `FileDescriptorSet` to `OUT_DIR` for server reflection.

use std::error::Error;
use std::path::PathBuf;
use std::{env, fs};

use prost::Message as _;

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let proto_dir = proto_root.join("profiled/v1");
    println!("cargo:rerun-if-changed={}", proto_dir.display());

    // Every .proto file of the package, in a stable order, named relative to
    // the include root (as the import statements name them).
    let mut files = Vec::new();
    for entry in fs::read_dir(&proto_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            let name = path.file_name().ok_or("proto file without a name")?;
            files.push(PathBuf::from("profiled/v1").join(name));
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("no .proto files in {}", proto_dir.display()).into());
    }

    // Source info is kept so the generated code carries the proto comments
    // as docs; imports (google.protobuf well-known types) are included so the
    // descriptor set is self-contained for reflection.
    let fds = protox::compile(&files, [&proto_root])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("profiled_v1_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
