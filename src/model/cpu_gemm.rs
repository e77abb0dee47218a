//! Matrix products for the fused CPU ops, by the `gemm` crate (candle's
//! own CPU matrix kernel) on candle's thread count, straight on slices so
//! that no product's operands or result pass through candle's tensors.

use gemm::Parallelism;

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

/// `a · b` as a new row-major matrix.
pub fn matmul(a: Matrix<'_>, b: Matrix<'_>) -> Vec<f32> {
    let mut out = vec![0f32; a.rows * b.cols];
    product(a, b, &mut out, false);
    out
}

/// `out += a · b`, `out` row-major (a.rows, b.cols): how a bias already
/// written into `out` is added without a pass of its own.
pub fn matmul_add(a: Matrix<'_>, b: Matrix<'_>, out: &mut [f32]) {
    product(a, b, out, true);
}

fn product(a: Matrix<'_>, b: Matrix<'_>, out: &mut [f32], accumulate: bool) {
    assert_eq!(a.cols, b.rows, "matrix product of mismatched sizes");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(out.len(), m * n, "matrix product into a buffer of the wrong size");
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: `Matrix::rows` checked that each operand's values cover
    // rows × cols at its strides (a transposed view swaps both), and `out`
    // holds m × n (checked above); gemm reads and writes only inside those
    // bounds.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.values.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.values.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
