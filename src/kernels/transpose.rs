//! Transposing a row-major block, for the convolution's changes between
//! (C, H·W) images and channels-last patch rows.
//!
//! Why by hand: the plain loop, one value at a time with a strided side,
//! cost about 1 ns a value, a tenth of a digits U-Net step (`perf`), and
//! the compiler does not turn tiles of it into vector shuffles for the
//! default x86-64 target. Here whole 8 × 8 tiles go through AVX registers
//! (eight loads, three rounds of shuffles, eight stores) where the CPU
//! has AVX; the edges that do not fill a tile, and other CPUs, go value
//! by value.

use std::mem::MaybeUninit;

const TILE: usize = 8;

/// The (rows, cols) row-major block `values`, transposed, in a fresh
/// vector (not zero-filled first: every value is written once).
pub fn transposed(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(values.len());
    transpose_into(values, rows, cols, &mut out.spare_capacity_mut()[..values.len()]);
    // SAFETY: `transpose_into` wrote all `values.len()` values.
    unsafe { out.set_len(values.len()) };
    out
}

/// `out` = the (rows, cols) row-major block `values`, transposed:
/// `out[c · rows + r] = values[r · cols + c]`, every value of `out`
/// written.
pub fn transpose_into(values: &[f32], rows: usize, cols: usize, out: &mut [MaybeUninit<f32>]) {
    assert_eq!(
        values.len(),
        rows * cols,
        "transpose: values do not match the size"
    );
    assert_eq!(
        out.len(),
        rows * cols,
        "transpose: output does not match the size"
    );
    let (full_rows, full_cols) = (rows / TILE * TILE, cols / TILE * TILE);
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above), and the tiles lie
        // inside both blocks, whose sizes are asserted above.
        unsafe { tiles_avx(values, rows, cols, out) };
        edges(values, rows, cols, out, full_rows, full_cols);
        return;
    }
    edges(values, rows, cols, out, 0, 0);
}

/// Value by value: every value outside the first `full_rows` ×
/// `full_cols` (which the tiles wrote).
fn edges(
    values: &[f32],
    rows: usize,
    cols: usize,
    out: &mut [MaybeUninit<f32>],
    full_rows: usize,
    full_cols: usize,
) {
    for r in 0..rows {
        let from = if r < full_rows { full_cols } else { 0 };
        for c in from..cols {
            out[c * rows + r].write(values[r * cols + c]);
        }
    }
}

/// The whole 8 × 8 tiles of the block, each in registers.
///
/// # Safety
/// The CPU has AVX; `values` and `out` hold `rows × cols` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn tiles_avx(values: &[f32], rows: usize, cols: usize, out: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::*;
    let (src, dst) = (values.as_ptr(), out.as_mut_ptr().cast::<f32>());
    for r0 in (0..rows / TILE * TILE).step_by(TILE) {
        for c0 in (0..cols / TILE * TILE).step_by(TILE) {
            // SAFETY: rows r0..r0+8 and columns c0..c0+8 lie inside the
            // block, and their transposed places inside `out`.
            unsafe {
                let load = |i: usize| _mm256_loadu_ps(src.add((r0 + i) * cols + c0));
                let (r0v, r1, r2, r3) = (load(0), load(1), load(2), load(3));
                let (r4, r5, r6, r7) = (load(4), load(5), load(6), load(7));
                // Pairs of rows interleaved: [a0 b0 a1 b1 | a4 b4 a5 b5], …
                let t0 = _mm256_unpacklo_ps(r0v, r1);
                let t1 = _mm256_unpackhi_ps(r0v, r1);
                let t2 = _mm256_unpacklo_ps(r2, r3);
                let t3 = _mm256_unpackhi_ps(r2, r3);
                let t4 = _mm256_unpacklo_ps(r4, r5);
                let t5 = _mm256_unpackhi_ps(r4, r5);
                let t6 = _mm256_unpacklo_ps(r6, r7);
                let t7 = _mm256_unpackhi_ps(r6, r7);
                // Four rows' column j | column j + 4, for j = 0 … 3.
                let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let store = |j: usize, v: __m256| _mm256_storeu_ps(dst.add((c0 + j) * rows + r0), v);
                store(0, _mm256_permute2f128_ps::<0x20>(s0, s4));
                store(1, _mm256_permute2f128_ps::<0x20>(s1, s5));
                store(2, _mm256_permute2f128_ps::<0x20>(s2, s6));
                store(3, _mm256_permute2f128_ps::<0x20>(s3, s7));
                store(4, _mm256_permute2f128_ps::<0x31>(s0, s4));
                store(5, _mm256_permute2f128_ps::<0x31>(s1, s5));
                store(6, _mm256_permute2f128_ps::<0x31>(s2, s6));
                store(7, _mm256_permute2f128_ps::<0x31>(s3, s7));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape's transpose, whole tiles, edges and both, against the
    /// definition; and the value-by-value path alone (what CPUs without
    /// AVX run) on the same shapes.
    #[test]
    fn transposes_equal_the_definition() {
        for (rows, cols) in [(8, 8), (16, 24), (3, 5), (17, 9), (1, 20), (64, 1), (24, 64)] {
            let values: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            // NaN first, so that a value left unwritten shows.
            let written = |fill: &dyn Fn(&mut [MaybeUninit<f32>])| -> Vec<f32> {
                let mut out = vec![MaybeUninit::new(f32::NAN); rows * cols];
                fill(&mut out);
                // SAFETY: every value was set (NaN, then what `fill` wrote).
                out.iter().map(|v| unsafe { v.assume_init() }).collect()
            };
            let fast = written(&|out| transpose_into(&values, rows, cols, out));
            let plain = written(&|out| edges(&values, rows, cols, out, 0, 0));
            assert_eq!(transposed(&values, rows, cols), fast);
            for r in 0..rows {
                for c in 0..cols {
                    let expected = values[r * cols + c];
                    assert_eq!(fast[c * rows + r], expected, "{rows}×{cols} at ({r}, {c})");
                    assert_eq!(plain[c * rows + r], expected, "{rows}×{cols} plain at ({r}, {c})");
                }
            }
        }
    }
}
