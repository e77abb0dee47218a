use super::*;
use std::os::unix::fs::FileTypeExt;

#[test]
fn atomic_write_replaces_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/x.bin");
    atomic_write(&path, b"one").unwrap();
    atomic_write(&path, b"two").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"two");
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(names.len(), 1, "temporary files left behind");
}

fn tensor_file(dir: &Path) -> PathBuf {
    let path = dir.join("t.safetensors");
    let t = Tensor::arange(0f32, 12., &Device::Cpu)
        .unwrap()
        .reshape((3, 4))
        .unwrap();
    write_tensors(&path, &[("w".into(), t)], HashMap::new()).unwrap();
    path
}

fn read_err(path: &Path) -> String {
    format!(
        "{:#}",
        read_tensors(path, &Device::Cpu)
            .err()
            .expect("the read must fail")
    )
}

#[test]
fn truncated_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = tensor_file(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let err = read_err(&path);
    assert!(
        err.contains("t.safetensors") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn tensors_round_trip_with_their_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let file = read_tensors(&tensor_file(dir.path()), &Device::Cpu).unwrap();
    let w: Vec<f32> = file.tensors["w"].flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(w, (0..12).map(|i| i as f32).collect::<Vec<_>>());
    assert_eq!(file.metadata[TENSOR_CHECKSUM].len(), 64);
}

/// The same tensors and metadata give the same bytes, whatever order the
/// metadata's `HashMap` (seeded afresh for each map) yields its keys in.
#[test]
fn the_same_tensors_and_metadata_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = [
        ("b".to_string(), Tensor::arange(0f32, 6.0, &Device::Cpu).unwrap()),
        (
            "a".to_string(),
            Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap(),
        ),
    ];
    let write = |name: &str| {
        let metadata: HashMap<String, String> = (0..12)
            .map(|i| (format!("key{i}"), format!("value {i}")))
            .collect();
        let path = dir.path().join(name);
        write_tensors(&path, &tensors, metadata).unwrap();
        std::fs::read(path).unwrap()
    };
    let first = write("one.safetensors");
    for other in ["two", "three", "four"] {
        assert!(first == write(&format!("{other}.safetensors")), "{other} differs");
    }
    let file = read_tensors(&dir.path().join("one.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(file.metadata["key11"], "value 11");
    let a: Vec<f32> = file.tensors["a"].flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a, vec![1.0; 6]);
}

#[test]
fn a_flipped_byte_in_tensor_data_is_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = tensor_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // The data section is the end of the file: corrupt one weight there.
    let at = bytes.len() - 10;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let err = read_err(&path);
    assert!(err.contains("t.safetensors") && err.contains("checksum"), "{err}");
}

#[test]
fn a_tensor_file_without_a_checksum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign.safetensors");
    let t = Tensor::ones((2, 2), DType::F32, &Device::Cpu).unwrap();
    std::fs::write(&path, safetensors::serialize([("w", &t)], None).unwrap()).unwrap();
    let err = read_err(&path);
    assert!(
        err.contains("foreign.safetensors") && err.contains("no checksum"),
        "{err}"
    );
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Doc {
    name: String,
    values: Vec<f64>,
}

/// A document written as `d.json` in `dir`.
fn json_file(dir: &Path) -> (PathBuf, Doc) {
    let path = dir.join("d.json");
    let doc = Doc {
        name: "x".into(),
        values: vec![0.1, 2.5],
    };
    write_json(&path, &doc).unwrap();
    (path, doc)
}

#[test]
fn json_round_trips_and_stays_plain_json() {
    let dir = tempfile::tempdir().unwrap();
    let (path, doc) = json_file(dir.path());
    assert_eq!(read_json::<Doc>(&path).unwrap(), doc);
    let plain: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(plain["name"], "x");
    assert_eq!(plain["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn changed_json_is_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = json_file(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("2.5", "3.5")).unwrap();
    let err = format!("{:#}", read_json::<Doc>(&path).unwrap_err());
    assert!(err.contains("d.json") && err.contains("checksum"), "{err}");
    std::fs::write(&path, "{\"name\": \"x\", \"values\": []}").unwrap();
    let err = format!("{:#}", read_json::<Doc>(&path).unwrap_err());
    assert!(err.contains("d.json") && err.contains("checksum field"), "{err}");
}

#[test]
fn edited_toml_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    write_toml(&path, "seed = 1\n").unwrap();
    assert_eq!(read_toml(&path).unwrap(), "seed = 1\n");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("seed = 1", "seed = 7")).unwrap();
    let err = read_toml(&path).unwrap_err().to_string();
    assert!(err.contains("config.toml") && err.contains("changed"), "{err}");
}

#[test]
fn a_fifo_is_written_into_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    atomic_write(&fifo, b"x,y\n1,2\n").unwrap();
    assert_eq!(reader.join().unwrap(), b"x,y\n1,2\n");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
}

#[test]
fn a_full_device_is_an_error_and_stays_a_device() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        return; // not Linux
    }
    let err = format!("{:#}", atomic_write(full, b"data").unwrap_err());
    assert!(err.contains("/dev/full"), "{err}");
    assert!(std::fs::metadata(full).unwrap().file_type().is_char_device());
}

#[test]
fn a_symlink_stays_a_link_to_the_new_content() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("real.csv");
    let link = dir.path().join("link.csv");
    std::fs::write(&target, "old").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    atomic_write(&link, b"new").unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
}

#[test]
fn a_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = atomic_write(dir.path(), b"x").unwrap_err().to_string();
    assert!(err.contains("folder"), "{err}");
}
