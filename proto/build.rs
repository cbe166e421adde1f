//! Compiles `fanout/v1/fanout.proto` with the pure-Rust `protox` compiler (no system `protoc`),
//! generates the tonic client and server code, and writes the encoded descriptor set that the
//! servers hand to gRPC reflection.

use prost::Message;
use std::path::PathBuf;

const PROTO: &str = "fanout/v1/fanout.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protox does not print these itself.
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=build.rs");

    let fds = protox::compile([PROTO], ["."])?;

    // `compile_fds` does not write the descriptor set: reflection needs it, so write it here.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("fanout_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
