//! Writes the synthetic seed corpus to `fuzz/corpus/<target>/` (or the
//! folder given as the first argument). Run from the workspace root:
//! `cargo run -p profiled-fuzz --bin fuzz-seeds`.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus"));
    for (target, name, bytes) in profiled_fuzz::seeds()? {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, &bytes)?;
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
    Ok(())
}
