//! Sums over f32 values in independent lanes, for the fused kernels'
//! reductions (group-norm statistics, softmax rows, bias gradients).
//!
//! Why by hand: an iterator's `sum` of f32 is one chain of additions the
//! compiler may not reorder (floating-point addition is not associative),
//! a few cycles a value; lanes of independent accumulators let it use
//! vector registers. Inline, so that a caller compiled for AVX2
//! ([`super::host::vectorised`]) gets them in AVX2.

/// Values a run of lanes sums in f32 before its totals go into f64 sums.
const RUN: usize = 256;
/// Independent f32 accumulators: one AVX-512 register, or two AVX ones.
const LANES: usize = 16;

/// The two sums of `terms(a_i, b_i)` over the pairs of `a` and `b`: 16 f32
/// lanes each over runs of 256 pairs, each run's totals added in f64. Why
/// not one f64 accumulator: its additions form one chain the compiler may
/// not reorder, a few cycles each; that made the group norm's forward
/// 4–5× slower than PyTorch's at the CIFAR-10 U-Net's sizes (`cargo bench
/// --bench unet_ops -- cifar`). A lane adds at most 16 terms of a run
/// (lane 0 up to 15 more from its tail), so the rounding stays near f32's
/// own.
#[inline(always)]
pub(super) fn pair_sums(a: &[f32], b: &[f32], terms: impl Fn(f32, f32) -> (f32, f32)) -> (f64, f64) {
    let mut sums = (0f64, 0f64);
    for (a, b) in a.chunks(RUN).zip(b.chunks(RUN)) {
        let (mut first, mut second) = ([0f32; LANES], [0f32; LANES]);
        let (mut a_whole, mut b_whole) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        for (a, b) in (&mut a_whole).zip(&mut b_whole) {
            for ((f, s), (&a, &b)) in first.iter_mut().zip(&mut second).zip(a.iter().zip(b)) {
                let (x, y) = terms(a, b);
                *f += x;
                *s += y;
            }
        }
        for (&a, &b) in a_whole.remainder().iter().zip(b_whole.remainder()) {
            let (x, y) = terms(a, b);
            first[0] += x;
            second[0] += y;
        }
        sums.0 += first.iter().map(|&l| l as f64).sum::<f64>();
        sums.1 += second.iter().map(|&l| l as f64).sum::<f64>();
    }
    sums
}

/// Σ term(v) over `values`, in lanes as [`pair_sums`].
#[inline(always)]
pub(super) fn sum_of(values: &[f32], term: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0f64;
    for run in values.chunks(RUN) {
        let mut lanes = [0f32; LANES];
        let mut whole = run.chunks_exact(LANES);
        for values in &mut whole {
            for (lane, &v) in lanes.iter_mut().zip(values) {
                *lane += term(v);
            }
        }
        let tail: f32 = whole.remainder().iter().map(|&v| term(v)).sum();
        total += lanes.iter().map(|&l| l as f64).sum::<f64>() + tail as f64;
    }
    total
}

/// The largest of term(v) over `values` (−∞ if none), in lanes as
/// [`sum_of`].
#[inline(always)]
pub(super) fn max_of(values: &[f32], term: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut whole = values.chunks_exact(LANES);
    for values in &mut whole {
        for (lane, &v) in lanes.iter_mut().zip(values) {
            *lane = lane.max(term(v));
        }
    }
    let tail = whole.remainder().iter().map(|&v| term(v));
    lanes.into_iter().chain(tail).fold(f32::NEG_INFINITY, f32::max)
}
