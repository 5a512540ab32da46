//! Build-time inputs embedded in the binary: `openapi.yaml` as committed and its JSON form, so
//! that the binary serves exactly the spec it was built with (src/http/openapi.rs; an invalid
//! document fails the build), and the Open Inference Protocol's gRPC messages and service from
//! `proto/grpc_service.proto` (compiled by protox, in Rust: the build needs no `protoc`).

fn main() {
    println!("cargo:rerun-if-changed=openapi.yaml");
    let yaml = std::fs::read_to_string("openapi.yaml").expect("openapi.yaml is readable");
    let spec: serde_json::Value = serde_yaml::from_str(&yaml).expect("openapi.yaml is valid YAML");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("openapi.json"), serde_json::to_string(&spec).expect("JSON")).expect("OUT_DIR is writable");

    println!("cargo:rerun-if-changed=proto/grpc_service.proto");
    let files = protox::compile(["proto/grpc_service.proto"], ["proto"]).expect("proto/grpc_service.proto compiles");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(files)
        .expect("the gRPC service code is generated");
}
