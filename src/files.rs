//! Every file the project writes goes through this module, so that what is
//! read back is what was written:
//!
//! - [`atomic_write`] writes through a temporary file, an fsync, a rename
//!   and an fsync of the folder: readers see the old file or the new one,
//!   never a torn one, and a "saved" file survives a power cut. A path that
//!   is not a regular file (a FIFO, `/dev/stdout`, a symlink) is written
//!   into, never replaced.
//! - Files that are read back carry a SHA-256 of their content, checked on
//!   every read: safetensors in their metadata ([`write_tensors`] /
//!   [`read_tensors`]), JSON as a leading `"sha256"` field ([`write_json`] /
//!   [`read_json`]), TOML as a leading comment ([`write_toml`] /
//!   [`read_toml`]). Flipped bytes are refused with the file named instead
//!   of loading weights that look plausible and are wrong.

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically (see the module comment).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, bytes, false)
}

/// [`atomic_write`] for a file only its owner may read (mode 0600 from
/// its first byte on): a secret.
pub fn atomic_write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, bytes, true)
}

fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    let path = &resolve_symlink(path);
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_dir() {
            bail!("cannot write {}: it is a folder", path.display());
        }
        if !meta.is_file() {
            return write_in_place(path, bytes);
        }
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        if private {
            // The mode is given at creation only: no older file may lend its own.
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename lives in the folder's entries: sync them too.
        std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
    })
}

/// A symlink is followed to its target, so the link stays a link.
fn resolve_symlink(path: &Path) -> PathBuf {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    match is_link {
        true => std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        false => path.to_path_buf(),
    }
}

/// A device or a FIFO cannot be replaced by a rename (that would turn
/// `/dev/stdout` into a regular file); it is written into as it is.
fn write_in_place(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {} for writing", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.flush())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The hex SHA-256 of some bytes.
fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- tensors ---------------------------------------------------------------

/// The metadata key of a safetensors file's checksum.
const TENSOR_CHECKSUM: &str = "sha256";

/// Named tensors plus string metadata, as stored in a safetensors file.
pub struct TensorFile {
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

/// The checksum of a file's tensors: names, shapes and data bytes, in name
/// order (safetensors' own layout order is an implementation detail).
fn tensors_checksum<'a>(tensors: impl Iterator<Item = (&'a str, Vec<usize>, &'a [u8])>) -> String {
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut hash = Sha256::new();
    for (name, shape, data) in sorted {
        hash.update(format!("{name}:{shape:?}:{}\n", data.len()).as_bytes());
        hash.update(data);
    }
    hex(&hash.finalize())
}

/// Writes tensors (all f32) and metadata atomically as safetensors, with
/// the checksum of the tensor data in the metadata.
pub fn write_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    mut metadata: HashMap<String, String>,
) -> Result<()> {
    let encode = || -> Result<Vec<u8>> {
        let data = tensors
            .iter()
            .map(|(n, t)| {
                let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                Ok((n.as_str(), t.dims().to_vec(), bytes))
            })
            .collect::<Result<Vec<_>>>()?;
        let checksum = tensors_checksum(data.iter().map(|(n, s, b)| (*n, s.clone(), b.as_slice())));
        metadata.insert(TENSOR_CHECKSUM.into(), checksum);
        let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))?;
        Ok(with_sorted_header(bytes))
    };
    let bytes = encode().with_context(|| format!("cannot encode {}", path.display()))?;
    atomic_write(path, &bytes)
}

/// The safetensors bytes with their JSON header's keys in sorted order.
/// Why: safetensors writes the metadata in its `HashMap`'s order, which
/// differs from process to process, so two runs of one seed wrote the
/// same tensors into files that differed in bytes. The rewritten header
/// says the same thing in as many bytes (compact JSON either way), so the
/// data offsets after it hold; should it ever not, the bytes stay as
/// safetensors wrote them.
fn with_sorted_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let Some(length) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8 + length) else {
        return bytes;
    };
    let json = header.trim_ascii_end();
    // serde_json's maps are sorted (its `preserve_order` feature is off).
    let sorted = serde_json::from_slice::<serde_json::Value>(json).and_then(|v| serde_json::to_vec(&v));
    match sorted {
        Ok(sorted) if sorted.len() == json.len() => {
            bytes[8..8 + sorted.len()].copy_from_slice(&sorted);
            bytes
        }
        _ => bytes,
    }
}

/// Reads a safetensors file written by [`write_tensors`]; a missing,
/// truncated or corrupt file, or one whose data does not match its
/// checksum, is an error naming the path.
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
    let metadata = header.metadata().clone().unwrap_or_default();
    let views = file.tensors();
    let Some(expected) = metadata.get(TENSOR_CHECKSUM) else {
        bail!(
            "{} has no checksum in its metadata: it was not written by this version of disback",
            path.display()
        );
    };
    let actual = tensors_checksum(
        views
            .iter()
            .map(|(n, v)| (n.as_str(), v.shape().to_vec(), v.data())),
    );
    if &actual != expected {
        bail!(
            "{} is corrupt: its tensor data does not match its checksum (sha256 {actual}, \
             expected {expected}); refusing to load it",
            path.display()
        );
    }
    let mut tensors = HashMap::new();
    for (name, view) in views {
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
    Ok(TensorFile { tensors, metadata })
}

// ---- JSON ------------------------------------------------------------------

/// What starts every checked JSON file: `{"sha256":"<64 hex digits>",`.
const JSON_PREFIX: &str = "{\"sha256\":\"";
const JSON_PREFIX_LEN: usize = JSON_PREFIX.len() + 64 + 2;

/// Writes a value that serialises to a non-empty JSON object, with a
/// leading `"sha256"` field: the checksum of the same object written
/// without it. The file stays plain JSON for other tools.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let body = serde_json::to_string_pretty(value)?;
    let Some(rest) = body
        .strip_prefix('{')
        .filter(|r| !r.trim_start().starts_with('}'))
    else {
        bail!("{}: only non-empty JSON objects carry a checksum", path.display());
    };
    let text = format!("{JSON_PREFIX}{}\",{rest}\n", sha256_hex(body.as_bytes()));
    atomic_write(path, text.as_bytes())
}

/// Reads what [`write_json`] wrote, refusing a file whose content does
/// not match its checksum.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let body = checked_json_body(&text).with_context(|| format!("{} is corrupt", path.display()))?;
    serde_json::from_str(&body).with_context(|| {
        format!(
            "{}: unexpected content (written by another version?)",
            path.display()
        )
    })
}

/// The object as it was hashed, after checking the hash.
fn checked_json_body(text: &str) -> Result<String> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let head = text.get(..JSON_PREFIX_LEN).unwrap_or_default();
    let expected = head
        .strip_prefix(JSON_PREFIX)
        .and_then(|h| h.strip_suffix("\","))
        .with_context(|| format!("it does not start with its checksum field ({JSON_PREFIX}…)"))?;
    let body = format!("{{{}", &text[JSON_PREFIX_LEN..]);
    let actual = sha256_hex(body.as_bytes());
    if actual != expected {
        bail!("its content does not match its checksum (sha256 {actual}, expected {expected})");
    }
    Ok(body)
}

// ---- TOML ------------------------------------------------------------------

const TOML_PREFIX: &str = "# sha256 ";

/// Writes TOML text behind a first comment line holding its checksum.
pub fn write_toml(path: &Path, text: &str) -> Result<()> {
    atomic_write(
        path,
        format!("{TOML_PREFIX}{}\n{text}", sha256_hex(text.as_bytes())).as_bytes(),
    )
}

/// Reads what [`write_toml`] wrote: the text after the checksum line,
/// refused if it was changed.
pub fn read_toml(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let Some((first, body)) = text.split_once('\n') else {
        bail!("{} is corrupt: it has no checksum line", path.display());
    };
    let Some(expected) = first.strip_prefix(TOML_PREFIX) else {
        bail!(
            "{} does not start with its checksum line ({TOML_PREFIX}…): it was not written by \
             this version of disback, or was edited",
            path.display()
        );
    };
    let actual = sha256_hex(body.as_bytes());
    if actual != expected.trim() {
        bail!(
            "{} was changed after the run wrote it (sha256 {actual}, expected {}); a resumed run \
             must use the config it started with",
            path.display(),
            expected.trim()
        );
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests;
