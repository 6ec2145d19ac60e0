//! Compiles `proto/rendezvous.proto` with protox (a pure-Rust protobuf compiler), so building
//! the crate needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/rendezvous.proto");
    let descriptors = protox::compile(["proto/rendezvous.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
