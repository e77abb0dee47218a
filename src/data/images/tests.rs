//! Every loader on tiny generated files and on broken ones: a broken file
//! is an error naming the file and what is wrong, never a panic.

use super::*;
use crate::config::DataConfig;
use rand::SeedableRng;
use std::io::Write;
use std::path::{Path, PathBuf};

fn load(config: DataConfig) -> Result<Images> {
    Images::load(&config).expect("an image kind")
}

fn error(config: DataConfig) -> String {
    format!("{:#}", load(config).expect_err("a broken input is refused"))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// IDX files of `n` `rows`×`cols` images whose pixel (r, c) of image i is
/// `i * 10 + r`, with labels `i % 3`.
fn idx_files(dir: &Path, n: usize, rows: usize, cols: usize, gz: bool) -> (PathBuf, PathBuf) {
    let mut images = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        images.extend((d as u32).to_be_bytes());
    }
    for i in 0..n {
        for r in 0..rows {
            images.extend(std::iter::repeat_n((i * 10 + r) as u8, cols));
        }
    }
    let mut labels = vec![0, 0, 8, 1];
    labels.extend((n as u32).to_be_bytes());
    labels.extend((0..n).map(|i| (i % 3) as u8));
    let (ip, lp) = (dir.join("images.idx"), dir.join("labels.idx"));
    let write = |p: &Path, b: Vec<u8>| std::fs::write(p, if gz { gzip(&b) } else { b }).unwrap();
    write(&ip, images);
    write(&lp, labels);
    (ip, lp)
}

#[test]
fn the_shipped_digits_load_with_their_labels() {
    let digits = load(DataConfig::Digits { size: 8 }).unwrap();
    let set = digits.stored().unwrap();
    assert_eq!(set.len(), 1797);
    assert_eq!(digits.shape(), ImageShape::square(1, 8));
    let shares = digits.class_shares().unwrap();
    assert_eq!(shares.len(), 10);
    // Balanced: about 180 of each digit.
    assert!(shares.iter().all(|s| (s - 0.1).abs() < 0.01), "{shares:?}");
    // The first digit of the file is a 0: dark corners, a bright ring.
    let first = set.batch(0..1);
    assert_eq!(first.labels, Some(vec![0]));
    assert_eq!(first.pixels[0], -1.0);
    assert!(first.pixels.iter().all(|v| (-1.0..=1.0).contains(v)));
    assert!(first.pixels.iter().any(|&v| v > 0.5));
    // Upsampled to 16×16: same images, same labels, four times the pixels.
    let big = load(DataConfig::Digits { size: 16 }).unwrap();
    assert_eq!(big.stored().unwrap().batch(0..1).pixels.len(), 256);
}

#[test]
fn broken_digit_lines_are_refused_with_the_line() {
    let good = "0,".repeat(64) + "3";
    assert!(digits::parse(&good, 8).is_ok());
    let short = "0,".repeat(63) + "3";
    let e = format!("{:#}", digits::parse(&format!("{good}\n{short}"), 8).unwrap_err());
    assert!(e.contains("line 2") && e.contains("64 values"), "{e}");
    let bad_label = "0,".repeat(64) + "12";
    let e = format!("{:#}", digits::parse(&bad_label, 8).unwrap_err());
    assert!(e.contains("label \"12\""), "{e}");
    let bad_pixel = "17,".to_string() + &"0,".repeat(63) + "1";
    let e = format!("{:#}", digits::parse(&bad_pixel, 8).unwrap_err());
    assert!(e.contains("pixel \"17\""), "{e}");
}

#[test]
fn idx_files_load_plain_and_gzipped() {
    for gz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (images, labels) = idx_files(dir.path(), 4, 6, 6, gz);
        let set = idx::load(&images, Some(&labels), 6).unwrap();
        assert_eq!(set.len(), 4);
        let b = set.batch(0..4);
        assert_eq!(b.labels, Some(vec![0, 1, 2, 0]));
        // Image 2, row 3 holds byte 23 everywhere: 23 / 127.5 − 1.
        let v = b.pixels[2 * 36 + 3 * 6];
        assert!((v - (23.0 / 127.5 - 1.0)).abs() < 1e-6, "{v}");
        // Without labels: unlabelled; resized: the new size.
        let unlabelled = idx::load(&images, None, 4).unwrap();
        assert_eq!(unlabelled.batch(0..1).labels, None);
        assert_eq!(unlabelled.batch(0..1).pixels.len(), 16);
    }
}

#[test]
fn broken_idx_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = idx_files(dir.path(), 4, 6, 6, false);
    let config = |path: &Path, labels: Option<&Path>| DataConfig::Idx {
        path: path.to_path_buf(),
        labels: labels.map(Path::to_path_buf),
        size: 6,
    };
    // Missing.
    let e = error(config(&dir.path().join("nope.idx"), None));
    assert!(e.contains("nope.idx"), "{e}");
    // Truncated.
    let bytes = std::fs::read(&images).unwrap();
    let cut = dir.path().join("cut.idx");
    std::fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
    let e = error(config(&cut, None));
    assert!(e.contains("cut.idx") && e.contains("truncated"), "{e}");
    // The label file given as images.
    let e = error(config(&labels, None));
    assert!(
        e.contains("labels.idx") && e.contains("not an IDX image file"),
        "{e}"
    );
    // Labels for another number of images.
    let (_, other_labels) = idx_files(&tempfile::tempdir().unwrap().keep(), 5, 6, 6, false);
    let e = error(config(&images, Some(&other_labels)));
    assert!(e.contains("5 labels for 4 images"), "{e}");
    // A truncated gzip stream.
    let gz = gzip(&bytes);
    let bad_gz = dir.path().join("bad.idx.gz");
    std::fs::write(&bad_gz, &gz[..gz.len() / 2]).unwrap();
    let e = error(config(&bad_gz, None));
    assert!(e.contains("bad.idx.gz") && e.contains("gzip"), "{e}");
}

fn cifar_record(label: u8, red: u8) -> Vec<u8> {
    let mut r = vec![label];
    r.extend(std::iter::repeat_n(red, 1024));
    r.extend(std::iter::repeat_n(0, 2048));
    r
}

#[test]
fn cifar_batches_load_from_a_folder_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let batch: Vec<u8> = [cifar_record(3, 255), cifar_record(9, 0)].concat();
    std::fs::write(dir.path().join("data_batch_1.bin"), &batch).unwrap();
    std::fs::write(dir.path().join("data_batch_2.bin"), cifar_record(1, 0)).unwrap();
    let set = cifar::load(dir.path(), 32).unwrap();
    assert_eq!(set.len(), 3);
    let b = set.batch(0..3);
    assert_eq!(b.labels, Some(vec![3, 9, 1]));
    // Image 0: red plane full, green and blue empty.
    assert_eq!((b.pixels[0], b.pixels[1024], b.pixels[2048]), (1.0, -1.0, -1.0));
    let one = cifar::load(&dir.path().join("data_batch_2.bin"), 16).unwrap();
    assert_eq!((one.len(), one.batch(0..1).pixels.len()), (1, 3 * 256));
}

#[test]
fn broken_cifar_batches_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = |p: PathBuf| DataConfig::Cifar10 { path: p, size: 32 };
    let e = error(config(dir.path().to_path_buf()));
    assert!(e.contains("data_batch_1.bin"), "{e}");
    let file = dir.path().join("data_batch_1.bin");
    std::fs::write(&file, &cifar_record(1, 0)[..3000]).unwrap();
    let e = error(config(dir.path().to_path_buf()));
    assert!(e.contains("data_batch_1.bin") && e.contains("truncated"), "{e}");
    std::fs::write(&file, cifar_record(11, 0)).unwrap();
    let e = error(config(dir.path().to_path_buf()));
    assert!(e.contains("label 11"), "{e}");
}

fn png(path: &Path, width: u32, height: u32, value: u8) {
    image::RgbImage::from_pixel(width, height, image::Rgb([value, 0, 255 - value]))
        .save(path)
        .unwrap();
}

#[test]
fn a_folder_loads_cropped_resized_and_labelled_by_sub_folder() {
    let dir = tempfile::tempdir().unwrap();
    for (class, value) in [("cats", 255u8), ("dogs", 0)] {
        std::fs::create_dir(dir.path().join(class)).unwrap();
        png(&dir.path().join(class).join("a.png"), 40, 20, value);
        let jpeg = image::RgbImage::from_pixel(12, 12, image::Rgb([value, 0, 255 - value]));
        jpeg.save(dir.path().join(class).join("b.jpg")).unwrap();
    }
    let set = folder::load(dir.path(), 8, 3).unwrap();
    assert_eq!(set.len(), 4);
    let b = set.batch(0..4);
    assert_eq!(b.labels, Some(vec![0, 0, 1, 1]));
    assert_eq!(b.pixels.len(), 4 * 3 * 64);
    // cats: red full, blue empty (the JPEG within its compression error).
    assert!((b.pixels[0] - 1.0).abs() < 0.05 && (b.pixels[2 * 64] + 1.0).abs() < 0.05);
    let grey = folder::load(dir.path(), 4, 1).unwrap();
    assert_eq!(grey.batch(0..1).pixels.len(), 16);
    // Unlabelled: images directly in the folder.
    let flat = tempfile::tempdir().unwrap();
    png(&flat.path().join("x.png"), 8, 8, 10);
    assert_eq!(folder::load(flat.path(), 8, 3).unwrap().batch(0..1).labels, None);
}

#[test]
fn broken_folders_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = |p: &Path| DataConfig::Folder {
        path: p.to_path_buf(),
        size: 8,
        channels: 3,
    };
    let e = error(config(dir.path()));
    assert!(e.contains("no .png, .jpg or .jpeg"), "{e}");
    std::fs::write(dir.path().join("broken.png"), b"not a png at all").unwrap();
    let e = error(config(dir.path()));
    assert!(e.contains("broken.png"), "{e}");
    let e = error(config(&dir.path().join("missing")));
    assert!(e.contains("missing"), "{e}");
    // Images both beside and inside class folders.
    let mixed = tempfile::tempdir().unwrap();
    png(&mixed.path().join("loose.png"), 8, 8, 0);
    std::fs::create_dir(mixed.path().join("cls")).unwrap();
    png(&mixed.path().join("cls").join("in.png"), 8, 8, 0);
    let e = error(config(mixed.path()));
    assert!(e.contains("class sub-folder"), "{e}");
}

#[test]
fn shapes_are_deterministic_in_range_and_balanced() {
    let shapes = Shapes::new(16, 3);
    let draw = |seed| {
        let data = Images::Shapes(shapes);
        data.sample(500, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    };
    let (a, b) = (draw(1), draw(1));
    assert_eq!(a, b);
    assert_ne!(a, draw(2));
    assert_eq!(a.pixels.len(), 500 * 3 * 256);
    assert!(a.pixels.iter().all(|v| (-1.0..=1.0).contains(v)));
    let labels = a.labels.unwrap();
    for class in 0..SHAPE_CLASSES.len() as u16 {
        let n = labels.iter().filter(|&&l| l == class).count();
        assert!((70..=130).contains(&n), "class {class}: {n} of 500");
    }
    // Every image shows something: a shape covers at least 3% of it.
    for image in a.pixels.chunks(3 * 256) {
        let lit = (0..256)
            .filter(|&p| (0..3).any(|c| image[c * 256 + p] > -0.5))
            .count();
        assert!(lit >= 8, "{lit} lit pixels");
    }
}

#[test]
fn shapes_of_each_class_differ_in_what_they_cover() {
    // A ring leaves its centre dark; a disc fills it. Drawn large and
    // centred, the centre pixel tells them apart.
    let mut by_class: Vec<Vec<f32>> = vec![Vec::new(); SHAPE_CLASSES.len()];
    let shapes = Shapes::new(32, 1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut out = Vec::new();
    for _ in 0..400 {
        out.clear();
        let class = shapes.draw(&mut rng, &mut out) as usize;
        let lit = out.iter().filter(|&&v| v > -0.9).count() as f32 / out.len() as f32;
        by_class[class].push(lit);
    }
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    // Discs cover more of the image than rings and crosses of the same size.
    assert!(mean(&by_class[0]) > mean(&by_class[3]), "disc vs ring");
    assert!(mean(&by_class[0]) > mean(&by_class[4]), "disc vs cross");
}
