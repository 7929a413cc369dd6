//! Compile proto/wsingest/v1/ingest.proto with protox (no protoc needed) and
//! write the tonic/prost code to crates/server/src/grpc/gen/. Usage: gen ROOT (the repo root).

fn main() {
    let root = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: gen REPO_ROOT"));
    let proto_dir = root.join("proto");
    let out = root.join("crates/server/src/grpc/gen");
    std::fs::create_dir_all(&out).expect("create crates/server/src/grpc/gen");
    let fds = protox::compile(["wsingest/v1/ingest.proto"], [&proto_dir]).expect("proto compiles");
    tonic_prost_build::configure()
        .build_transport(false)
        .out_dir(&out)
        .compile_fds(fds)
        .expect("code generates");
}
