//! The desktop app (eframe + wgpu).

pub fn run(_model: Option<String>, _data: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    anyhow::bail!("the desktop app is not built yet")
}
