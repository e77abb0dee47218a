//! Matrix products for the fused CPU ops, by the `gemm` crate (candle's
//! own CPU matrix kernel) over rayon's threads, straight on slices so that
//! no product's operands or result pass through candle's tensors.

use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// A row-major matrix or a transposed view of one: values and strides.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    values: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    pub fn rows(values: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(values.len(), rows * cols, "matrix values do not match its size");
        Self {
            values,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// `rows` rows of `cols` values each, `row_stride` values apart (the
    /// rest of each stride belongs to other matrices).
    pub fn strided(values: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(
            cols <= row_stride && (rows == 0 || (rows - 1) * row_stride + cols <= values.len()),
            "strided matrix runs past its values"
        );
        Self {
            values,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    pub fn transposed(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// What a product is accumulated onto.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    Zero,
    /// One value per column, on every row.
    Bias(&'a [f32]),
    /// A whole row-major matrix of the output's size, plus a bias row.
    BaseAndBias {
        base: &'a [f32],
        bias: &'a [f32],
    },
}

/// `a · b` as a new row-major matrix.
pub fn matmul(a: Matrix<'_>, b: Matrix<'_>) -> Vec<f32> {
    product(a, b, Start::Zero)
}

/// `a · b` on the calling thread alone, for callers that already keep
/// every thread busy.
pub fn matmul_on_this_thread(a: Matrix<'_>, b: Matrix<'_>) -> Vec<f32> {
    product_in_blocks(a, b, Start::Zero, 1)
}

/// `start + a · b`: each thread writes its own block of the start (bias
/// rows, or base plus bias) into the output and accumulates its product
/// onto it, so adding them costs no pass of its own (nor a serial one).
pub fn matmul_onto(a: Matrix<'_>, b: Matrix<'_>, start: Start<'_>) -> Vec<f32> {
    match start {
        Start::Zero => {}
        Start::Bias(bias) => assert_eq!(bias.len(), b.cols, "a bias of the wrong length"),
        Start::BaseAndBias { base, bias } => {
            assert_eq!(bias.len(), b.cols, "a bias of the wrong length");
            assert_eq!(base.len(), a.rows * b.cols, "a base of the wrong size");
        }
    }
    product(a, b, start)
}

/// Below this many multiply-adds a product runs on one thread.
const PARALLEL_FROM: usize = 1 << 18;

/// Why the work is split here rather than by `gemm`'s own threading: on the
/// project's 2-core machines that threading gave the distillation
/// iteration 10–20% less than cutting the output into one block per
/// thread, each a single-threaded product (measured side by side at batch
/// 4,096, width 256, 2 threads: 1.14–1.54 against 1.37–1.67 it/s), and
/// the blocks let each thread write its own part of the bias.
fn product(a: Matrix<'_>, b: Matrix<'_>, start: Start<'_>) -> Vec<f32> {
    product_in_blocks(a, b, start, blocks_for(a, b))
}

/// One block a thread for a product worth splitting, else one.
fn blocks_for(a: Matrix<'_>, b: Matrix<'_>) -> usize {
    let threads = rayon::current_num_threads();
    let work = a.rows * a.cols * b.cols;
    if threads > 1 && work >= PARALLEL_FROM {
        threads
    } else {
        1
    }
}

fn product_in_blocks(a: Matrix<'_>, b: Matrix<'_>, start: Start<'_>, blocks: usize) -> Vec<f32> {
    let len = a.rows * b.cols;
    let mut out = Vec::with_capacity(len);
    product_into(a, b, start, blocks, &mut out.spare_capacity_mut()[..len]);
    // SAFETY: `product_into` wrote every value.
    unsafe { out.set_len(len) };
    out
}

/// `a · b` written into `out` (row-major, `a.rows × b.cols` values, every
/// one written), on this thread alone.
pub fn matmul_on_this_thread_into(a: Matrix<'_>, b: Matrix<'_>, out: &mut [MaybeUninit<f32>]) {
    product_into(a, b, Start::Zero, 1, out);
}

/// `a · b` written into `out` as [`matmul_on_this_thread_into`], split
/// over the threads as [`matmul`] does.
pub fn matmul_into(a: Matrix<'_>, b: Matrix<'_>, out: &mut [MaybeUninit<f32>]) {
    product_into(a, b, Start::Zero, blocks_for(a, b), out);
}

/// `start + a · b` into `out`, its output cut into `blocks` blocks, each
/// one single-threaded `gemm` product (on rayon's threads when several).
fn product_into(a: Matrix<'_>, b: Matrix<'_>, start: Start<'_>, blocks: usize, out: &mut [MaybeUninit<f32>]) {
    assert_eq!(a.cols, b.rows, "matrix product of mismatched sizes");
    let (m, n) = (a.rows, b.cols);
    assert_eq!(out.len(), m * n, "a product's output of the wrong size");
    if a.cols == 0 {
        // An empty sum: the output below is left for `gemm` to write, and
        // this case is not left to how it treats k = 0.
        for (i, out) in out.iter_mut().enumerate() {
            out.write(match start {
                Start::Zero => 0.0,
                Start::Bias(bias) => bias[i % n],
                Start::BaseAndBias { base, bias } => base[i] + bias[i % n],
            });
        }
        return;
    }
    // The output's rows or columns, whichever is longer, cut into blocks.
    let by_rows = m >= n;
    let length = if by_rows { m } else { n };
    let out_ptr = OutPtr(out.as_mut_ptr().cast::<f32>());
    let block = |i: usize| {
        let from = boundary(length, blocks, i);
        let to = boundary(length, blocks, i + 1);
        let (rows, cols) = if by_rows {
            (from..to, 0..n)
        } else {
            (0..m, from..to)
        };
        // SAFETY: the blocks cover disjoint parts of the output's m × n
        // values; within one the start's writes and `gemm` stay inside it.
        unsafe { product_block(a, b, start, out_ptr.get(), n, rows, cols) }
    };
    if blocks == 1 {
        block(0);
    } else {
        (0..blocks).into_par_iter().for_each(block);
    }
}

/// The block's first index of `blocks` blocks over `length`, on multiples
/// of 16 (`gemm`'s widest kernel) but the last.
fn boundary(length: usize, blocks: usize, i: usize) -> usize {
    if i == blocks {
        length
    } else {
        (length * i / blocks) / 16 * 16
    }
}

/// The output's values, shared by the threads that each write one block.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the threads write disjoint blocks (see `product_into`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Through a method, so that closures take the whole (shareable)
    /// wrapper rather than its raw pointer.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `out[rows, cols] = start[rows, cols] + a[rows, :] · b[:, cols]`, `out`
/// row-major with `n` columns (as the base is).
///
/// # Safety
/// `out` holds `a.rows × n` values, and `rows`, `cols` lie inside them.
#[allow(clippy::too_many_arguments)]
unsafe fn product_block(
    a: Matrix<'_>,
    b: Matrix<'_>,
    start: Start<'_>,
    out: *mut f32,
    n: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) {
    if rows.is_empty() || cols.is_empty() {
        return;
    }
    // SAFETY: the caller's ranges lie inside the output and the operands
    // (whose sizes `Matrix::rows` checked); gemm reads and writes only the
    // block's rows of `a`, columns of `b` and part of `out`.
    unsafe {
        let out = out.add(rows.start * n + cols.start);
        for (r, row) in rows.clone().enumerate() {
            let to = out.add(r * n);
            match start {
                Start::Zero => {}
                Start::Bias(bias) => {
                    std::ptr::copy_nonoverlapping(bias[cols.clone()].as_ptr(), to, cols.len());
                }
                Start::BaseAndBias { base, bias } => {
                    // Written through the pointer: the output is not yet
                    // initialised, so no slice of it may be made.
                    let base = &base[row * n..][cols.clone()];
                    for (c, (v, b)) in base.iter().zip(&bias[cols.clone()]).enumerate() {
                        to.add(c).write(v + b);
                    }
                }
            }
        }
        gemm::gemm(
            rows.len(),
            cols.len(),
            a.cols,
            out,
            1,
            n as isize,
            !matches!(start, Start::Zero),
            a.values.as_ptr().add(rows.start * a.row_stride),
            a.col_stride as isize,
            a.row_stride as isize,
            b.values.as_ptr().add(cols.start * b.col_stride),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// Every block split (by rows when the output is tall, by columns when
    /// it is wide, with uneven and empty blocks) gives the plain triple
    /// loop's product, transposed operands included, onto nothing, a bias
    /// row, or a whole base plus the bias.
    #[test]
    fn products_cut_into_blocks_equal_the_triple_loop() {
        for (m, k, n) in [(70, 9, 20), (20, 9, 70), (5, 3, 40), (33, 17, 33), (4, 0, 3)] {
            let a_values = values(m * k, 1);
            let b_values = values(k * n, 2);
            let bias = values(n, 3);
            let base = values(m * n, 4);
            // a stored transposed, b as rows: both views of the same maths.
            let a_t: Vec<f32> = (0..k * m).map(|i| a_values[(i % m) * k + i / m]).collect();
            let a = Matrix::rows(&a_t, k, m).transposed();
            let b = Matrix::rows(&b_values, k, n);
            let product: Vec<f32> = (0..m * n)
                .map(|i| {
                    let (r, c) = (i / n, i % n);
                    (0..k)
                        .map(|j| a_values[r * k + j] * b_values[j * n + c])
                        .sum::<f32>()
                })
                .collect();
            for blocks in [1, 2, 3, 7] {
                let without = product_in_blocks(a, b, Start::Zero, blocks);
                let with_bias = product_in_blocks(a, b, Start::Bias(&bias), blocks);
                let onto_base = product_in_blocks(
                    a,
                    b,
                    Start::BaseAndBias {
                        base: &base,
                        bias: &bias,
                    },
                    blocks,
                );
                for i in 0..m * n {
                    let case = format!("{m}×{k}×{n}, {blocks} blocks, value {i}");
                    assert!((without[i] - product[i]).abs() < 1e-4, "{case}");
                    assert!(
                        (with_bias[i] - bias[i % n] - product[i]).abs() < 1e-4,
                        "{case} with bias"
                    );
                    let expected = base[i] + bias[i % n] + product[i];
                    assert!((onto_base[i] - expected).abs() < 1e-4, "{case} onto a base");
                }
            }
        }
    }

    /// The products into a caller's buffer write every value (the buffer
    /// starts as NaN) and equal `matmul`'s bit for bit, split or not.
    #[test]
    fn products_into_a_buffer_write_every_value() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for (m, k, n) in [(70, 9, 20), (20, 9, 70), (600, 30, 40), (3, 0, 4)] {
            let (a, b) = (values(m * k, 5), values(k * n, 6));
            let (a, b) = (Matrix::rows(&a, m, k), Matrix::rows(&b, k, n));
            let expected = product_in_blocks(a, b, Start::Zero, 1);
            let into = |product: &dyn Fn(&mut [MaybeUninit<f32>])| {
                let mut out = vec![MaybeUninit::new(f32::NAN); m * n];
                product(&mut out);
                // SAFETY: every value was set (NaN, then the product's).
                out.iter()
                    .map(|v| unsafe { v.assume_init() })
                    .collect::<Vec<f32>>()
            };
            let one = into(&|out| matmul_on_this_thread_into(a, b, out));
            let split = pool.install(|| into(&|out| matmul_into(a, b, out)));
            for (name, got) in [("on one thread", one), ("split", split)] {
                let same = got.iter().zip(&expected).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{m}×{k}×{n} {name}: not the product");
            }
        }
    }

    #[test]
    #[should_panic(expected = "a base of the wrong size")]
    fn a_base_of_the_wrong_size_is_refused() {
        let (a, b) = (values(6, 1), values(6, 2));
        let (base, bias) = (values(8, 3), values(3, 4));
        matmul_onto(
            Matrix::rows(&a, 2, 3),
            Matrix::rows(&b, 3, 2),
            Start::BaseAndBias {
                base: &base,
                bias: &bias[..2],
            },
        );
    }
}
