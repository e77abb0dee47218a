//! Every file the project writes goes through [`atomic_write`], so a crash
//! or a kill never leaves a half-written checkpoint behind; and every
//! safetensors file is read through [`read_tensors`], so a bad file is
//! reported with its path.

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same folder and
/// a rename: readers see the old file or the new one, never a torn one.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
    })
}

/// Named tensors plus string metadata, as stored in a safetensors file.
pub struct TensorFile {
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

/// Writes tensors (all f32) and metadata atomically as safetensors.
pub fn write_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
        .with_context(|| format!("cannot encode {}", path.display()))?;
    atomic_write(path, &bytes)
}

/// Reads a safetensors file; a missing, truncated or corrupt file is an
/// error naming the path.
pub fn read_tensors(path: &Path, device: &Device) -> Result<TensorFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read tensor file {}", path.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a valid safetensors file (truncated or corrupt?): {e}",
            path.display()
        )
    })?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: bad safetensors header: {e}", path.display()))?;
    let mut tensors = HashMap::new();
    for (name, view) in file.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            bail!(
                "{}: tensor {name} is {}, expected F32",
                path.display(),
                view.dtype()
            );
        }
        let t = Tensor::from_raw_buffer(view.data(), DType::F32, view.shape(), device)
            .with_context(|| format!("{}: cannot load tensor {name}", path.display()))?;
        tensors.insert(name, t);
    }
    Ok(TensorFile {
        tensors,
        metadata: header.metadata().clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn truncated_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let t = Tensor::ones((3, 4), DType::F32, &Device::Cpu).unwrap();
        write_tensors(&path, &[("w".into(), t)], HashMap::new()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = read_tensors(&path, &Device::Cpu).err().unwrap().to_string();
        assert!(
            err.contains("t.safetensors") && err.contains("truncated"),
            "{err}"
        );
    }
}
