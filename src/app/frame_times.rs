//! Frame-time statistics (`PROMPTSCOPE_FRAME_LOG`): how long frames take while training and while idle.

use std::path::Path;

/// Intervals between frames, split by whether a training run was under way, for the frame-time
/// statistics (median and p99) the README reports.
#[derive(Default)]
pub struct FrameTimes {
    last: Option<std::time::Instant>,
    pub training_ms: Vec<f64>,
    pub idle_ms: Vec<f64>,
    /// Time spent laying out each frame while training (the app's own share of a frame).
    pub training_build_ms: Vec<f64>,
    written: Option<std::time::Instant>,
}

impl FrameTimes {
    pub(super) fn tick(&mut self, training: bool) {
        let now = std::time::Instant::now();
        if let Some(last) = self.last.replace(now) {
            let ms = (now - last).as_secs_f64() * 1e3;
            push_bounded(
                if training {
                    &mut self.training_ms
                } else {
                    &mut self.idle_ms
                },
                ms,
            );
        }
    }

    pub(super) fn built(&mut self, ms: f64) {
        push_bounded(&mut self.training_build_ms, ms);
    }

    /// (frames, median, p99) in ms.
    pub fn stats(v: &[f64]) -> Option<(usize, f64, f64)> {
        if v.is_empty() {
            return None;
        }
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
        Some((s.len(), at(0.5), at(0.99)))
    }

    pub(super) fn maybe_write(&mut self, path: &Path) {
        let now = std::time::Instant::now();
        if self
            .written
            .is_some_and(|w| now - w < std::time::Duration::from_secs(1))
        {
            return;
        }
        self.written = Some(now);
        let json = |v: &[f64]| {
            Self::stats(v).map_or(
                serde_json::Value::Null,
                |(n, med, p99)| serde_json::json!({"frames": n, "median_ms": med, "p99_ms": p99}),
            )
        };
        let body = serde_json::json!({
            "training": json(&self.training_ms),
            "training_build": json(&self.training_build_ms),
            "idle": json(&self.idle_ms),
        });
        let _ = crate::error::write_atomic(path, body.to_string().as_bytes());
    }
}

/// Appends to a bounded history: the last ~10 minutes at 60 fps.
fn push_bounded(v: &mut Vec<f64>, ms: f64) {
    if v.len() >= 36_000 {
        v.drain(..18_000);
    }
    v.push(ms);
}
