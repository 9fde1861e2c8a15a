//! Generates the client and server of KEDA's external scaler protocol from
//! `proto/externalscaler.proto`, with the protobuf compiler that comes as a crate (so a
//! build needs nothing installed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_with_config(config, &["proto/externalscaler.proto"], &["proto"])?;
    Ok(())
}
