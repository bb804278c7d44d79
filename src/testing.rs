//! Shared by the unit tests and `tests/integration`: a numeric bound that reports what it measured.

/// Asserts that a measured difference is within its bound, and prints it with the CPU kernels that made
/// it, on stderr (library code leaves stdout to the CLI's results): `cargo test -- --nocapture 2>&1 |
/// grep '^spread'` lists every tolerance beside what this machine gave, which is how the bounds' comments
/// were measured (AVX-512 and AVX2+FMA kernels: `scripts/test.sh` runs both where the CPU has AVX-512).
pub fn within(what: &str, diff: f64, bound: f64) {
    eprintln!(
        "spread {what}: {diff:.2e} (bound {bound:.0e}; {} kernels)",
        crate::device::cpu_kernels()
    );
    assert!(
        diff <= bound,
        "{what}: difference {diff:e} exceeds {bound:e}"
    );
}
