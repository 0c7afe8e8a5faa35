//! Compiles the PTT `.proto` files in the repository's `proto/` with protox (no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled in one checkout may be reused by another
    // sharing the target directory (worktrees), and must look in its own.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let proto_dir = std::path::Path::new(&manifest_dir).join("../../proto");
    let files = ["Mumble.proto", "MumbleUDP.proto"].map(|f| proto_dir.join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let descriptors = protox::compile(&files, [&proto_dir])?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
