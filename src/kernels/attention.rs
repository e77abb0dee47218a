//! Multi-head scaled dot-product attention over each image's pixels on
//! the CPU as one op, forward and backward.
//!
//! Why by hand: built from candle's ops, the heads were split and merged
//! by transposes made contiguous (four copies of the rows forward, as
//! many back, each a serial strided copy), and the keys transposed once
//! more for the scores; at the CIFAR-10 U-Net's 16 × 16 attention those
//! copies made its forward + backward 0.85–0.92× PyTorch's. Here every
//! head's matrices are read in place from the (B·P, C) rows (a head is a
//! block of columns: a strided matrix for `gemm`), the products run on
//! plain slices; one head's results (as in diffusers' DDPM U-Nets) are
//! written straight into the image's rows, several heads' are computed
//! in parallel and copied into their columns. The scores are normalised
//! in W's buffer, and dS computed in dW's. Per image b and head h, with
//! s = 1/√d:
//!
//! ```text
//! W = softmax(s · Q Kᵀ),  O = W V
//! dV = Wᵀ dO,  dW = dO Vᵀ,  dS = s · W ⊙ (dW − Σ dW ⊙ W),  dQ = dS K,  dK = dSᵀ Q
//! ```
//!
//! The forward keeps W (B·H·P² values, as the graph of candle's ops kept
//! its softmax) for the backward. Other devices keep candle's ops.

use super::gemm::{Matrix, matmul, matmul_into, matmul_on_this_thread, matmul_on_this_thread_into};
use super::host::{f32_values, vectorised, with_values};
use super::softmax::{softmax_row_backward_in_place, softmax_row_in_place};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// Rows (B·P, C): B images of P pixels, C channels in `heads` heads.
#[derive(Debug, Clone, Copy)]
struct Heads {
    batch: usize,
    pixels: usize,
    channels: usize,
    heads: usize,
}

impl Heads {
    fn head_dim(&self) -> usize {
        self.channels / self.heads
    }

    fn image_len(&self) -> usize {
        self.pixels * self.channels
    }

    fn weights_len(&self) -> usize {
        self.heads * self.pixels * self.pixels
    }

    /// Head h of one image's rows: (P, d), C values apart.
    fn of<'a>(&self, image: &'a [f32], h: usize) -> Matrix<'a> {
        let d = self.head_dim();
        Matrix::strided(&image[h * d..], self.pixels, d, self.channels)
    }

    /// `a · b`, on this thread where the images and heads already keep
    /// every thread busy, else over the threads. The split cuts the
    /// output, not the sums: where they are shorter than 512 terms (P and
    /// d under 512, as in every U-Net here), `gemm` adds them in the same
    /// order either way, so the values do not depend on the threads;
    /// longer sums it cuts by its cache sizes, which may then differ in
    /// the last bits.
    fn product(&self, a: Matrix<'_>, b: Matrix<'_>) -> Vec<f32> {
        if self.threads_busy() {
            matmul_on_this_thread(a, b)
        } else {
            matmul(a, b)
        }
    }

    /// [`Self::product`] written into `out` (every value).
    fn product_into(&self, a: Matrix<'_>, b: Matrix<'_>, out: &mut [MaybeUninit<f32>]) {
        if self.threads_busy() {
            matmul_on_this_thread_into(a, b, out)
        } else {
            matmul_into(a, b, out)
        }
    }

    fn threads_busy(&self) -> bool {
        self.batch * self.heads >= rayon::current_num_threads()
    }

    /// Each head's (P, d) result, `head(h)`, written into its columns of
    /// one image's rows (every value of `image` written: the heads cover
    /// the columns).
    fn merge<'a>(&self, head: impl Fn(usize) -> &'a [f32], image: &mut [MaybeUninit<f32>]) {
        let d = self.head_dim();
        for (p, row) in image.chunks_exact_mut(self.channels).enumerate() {
            for h in 0..self.heads {
                row[h * d..][..d].write_copy_of_slice(&head(h)[p * d..][..d]);
            }
        }
    }
}

/// Image b's part of `values`, `len` values an image.
fn image_of(values: &[f32], b: usize, len: usize) -> &[f32] {
    &values[b * len..][..len]
}

/// `values` once all are written, as plain values.
///
/// # Safety
/// Every value of `values` has been written.
unsafe fn written(values: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: MaybeUninit<f32> has f32's layout; all are initialised
    // (the caller's promise).
    unsafe { &mut *(values as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

#[derive(Debug)]
struct CpuAttention {
    shape: Heads,
    scale: f32,
    /// The softmax weights W, (B, H, P, P), from the forward.
    weights: OnceLock<Vec<f32>>,
}

impl CpuAttention {
    /// O for every image as (B·P, C) rows, and W; image by image over the
    /// threads, and within an image its heads in parallel.
    fn forward(&self, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let s = self.shape;
        let (p, image_len, weights_len) = (s.pixels, s.image_len(), s.weights_len());
        let (len, all_weights) = (s.batch * image_len, s.batch * weights_len);
        let mut out = Vec::with_capacity(len);
        let mut weights = Vec::with_capacity(all_weights);
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(image_len)
            .zip(weights.spare_capacity_mut()[..all_weights].par_chunks_mut(weights_len))
            .enumerate()
            .for_each(|(b, (out, weights))| {
                let image = |t| image_of(t, b, image_len);
                let (q, k, v) = (image(q), image(k), image(v));
                if s.heads == 1 {
                    // One head spans the rows: its O is written in place.
                    let w = self.head_weights(q, k, 0, weights);
                    s.product_into(Matrix::rows(w, p, p), s.of(v, 0), out);
                    return;
                }
                let heads: Vec<Vec<f32>> = weights
                    .par_chunks_mut(p * p)
                    .enumerate()
                    .map(|(h, w)| {
                        let w = self.head_weights(q, k, h, w);
                        s.product(Matrix::rows(w, p, p), s.of(v, h))
                    })
                    .collect();
                s.merge(|h| &heads[h], out);
            });
        // SAFETY: every image wrote all its rows (one head's product, or
        // the merge of several, which cover the columns) and all its
        // heads' weights.
        unsafe {
            out.set_len(len);
            weights.set_len(all_weights);
        }
        (out, weights)
    }

    /// dQ, dK, dV for the output gradient `grad`, from the forward's W.
    fn backward(&self, q: &[f32], k: &[f32], v: &[f32], grad: &[f32]) -> [Vec<f32>; 3] {
        let s = self.shape;
        let (p, image_len, weights_len) = (s.pixels, s.image_len(), s.weights_len());
        let weights = self.weights.get().expect("the forward keeps W for the backward");
        let len = s.batch * image_len;
        let mut grads: [Vec<f32>; 3] = [(); 3].map(|_| Vec::with_capacity(len));
        let [dq, dk, dv] = grads
            .each_mut()
            .map(|g| g.spare_capacity_mut()[..len].par_chunks_mut(image_len));
        dq.zip(dk).zip(dv).enumerate().for_each(|(b, ((dq, dk), dv))| {
            let image = |t| image_of(t, b, image_len);
            let (q, k, v, grad) = (image(q), image(k), image(v), image(grad));
            let weights = image_of(weights, b, weights_len);
            // Head h's W and dS.
            let head = |h: usize| {
                let w = &weights[h * p * p..][..p * p];
                (Matrix::rows(w, p, p), self.score_gradient(w, grad, v, h))
            };
            if s.heads == 1 {
                // One head spans the rows: written in place.
                let (w, ds) = head(0);
                let ds = Matrix::rows(&ds, p, p);
                s.product_into(ds, s.of(k, 0), dq);
                s.product_into(ds.transposed(), s.of(q, 0), dk);
                s.product_into(w.transposed(), s.of(grad, 0), dv);
                return;
            }
            let heads: Vec<[Vec<f32>; 3]> = (0..s.heads)
                .into_par_iter()
                .map(|h| {
                    let (w, ds) = head(h);
                    let ds = Matrix::rows(&ds, p, p);
                    [
                        s.product(ds, s.of(k, h)),
                        s.product(ds.transposed(), s.of(q, h)),
                        s.product(w.transposed(), s.of(grad, h)),
                    ]
                })
                .collect();
            for (i, out) in [dq, dk, dv].into_iter().enumerate() {
                s.merge(|h| &heads[h][i], out);
            }
        });
        for g in &mut grads {
            // SAFETY: every image wrote its rows of all three.
            unsafe { g.set_len(len) };
        }
        grads
    }

    /// Head h's W = softmax(s · Q Kᵀ), written into `w` (P × P) and
    /// normalised there, row by row.
    fn head_weights<'w>(&self, q: &[f32], k: &[f32], h: usize, w: &'w mut [MaybeUninit<f32>]) -> &'w [f32] {
        let s = self.shape;
        s.product_into(s.of(q, h), s.of(k, h).transposed(), w);
        // SAFETY: the product wrote every value of `w`.
        let w = unsafe { written(w) };
        for row in w.chunks_exact_mut(s.pixels) {
            vectorised(
                #[inline(always)]
                || softmax_row_in_place(row, self.scale),
            );
        }
        w
    }

    /// Head h's dS = s · W ⊙ (dW − Σ dW ⊙ W), dW = dO Vᵀ, computed in
    /// dW's place.
    fn score_gradient(&self, w: &[f32], grad: &[f32], v: &[f32], h: usize) -> Vec<f32> {
        let s = self.shape;
        let mut ds = s.product(s.of(grad, h), s.of(v, h).transposed());
        for (ds, w) in ds.chunks_exact_mut(s.pixels).zip(w.chunks_exact(s.pixels)) {
            vectorised(
                #[inline(always)]
                || softmax_row_backward_in_place(ds, w, self.scale),
            );
        }
        ds
    }
}

impl CustomOp3 for CpuAttention {
    fn name(&self) -> &'static str {
        "cpu-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_layout: &Layout,
        k: &CpuStorage,
        k_layout: &Layout,
        v: &CpuStorage,
        v_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = self.shape;
        let len = s.batch * s.image_len();
        let q = f32_values(q, q_layout, len, "attention", "queries")?;
        let k = f32_values(k, k_layout, len, "attention", "keys")?;
        let v = f32_values(v, v_layout, len, "attention", "values")?;
        let (out, weights) = self.forward(q, k, v);
        // Kept for the backward: set once, by this op's only forward.
        let _ = self.weights.set(weights);
        Ok((
            CpuStorage::F32(out),
            Shape::from((s.batch * s.pixels, s.channels)),
        ))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _output: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grads = with_values(q, |q| {
            with_values(k, |k| {
                with_values(v, |v| with_values(grad, |grad| self.backward(q, k, v, grad)))
            })
        })????;
        let [dq, dk, dv] = grads.map(|g| Tensor::from_vec(g, q.shape(), q.device()));
        Ok((Some(dq?), Some(dk?), Some(dv?)))
    }
}

/// Attention of the queries `q` over the keys `k` and values `v`, each
/// (B·P, C) rows of `batch` images, C split into `heads` heads of d
/// channels, scores scaled by 1/√d: the mixed values, (B·P, C).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, batch: usize, heads: usize) -> Result<Tensor> {
    let (rows, channels) = q.dims2()?;
    if k.dims() != q.dims()
        || v.dims() != q.dims()
        || rows == 0
        || batch == 0
        || !rows.is_multiple_of(batch)
        || heads == 0
        || !channels.is_multiple_of(heads)
    {
        bail!(
            "attention: queries {:?}, keys {:?} and values {:?} are not {batch} images' rows of {heads} heads",
            q.dims(),
            k.dims(),
            v.dims()
        )
    }
    let shape = Heads {
        batch,
        pixels: rows / batch,
        channels,
        heads,
    };
    let op = CpuAttention {
        shape,
        scale: 1.0 / (shape.head_dim() as f32).sqrt(),
        weights: OnceLock::new(),
    };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}
