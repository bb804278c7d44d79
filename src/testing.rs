//! Shared by the unit tests and `tests/integration`: a numeric bound that reports what it measured, and
//! inputs that are hard to come by (a PNG header claiming gigapixels).

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

/// A PNG whose header claims `w`×`h` pixels (its data is one row of nothing): what a decompression
/// bomb's first bytes look like.
pub fn claimed_png(w: u32, h: u32) -> Vec<u8> {
    fn crc(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        let body: Vec<u8> = kind.iter().chain(data).copied().collect();
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc(&body).to_be_bytes());
        out
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}
