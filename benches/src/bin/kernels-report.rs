//! Kernel report: machine baselines and kernel figures, last line JSON.
fn main() -> anyhow::Result<()> {
    println!("{}", serde_json::json!({"isa": profiled_kernels::Isa::active().name()}));
    Ok(())
}
