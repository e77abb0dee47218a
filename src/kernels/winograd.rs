//! 3 × 3, stride-1 convolutions by Winograd's minimal filtering F(2 × 2,
//! 3 × 3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016): each 2 × 2 block of outputs from a 4 × 4 window of
//! the input with 16 multiplications a channel pair instead of 36.
//!
//! Why: the patch-matrix convolution (`conv.rs`) spends most of its time
//! in one large `gemm` product, which runs at about 78% of the CPU's peak
//! against oneDNN's ~95%; at the U-Net's sizes that left its 3 × 3
//! convolutions' forward at 0.5–0.9× PyTorch's. Here the same work is 16
//! products of a quarter the size each (2.25× fewer multiply-adds), with
//! transforms that are elementwise over the channels:
//!
//! - the filters: U = G g Gᵀ, 16 (O × C) matrices, one a position ξ of
//!   the 4 × 4 transform;
//! - the input: V = Bᵀ d B for every tile d (the 4 × 4 window of a 2 × 2
//!   output block, zeros where it overhangs the image), channels-last, so
//!   each of a tile's 16 rows is C contiguous values;
//! - per position, one product M_ξ = V_ξ · U_ξ (tiles × C by C × O);
//! - the output: Y = Aᵀ m A for every tile's 16 products, plus the bias.
//!
//! The transforms' coefficients are 0, ±1 and ±½, so the values are the
//! direct convolution's to a few roundings (tested against candle's). The
//! input gradient of a 3 × 3 stride-1 convolution is itself one (the
//! filters flipped and their channels swapped, padding 2 − p), so the
//! backward uses this too; the kernel gradient stays a patch product.

use super::gemm::{Matrix, matmul_on_this_thread};
use super::host::vectorised;
use super::transpose::{transpose_into, transposed};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Tiles a chunk's products aim at: long enough for `gemm` to run at
/// speed, short enough for a chunk's transforms to stay near the cache.
const CHUNK_TILES: usize = 256;

/// Channels a transform works on at a time (two AVX registers).
const LANES: usize = 16;

/// Channel pairs a task transforms the filters of.
const PAIRS_A_TASK: usize = 4096;

/// Whether F(2 × 2, 3 × 3) pays for a convolution with these sizes: a
/// 3 × 3 stride-1 kernel with padding at most 2 (the input gradient's
/// padding is 2 − p), and enough channels on both sides for the 16
/// products (over C, into O) to run at speed. Below that, a product over
/// 9·C patch values is the better one (the first and last convolutions
/// of an image U-Net have 3 channels on one side).
pub fn pays(kernel: usize, stride: usize, padding: usize, channels: usize, out_channels: usize) -> bool {
    kernel == 3 && stride == 1 && padding <= 2 && channels >= 32 && out_channels >= 32
}

/// A 3 × 3 filter bank in the transform's domain: 16 (O × C) matrices,
/// row-major, one after another, and which way they map channels.
pub struct Filters {
    values: Vec<f32>,
    out_channels: usize,
    channels: usize,
    /// The input gradient's: flipped, mapping O channels onto C.
    adjoint: bool,
}

impl Filters {
    /// `weight` (O, C, 3, 3) as the convolution applies it, C → O.
    pub fn forward(weight: &[f32], out_channels: usize, channels: usize) -> Self {
        Self::transformed(weight, out_channels, channels, false)
    }

    /// The filters of the convolution's input gradient, O → C: each
    /// kernel flipped in both directions, channels swapped.
    pub fn adjoint(weight: &[f32], out_channels: usize, channels: usize) -> Self {
        Self::transformed(weight, out_channels, channels, true)
    }

    fn transformed(weight: &[f32], out_channels: usize, channels: usize, adjoint: bool) -> Self {
        let pairs = out_channels * channels;
        assert_eq!(weight.len(), pairs * 9, "winograd: a (O, C, 3, 3) weight");
        // Over the threads in parts of the pairs, each part writing its
        // share of all 16 matrices (one thread took longer than a 4 × 4
        // convolution's product for a 512 → 256 bank).
        let mut values = Vec::with_capacity(16 * pairs);
        let spare = &mut values.spare_capacity_mut()[..16 * pairs];
        let mut parts: Vec<Vec<&mut [MaybeUninit<f32>]>> = (0..pairs.div_ceil(PAIRS_A_TASK))
            .map(|_| Vec::with_capacity(16))
            .collect();
        for matrix in spare.chunks_exact_mut(pairs) {
            for (part, share) in parts.iter_mut().zip(matrix.chunks_mut(PAIRS_A_TASK)) {
                part.push(share);
            }
        }
        parts
            .into_par_iter()
            .zip(weight.par_chunks(PAIRS_A_TASK * 9))
            .for_each(|(mut shares, weight)| {
                vectorised(
                    #[inline(always)]
                    || transform_part(weight, adjoint, &mut shares),
                )
            });
        // SAFETY: the parts cover every pair, each writing its shares of
        // all 16 matrices in whole.
        unsafe { values.set_len(16 * pairs) };
        Self {
            values,
            out_channels,
            channels,
            adjoint,
        }
    }

    /// Channels in and out of the convolution these filters apply.
    fn maps(&self) -> (usize, usize) {
        if self.adjoint {
            (self.out_channels, self.channels)
        } else {
            (self.channels, self.out_channels)
        }
    }

    /// Position ξ's matrix, (channels in × channels out).
    fn matrix(&self, xi: usize) -> Matrix<'_> {
        let pairs = self.out_channels * self.channels;
        let m = Matrix::rows(
            &self.values[xi * pairs..][..pairs],
            self.out_channels,
            self.channels,
        );
        if self.adjoint { m } else { m.transposed() }
    }
}

/// The filters of consecutive channel pairs (9 taps each, in `weight`)
/// transformed into their `shares` of the 16 matrices, [`LANES`] pairs at
/// a time; flipped both ways for the adjoint.
#[inline(always)]
fn transform_part(weight: &[f32], adjoint: bool, shares: &mut [&mut [MaybeUninit<f32>]]) {
    for (block, taps) in weight.chunks(LANES * 9).enumerate() {
        let n = taps.len() / 9;
        let mut g = [[0f32; LANES]; 9];
        for (l, kernel) in taps.chunks_exact(9).enumerate() {
            for (t, &w) in kernel.iter().enumerate() {
                // Flipped, tap (r, s) is (2 − r, 2 − s): index 8 − t.
                g[if adjoint { 8 - t } else { t }][l] = w;
            }
        }
        for (share, u) in shares.iter_mut().zip(&filter_transform(&g)) {
            share[block * LANES..][..n].write_copy_of_slice(&u[..n]);
        }
    }
}

/// G g Gᵀ for [`LANES`] kernels at once (g's 9 taps and the result's
/// 16 positions row-major), with G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1].
#[inline(always)]
fn filter_transform(g: &[[f32; LANES]; 9]) -> [[f32; LANES]; 16] {
    let spread = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    // G g (4 × 3): each column of g spread over four rows.
    let mut columns = [[0f32; LANES]; 12];
    for j in 0..3 {
        for l in 0..LANES {
            let s = spread(g[j][l], g[3 + j][l], g[6 + j][l]);
            for (i, value) in s.into_iter().enumerate() {
                columns[i * 3 + j][l] = value;
            }
        }
    }
    // (G g) Gᵀ: each row spread over four columns.
    let mut u = [[0f32; LANES]; 16];
    for i in 0..4 {
        for l in 0..LANES {
            let s = spread(columns[i * 3][l], columns[i * 3 + 1][l], columns[i * 3 + 2][l]);
            for (j, value) in s.into_iter().enumerate() {
                u[i * 4 + j][l] = value;
            }
        }
    }
    u
}

/// Sizes of one convolution by [`convolve`]: images (C, H, W) in, padding
/// on every side, (H + 2p − 2, W + 2p − 2) out.
#[derive(Debug, Clone, Copy)]
pub struct Images {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub padding: usize,
}

impl Images {
    fn out_height(&self) -> usize {
        self.height + 2 * self.padding - 2
    }

    fn out_width(&self) -> usize {
        self.width + 2 * self.padding - 2
    }

    /// 2 × 2 output blocks down and across one image.
    fn tiles(&self) -> (usize, usize) {
        (self.out_height().div_ceil(2), self.out_width().div_ceil(2))
    }

    fn tiles_per_image(&self) -> usize {
        let (down, across) = self.tiles();
        down * across
    }
}

/// The images `x` (n × (C, H, W)) convolved with `filters`, plus `bias`
/// per output channel if given: n × (O, H', W'). Chunks of whole images
/// over rayon's threads, and within a chunk its 16 products; each product
/// on one thread, so the values do not depend on the threads.
pub fn convolve(x: &[f32], images: Images, filters: &Filters, bias: Option<&[f32]>) -> Vec<f32> {
    let (channels, out_channels) = filters.maps();
    assert_eq!(channels, images.channels, "winograd: filters for other channels");
    let image_len = channels * images.height * images.width;
    assert!(
        image_len > 0 && x.len().is_multiple_of(image_len),
        "winograd: whole images"
    );
    assert!(images.height + 2 * images.padding >= 3 && images.width + 2 * images.padding >= 3);
    let out_image_len = out_channels * images.out_height() * images.out_width();
    let count = x.len() / image_len;
    let per_chunk = (CHUNK_TILES / images.tiles_per_image()).clamp(1, count.max(1));
    let len = count * out_image_len;
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(per_chunk * out_image_len)
        .zip(x.par_chunks(per_chunk * image_len))
        .for_each(|(out, x)| convolve_chunk(x, images, filters, bias, out));
    // SAFETY: every chunk wrote all its images' values.
    unsafe { out.set_len(len) };
    out
}

/// One chunk of whole images: transform, 16 products, transform back.
fn convolve_chunk(
    x: &[f32],
    images: Images,
    filters: &Filters,
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
) {
    let (channels, out_channels) = filters.maps();
    let image_len = channels * images.height * images.width;
    let per_image = images.tiles_per_image();
    let tiles = x.len() / image_len * per_image;
    // V: a row of 16 × C values a tile, position by position.
    let tile_len = 16 * channels;
    let mut v = Vec::with_capacity(tiles * tile_len);
    v.spare_capacity_mut()[..tiles * tile_len]
        .par_chunks_mut(per_image * tile_len)
        .zip(x.par_chunks(image_len))
        .for_each(|(rows, image)| transform_image(image, images, rows));
    // SAFETY: each image's transform wrote all its tiles' rows.
    unsafe { v.set_len(tiles * tile_len) };
    let products: Vec<Vec<f32>> = (0..16)
        .into_par_iter()
        .map(|xi| {
            let v_xi = Matrix::strided(&v[xi * channels..], tiles, channels, tile_len);
            matmul_on_this_thread(v_xi, filters.matrix(xi))
        })
        .collect();
    let out_plane = images.out_height() * images.out_width();
    out.par_chunks_mut(out_channels * out_plane)
        .enumerate()
        .for_each(|(i, image)| {
            let rows = i * per_image..(i + 1) * per_image;
            let pixels = untransform_image(&products, rows, out_channels, images, bias);
            transpose_into(&pixels, out_plane, out_channels, image);
        });
}

/// One image's tiles, Bᵀ d B each, into `rows` (a row of 16 × C values a
/// tile, every value written), from a channels-last copy of the image.
fn transform_image(image: &[f32], images: Images, rows: &mut [MaybeUninit<f32>]) {
    let Images {
        channels: c,
        height,
        width,
        padding,
    } = images;
    let pixels = transposed(image, c, height * width);
    let zeros = vec![0f32; c];
    let (_, across) = images.tiles();
    for (t, row) in rows.chunks_exact_mut(16 * c).enumerate() {
        let (top, left) = (2 * (t / across), 2 * (t % across));
        // The window's 16 pixels, row by row; zeros off the image.
        let window: [&[f32]; 16] = std::array::from_fn(|at| {
            let y = (top + at / 4).checked_sub(padding).filter(|&y| y < height);
            let x = (left + at % 4).checked_sub(padding).filter(|&x| x < width);
            match (y, x) {
                (Some(y), Some(x)) => &pixels[(y * width + x) * c..][..c],
                _ => &zeros,
            }
        });
        vectorised(
            #[inline(always)]
            || input_transform(&window, c, row),
        );
    }
}

/// Bᵀ d B over every channel, with Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0;
/// 0 1 0 −1], in blocks of [`LANES`] channels.
#[inline(always)]
fn input_transform(window: &[&[f32]; 16], c: usize, row: &mut [MaybeUninit<f32>]) {
    // Inlined (as `vectorised` needs), not compiled on its own for SSE2.
    lane_blocks(
        window,
        c,
        #[inline(always)]
        |from, n, d| {
            let v = combine(d, |a, b, c, d| [a - c, b + c, c - b, b - d]);
            for (xi, v) in v.iter().enumerate() {
                write_lanes(&mut row[xi * c + from..][..n], v);
            }
        },
    );
}

/// Calls `each(from, n, block)` for the blocks of [`LANES`] values (`n`
/// in the last, part-filled one) of 16 runs of `len` values: `block`
/// holds the 16 runs' values `from .. from + n`, zeros after them.
#[inline(always)]
fn lane_blocks(runs: &[&[f32]; 16], len: usize, mut each: impl FnMut(usize, usize, &[[f32; LANES]; 16])) {
    let mut from = 0;
    while from < len {
        let n = LANES.min(len - from);
        let mut block = [[0f32; LANES]; 16];
        for (lanes, run) in block.iter_mut().zip(runs) {
            if n == LANES {
                // A copy of known length: vector moves, not a `memcpy`
                // call (16 of them a block were a tenth of a convolution).
                *lanes = run[from..][..LANES].try_into().unwrap();
            } else {
                lanes[..n].copy_from_slice(&run[from..][..n]);
            }
        }
        each(from, n, &block);
        from += n;
    }
}

/// `out` = the first `out.len()` of `lanes`, as vector moves where that
/// is all of them (a copy of unknown length is a `memcpy` call).
#[inline(always)]
fn write_lanes(out: &mut [MaybeUninit<f32>], lanes: &[f32]) {
    if let (Ok(out), Ok(lanes)) = (
        <&mut [MaybeUninit<f32>; LANES]>::try_from(&mut *out),
        <&[f32; LANES]>::try_from(&lanes[..LANES.min(lanes.len())]),
    ) {
        *out = lanes.map(MaybeUninit::new);
    } else {
        out.write_copy_of_slice(&lanes[..out.len()]);
    }
}

/// L x Lᵀ for a 4 × 4 block of lane vectors `x` (row-major) and the
/// 4 × 4 `L` that `mix` applies to four vectors: the same mix down the
/// columns, then along the rows.
#[inline(always)]
fn combine(x: &[[f32; LANES]; 16], mix: impl Fn(f32, f32, f32, f32) -> [f32; 4]) -> [[f32; LANES]; 16] {
    let mut columns = [[0f32; LANES]; 16];
    for j in 0..4 {
        for l in 0..LANES {
            let m = mix(x[j][l], x[4 + j][l], x[8 + j][l], x[12 + j][l]);
            for (i, value) in m.into_iter().enumerate() {
                columns[i * 4 + j][l] = value;
            }
        }
    }
    let mut out = [[0f32; LANES]; 16];
    for i in 0..4 {
        for l in 0..LANES {
            let row = &columns[i * 4..][..4];
            let m = mix(row[0][l], row[1][l], row[2][l], row[3][l]);
            for (j, value) in m.into_iter().enumerate() {
                out[i * 4 + j][l] = value;
            }
        }
    }
    out
}

/// One image's outputs, channels-last (H'·W', O), from its tiles' rows of
/// the 16 products: Aᵀ m A each, with Aᵀ = [1 1 1 0; 0 1 −1 −1], plus the
/// bias; the blocks' halves past an odd edge dropped.
fn untransform_image(
    products: &[Vec<f32>],
    tiles: std::ops::Range<usize>,
    o: usize,
    images: Images,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (height, width) = (images.out_height(), images.out_width());
    let (_, across) = images.tiles();
    let mut pixels = Vec::with_capacity(height * width * o);
    let spare = &mut pixels.spare_capacity_mut()[..height * width * o];
    for (t, tile) in tiles.enumerate() {
        let (top, left) = (2 * (t / across), 2 * (t % across));
        let m: [&[f32]; 16] = std::array::from_fn(|xi| &products[xi][tile * o..][..o]);
        vectorised(
            #[inline(always)]
            || {
                output_transform(&m, o, bias, |at, from, values| {
                    let (y, x) = (top + at / 2, left + at % 2);
                    if y < height && x < width {
                        write_lanes(&mut spare[(y * width + x) * o + from..][..values.len()], values);
                    }
                })
            },
        );
    }
    // SAFETY: every output pixel lies in one tile, which wrote its O values.
    unsafe { pixels.set_len(height * width * o) };
    pixels
}

/// Aᵀ m A (+ bias) over every output channel in blocks of [`LANES`],
/// handing each of the block's 4 pixels (row-major) to `write` with the
/// channel it starts at.
#[inline(always)]
fn output_transform(
    m: &[&[f32]; 16],
    o: usize,
    bias: Option<&[f32]>,
    mut write: impl FnMut(usize, usize, &[f32]),
) {
    lane_blocks(
        m,
        o,
        #[inline(always)]
        |from, n, x| {
            // The 4-row mix with its last two rows unused: Aᵀ has two.
            let y = combine(x, |a, b, c, d| [a + b + c, b - c - d, 0.0, 0.0]);
            for (at, index) in [0, 1, 4, 5].into_iter().enumerate() {
                let mut value = y[index];
                if let Some(bias) = bias {
                    value[..n]
                        .iter_mut()
                        .zip(&bias[from..])
                        .for_each(|(v, b)| *v += b);
                }
                write(at, from, &value[..n]);
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G g Gᵀ and Bᵀ d B, then Aᵀ (U ⊙ V) A, is the 2 × 2 correlation
    /// of a 4 × 4 window with a 3 × 3 kernel: checked value by value on
    /// one tile of integers (every step exact in f32).
    #[test]
    fn one_tile_is_the_direct_correlation() {
        let g: [[f32; 3]; 3] = [[1.0, -2.0, 3.0], [0.0, 4.0, -1.0], [2.0, 1.0, -3.0]];
        let d: [f32; 16] = std::array::from_fn(|i| ((i * 7 + 3) % 11) as f32 - 5.0);
        let mut taps = [[0f32; LANES]; 9];
        for (t, tap) in taps.iter_mut().enumerate() {
            tap[0] = g[t / 3][t % 3];
        }
        let u = filter_transform(&taps);
        let mut x = [[0f32; LANES]; 16];
        for (x, &d) in x.iter_mut().zip(&d) {
            x[0] = d;
        }
        let v = combine(&x, |a, b, c, d| [a - c, b + c, c - b, b - d]);
        let mut m = [[0f32; LANES]; 16];
        for xi in 0..16 {
            m[xi][0] = u[xi][0] * v[xi][0];
        }
        let y = combine(&m, |a, b, c, d| [a + b + c, b - c - d, 0.0, 0.0]);
        for (at, index) in [0, 1, 4, 5].into_iter().enumerate() {
            let (r, s) = (at / 2, at % 2);
            let direct: f32 = (0..9)
                .map(|t| d[(r + t / 3) * 4 + s + t % 3] * g[t / 3][t % 3])
                .sum();
            assert_eq!(y[index][0], direct, "output ({r}, {s})");
        }
    }

    #[test]
    fn it_pays_only_for_wide_3x3_stride_1_convolutions() {
        assert!(pays(3, 1, 1, 256, 256));
        assert!(!pays(3, 1, 1, 3, 128), "three input channels");
        assert!(!pays(3, 1, 1, 128, 3), "three output channels");
        assert!(!pays(3, 2, 1, 256, 256), "stride 2");
        assert!(!pays(1, 1, 0, 256, 256), "1 × 1");
        assert!(
            !pays(3, 1, 3, 256, 256),
            "the input gradient's padding would be negative"
        );
    }
}
