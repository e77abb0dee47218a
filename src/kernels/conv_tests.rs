//! The fused convolution against candle's, and its parts against their
//! definitions.

use super::super::checks::{assert_same_op, assert_same_op_on_one_and_two_threads, max_difference, random};
use super::*;

/// Values and all three gradients against candle's own convolution, for
/// the kernels, strides and paddings the U-Net uses and odd sizes.
#[test]
fn fused_convolution_equals_candles_in_values_and_gradients() {
    let cases = [
        // (batch, in, out, height, width, kernel, stride, padding)
        (3, 4, 5, 8, 8, 3, 1, 1),
        (2, 3, 6, 8, 8, 3, 2, 1),
        (2, 5, 4, 7, 5, 3, 2, 1),
        (4, 6, 3, 4, 4, 1, 1, 0),
        (1, 2, 3, 6, 9, 5, 1, 2),
        (2, 2, 2, 5, 5, 3, 1, 0),
        // Several chunks, the last one short: 8×8 outputs make 8
        // images a chunk, 2×2 outputs 128.
        (19, 3, 4, 8, 8, 3, 1, 1),
        (300, 2, 3, 4, 4, 3, 2, 1),
        // An output plane over a chunk's 512 rows: one image a chunk.
        (2, 3, 4, 24, 24, 3, 1, 1),
        // diffusers' downsampler: stride 2, no padding, an odd side.
        (3, 4, 5, 9, 9, 3, 2, 0),
        // A 1×1 kernel with stride 2; a window over both edges at once.
        (2, 4, 3, 7, 7, 1, 2, 0),
        (2, 3, 2, 1, 1, 3, 1, 1),
        // Sides that fill whole 8 × 8 transpose tiles and some over
        // (the images and the kernel matrix's reorder), 3×3 and 1×1.
        (2, 16, 9, 8, 8, 3, 1, 1),
        (2, 16, 9, 4, 4, 1, 1, 0),
    ];
    for (i, &(b, c, o, h, w, k, s, p)) in cases.iter().enumerate() {
        let x = random(&[b, c, h, w], 10 + i as u64, 0.0);
        let weight = random(&[o, c, k, k], 20 + i as u64, 0.0);
        let bias = random(&[1, o, 1, 1], 30 + i as u64, 0.0);
        let ours = conv2d(&x, &weight, &bias, s, p).unwrap();
        let theirs = x
            .conv2d(&weight, p, s, 1, 1)
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        let inputs = [("input", &x), ("weight", &weight), ("bias", &bias)];
        assert_same_op(&ours, &theirs, inputs, 1e-5, &format!("case {i}"));
    }
}

/// On two threads (chunks shared out, or one chunk's product split
/// when there are fewer chunks than threads) the values and gradients
/// are candle's, and the one-thread op's to rounding.
#[test]
fn two_threads_give_candles_values_and_gradients() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    // (batch, in, out, side): many chunks; fewer chunks than threads.
    for (i, &(b, c, o, side)) in [(19, 3, 4, 8), (1, 16, 24, 24)].iter().enumerate() {
        let x = random(&[b, c, side, side], 40 + i as u64, 0.0);
        let weight = random(&[o, c, 3, 3], 50 + i as u64, 0.0);
        let bias = random(&[1, o, 1, 1], 60 + i as u64, 0.0);
        let theirs = x
            .conv2d(&weight, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        let ours = pool.install(|| conv2d(&x, &weight, &bias, 1, 1).unwrap());
        let inputs = [("input", &x), ("weight", &weight), ("bias", &bias)];
        pool.install(|| assert_same_op(&ours, &theirs, inputs, 1e-5, &format!("2 threads, case {i}")));
        let one = conv2d(&x, &weight, &bias, 1, 1).unwrap();
        let difference = max_difference(&one, &ours);
        assert!(
            difference < 1e-5,
            "case {i}: 1 and 2 threads differ by {difference}"
        );
    }
}

/// The Winograd path (3 × 3, stride 1, 32 channels or more on both
/// sides) against candle's direct convolution in values and all three
/// gradients (its input gradient is a Winograd convolution too): odd
/// sides (half-empty tiles at the edges), every padding it takes, one
/// pixel, several chunks with a short last one, filters transformed in
/// several parts; on 1 and 2 threads, whose values and gradients are the
/// same bit for bit (each product runs on one thread).
#[test]
fn winograd_convolutions_equal_candles() {
    let cases = [
        // (batch, in, out, height, width, padding)
        (2, 32, 40, 7, 5, 1),
        (3, 33, 32, 6, 6, 0),
        (2, 32, 35, 5, 4, 2),
        (2, 32, 32, 1, 1, 1),
        // 16 tiles an image, 16 images a chunk: two chunks, 4 in the last.
        (20, 32, 32, 8, 8, 1),
        // One image over a chunk's 256 tiles.
        (1, 40, 32, 36, 34, 1),
        // 4,323 channel pairs: the filters' transform in two parts, the
        // last ending in a part-filled block of lanes.
        (1, 33, 131, 4, 4, 1),
    ];
    for (i, &(b, c, o, h, w, p)) in cases.iter().enumerate() {
        let g = Geometry {
            batch: b,
            channels: c,
            height: h,
            width: w,
            out_channels: o,
            kernel: 3,
            stride: 1,
            padding: p,
        };
        assert!(g.winograd().is_some(), "case {i} takes the Winograd path");
        let x = random(&[b, c, h, w], 70 + i as u64, 0.0);
        let weight = random(&[o, c, 3, 3], 80 + i as u64, 0.0);
        let bias = random(&[1, o, 1, 1], 90 + i as u64, 0.0);
        let theirs = x
            .conv2d(&weight, p, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        // Sums of 9·C products of N(0, 1) values, about 17 in size: both
        // ways round differently at 1e-6 of that.
        let tolerance = 1e-4;
        let inputs = [("input", &x), ("weight", &weight), ("bias", &bias)];
        let ours = || conv2d(&x, &weight, &bias, 1, p).unwrap();
        assert_same_op_on_one_and_two_threads(
            &ours,
            &theirs,
            inputs,
            tolerance,
            &format!("winograd case {i}"),
        );
    }
}

/// col2im is the adjoint of im2col: <im2col(x), y> = <x, col2im(y)>.
#[test]
fn col2im_is_the_adjoint_of_im2col() {
    let g = Geometry {
        batch: 2,
        channels: 3,
        height: 6,
        width: 5,
        out_channels: 1,
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    let x = random(&[2, 3, 6, 5], 1, 0.0)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let y = random(&[g.batch * g.out_plane(), g.patch_len()], 2, 0.0)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a * b) as f64).sum::<f64>();
    // The patches are not zero-filled before the gather: hand the
    // allocator a freed block of NaNs of their size first, so that padding
    // the gather failed to write would most likely show as NaN.
    drop(vec![f32::NAN; y.len()]);
    let lhs = dot(&im2col(&x, &g), &y);
    // NaN first: a value col2im left unwritten would show in the sum.
    let mut back = vec![std::mem::MaybeUninit::new(f32::NAN); x.len()];
    col2im(&y, &g, &mut back);
    // SAFETY: every value was set (NaN, then col2im's).
    let back: Vec<f32> = back.iter().map(|v| unsafe { v.assume_init() }).collect();
    let rhs = dot(&x, &back);
    assert!((lhs - rhs).abs() < 1e-6 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
}

/// An input without a graph behind it (data) gets no gradient, and the
/// weight the one candle gives.
#[test]
fn data_gets_no_gradient() {
    let x = random(&[3, 2, 6, 6], 1, 0.0).as_tensor().detach();
    let weight = random(&[4, 2, 3, 3], 2, 0.0);
    let bias = random(&[4], 3, 0.0);
    let probe = random(&[3, 4, 6, 6], 4, 0.0);
    let loss = |y: Tensor| (y * probe.as_tensor()).unwrap().sum_all().unwrap();
    let ours = loss(conv2d(&x, &weight, &bias, 1, 1).unwrap())
        .backward()
        .unwrap();
    let theirs = loss(x.conv2d(&weight, 1, 1, 1, 1).unwrap()).backward().unwrap();
    assert!(ours.get(&x).is_none());
    let difference = max_difference(ours.get(&weight).unwrap(), theirs.get(&weight).unwrap());
    assert!(difference < 1e-4, "weight gradients differ by {difference}");
}

#[test]
fn the_kernel_matrix_round_trips() {
    let g = Geometry {
        batch: 1,
        channels: 3,
        height: 4,
        width: 4,
        out_channels: 5,
        kernel: 3,
        stride: 1,
        padding: 1,
    };
    let weight: Vec<f32> = (0..5 * 3 * 9).map(|i| i as f32).collect();
    let m = kernel_matrix(&weight, &g);
    // Row (tap (1, 2), channel 2), column 4: weight[4, 2, 1, 2].
    assert_eq!(
        m[((3 + 2) * 3 + 2) * 5 + 4],
        weight[((4 * 3 + 2) * 3 + 1) * 3 + 2]
    );
    assert_eq!(weight_from_matrix(&m, &g), weight);
}

#[test]
fn mismatched_shapes_are_refused_with_the_sizes() {
    let x = random(&[1, 3, 8, 8], 1, 0.0);
    let weight = random(&[4, 2, 3, 3], 2, 0.0);
    let bias = random(&[4], 3, 0.0);
    let error = conv2d(&x, &weight, &bias, 1, 1).unwrap_err().to_string();
    assert!(
        error.contains("[1, 3, 8, 8]") && error.contains("[4, 2, 3, 3]"),
        "{error}"
    );
}
