//! `tensorboard/events.out.tfevents.*`: the run's log as TensorBoard reads
//! it (and W&B, through `wandb sync --sync-tensorboard`): every number of
//! a `metrics.jsonl` line as a scalar, node switches as text, sample
//! pictures as images.
//!
//! An event file is a TFRecord stream of `tensorflow.Event` protobufs:
//! each record is its length (u64, little-endian), a masked CRC-32C of the
//! length, the bytes, and a masked CRC-32C of the bytes. The messages are
//! declared here with `prost`'s derive, only the fields written, with
//! TensorFlow's field numbers (`event.proto`, `summary.proto`,
//! `tensor.proto`). Why not the `tfrecord` crate: its 0.15 (2023, on prost
//! 0.12) builds an HTTP client with rustls and ring, prost-build and ICU
//! into every build as build dependencies, for a download it does only on
//! request; these few messages are less than that.

use super::log::{MetricsRecord, Stage};
use anyhow::{Context, Result, bail};
use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The folder of a run's event files.
pub const TENSORBOARD_DIR: &str = "tensorboard";

/// `tensorflow.Event`.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    /// The first event of a file: "brain.Event:2".
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`: values logged at one step.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<Value>,
}

/// `tensorflow.Summary.Value`.
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    #[prost(oneof = "Kind", tags = "2, 4, 8")]
    pub kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    #[prost(message, tag = "4")]
    Image(Image),
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

/// `tensorflow.Summary.Image`: an encoded PNG.
#[derive(Clone, PartialEq, Message)]
pub struct Image {
    #[prost(int32, tag = "1")]
    pub height: i32,
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// 3: RGB.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// `tensorflow.SummaryMetadata`: which plugin shows a value.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorflow.TensorProto`, as the text plugin reads it: a scalar string.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// 7: `DT_STRING`.
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShape>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorflow.TensorShapeProto` (no dimensions: a scalar).
#[derive(Clone, PartialEq, Message)]
pub struct TensorShape {}

const DT_STRING: i32 = 7;
const RGB: i32 = 3;

/// CRC-32C as TFRecord stores it, rotated and offset ("masked") so that a
/// CRC of data holding CRCs does not degenerate.
fn masked_crc(bytes: &[u8]) -> u32 {
    const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let crc = CASTAGNOLI.checksum(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its CRC, the data, its CRC.
fn framed(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// One event file, appended to record by record, each written whole
/// (like `metrics.jsonl`'s lines, so a reader never sees half of one but
/// at the very end of a killed run, which TensorBoard skips).
#[derive(Debug)]
struct EventFile {
    path: PathBuf,
    file: std::fs::File,
}

impl EventFile {
    /// A new file in `dir` (created), starting with the file version.
    fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!("events.out.tfevents.{seconds}.disback.{}", std::process::id());
        // A process that resumes within the same second would make a
        // second file of that name: it gets a suffix (sorting after).
        let mut attempt = 0;
        let (path, file) = loop {
            let path = match attempt {
                0 => dir.join(&name),
                n => dir.join(format!("{name}.{n}")),
            };
            match std::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
            {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
            }
        };
        let mut events = Self { path, file };
        events.write(0, What::FileVersion("brain.Event:2".into()))?;
        Ok(events)
    }

    fn write(&mut self, step: usize, what: What) -> Result<()> {
        let wall_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let event = Event {
            wall_time,
            step: step as i64,
            what: Some(what),
        };
        self.file
            .write_all(&framed(&event.encode_to_vec()))
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// A run's TensorBoard log: distillation in `tensorboard/` at each cost;
/// teacher pretraining, whose steps are another axis, in
/// `tensorboard/pretrain/` (TensorBoard drops points whose step goes
/// back within one run, so the two cannot share a file).
#[derive(Debug)]
pub struct EventLog {
    dir: PathBuf,
    distill: EventFile,
    pretrain: Option<EventFile>,
    /// The stage and step of the last record, and when it was logged: the
    /// rate between two log lines.
    last: Option<(Stage, usize, Instant)>,
    /// The σ of each mismatch-degree value, to name them.
    sigmas: Vec<f64>,
}

impl EventLog {
    /// New event files in `dir`: a resumed run starts others, which
    /// TensorBoard reads after the first as the same run (dropping what
    /// the first logged past the checkpoint).
    pub fn create(dir: &Path, sigmas: &[f64]) -> Result<Self> {
        Ok(Self {
            dir: dir.to_path_buf(),
            distill: EventFile::create(dir)?,
            pretrain: None,
            last: None,
            sigmas: sigmas.to_vec(),
        })
    }

    /// The distillation's event file.
    pub fn path(&self) -> &Path {
        &self.distill.path
    }

    fn summary(&mut self, step: usize, value: Vec<Value>) -> Result<()> {
        match value.is_empty() {
            true => Ok(()),
            false => self.distill.write(step, What::Summary(Summary { value })),
        }
    }

    /// Scalars at `step`, one event.
    pub fn scalars(&mut self, step: usize, values: &[(String, f64)]) -> Result<()> {
        self.summary(step, scalar_values(values))
    }

    /// A line of text under `tag` (TensorBoard's Text tab).
    pub fn text(&mut self, step: usize, tag: &str, text: &str) -> Result<()> {
        let value = Value {
            tag: tag.into(),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(PluginData {
                    plugin_name: "text".into(),
                    content: Vec::new(),
                }),
            }),
            kind: Some(Kind::Tensor(TensorProto {
                dtype: DT_STRING,
                tensor_shape: Some(TensorShape {}),
                string_val: vec![text.as_bytes().to_vec()],
            })),
        };
        self.summary(step, vec![value])
    }

    /// An RGB picture under `tag` (TensorBoard's Images tab), as PNG.
    pub fn image(&mut self, step: usize, tag: &str, picture: &image::RgbImage) -> Result<()> {
        let mut png = Vec::new();
        picture.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
        let value = Value {
            tag: tag.into(),
            metadata: None,
            kind: Some(Kind::Image(Image {
                height: picture.height() as i32,
                width: picture.width() as i32,
                colorspace: RGB,
                encoded_image_string: png,
            })),
        };
        self.summary(step, vec![value])
    }

    /// A `metrics.jsonl` line: each of its numbers as a scalar, under the
    /// file's own names (`loss_g`, `eval/energy`, `eval/modes/coverage`,
    /// `eval/mismatch_target/mean` and one per σ), at its cost (the x axis
    /// of every comparison; pretraining at its own step, in its own
    /// file), with the iterations per second since the last line.
    pub fn record(&mut self, record: &MetricsRecord) -> Result<()> {
        let pretraining = record.stage == Stage::Pretrain;
        let step = if pretraining { record.step } else { record.cost };
        let mut values = Vec::new();
        let json = serde_json::to_value(record)?;
        if let serde_json::Value::Object(fields) = &json {
            for (key, value) in fields {
                if !matches!(key.as_str(), "stage" | "step" | "cost") {
                    self.flatten(key, value, &mut values);
                }
            }
        }
        let now = Instant::now();
        if let Some((stage, last, when)) = self.last
            && stage == record.stage
            && record.step > last
        {
            let seconds = now.duration_since(when).as_secs_f64().max(1e-9);
            values.push(("it_per_s".into(), (record.step - last) as f64 / seconds));
        }
        self.last = Some((record.stage, record.step, now));
        let value = scalar_values(&values);
        if value.is_empty() {
            return Ok(());
        }
        let file = match pretraining {
            false => &mut self.distill,
            true => match &mut self.pretrain {
                Some(file) => file,
                none => none.insert(EventFile::create(&self.dir.join("pretrain"))?),
            },
        };
        file.write(step, What::Summary(Summary { value }))
    }

    /// Numbers under `tag`: objects by key, mismatch degrees by their mean
    /// and each σ.
    fn flatten(&self, tag: &str, value: &serde_json::Value, out: &mut Vec<(String, f64)>) {
        use serde_json::Value as J;
        match value {
            J::Number(n) => out.extend(n.as_f64().map(|v| (tag.to_string(), v))),
            J::Bool(b) => out.push((tag.to_string(), f64::from(u8::from(*b)))),
            J::Object(fields) => {
                for (key, v) in fields {
                    self.flatten(&format!("{tag}/{key}"), v, out);
                }
            }
            // A mismatch degree, one value per σ: their mean (the lab's
            // number) and each σ's. Other lists (the shares per mode or
            // class) are read better from the figures.
            J::Array(items) if tag.contains("mismatch") && !items.is_empty() => {
                let numbers: Vec<f64> = items.iter().filter_map(J::as_f64).collect();
                out.push((
                    format!("{tag}/mean"),
                    numbers.iter().sum::<f64>() / numbers.len() as f64,
                ));
                if numbers.len() == self.sigmas.len() {
                    for (sigma, v) in self.sigmas.iter().zip(&numbers) {
                        out.push((format!("{tag}/sigma={sigma}"), *v));
                    }
                }
            }
            J::Array(_) => {}
            J::Null | J::String(_) => {}
        }
    }
}

/// Finite values as TensorBoard scalars (it shows no NaN, and a NaN loss
/// stops the run anyway).
fn scalar_values(values: &[(String, f64)]) -> Vec<Value> {
    values
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(tag, v)| Value {
            tag: tag.clone(),
            metadata: None,
            kind: Some(Kind::SimpleValue(*v as f32)),
        })
        .collect()
}

/// Reads every event of an event file, checking each record's two CRCs;
/// a damaged or cut record is named by its offset.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut events = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let bad = |why: &str| anyhow::anyhow!("{}: the record at byte {at} {why}", path.display());
        let head = bytes.get(at..at + 12).ok_or_else(|| bad("is cut short"))?;
        let (length, length_crc) = head.split_at(8);
        if masked_crc(length).to_le_bytes() != length_crc {
            return Err(bad("has a bad length CRC"));
        }
        let n = u64::from_le_bytes(length.try_into().expect("8 bytes")) as usize;
        let body = bytes
            .get(at + 12..at + 12 + n + 4)
            .ok_or_else(|| bad("is cut short"))?;
        let (data, data_crc) = body.split_at(n);
        if masked_crc(data).to_le_bytes() != data_crc {
            return Err(bad("has a bad data CRC"));
        }
        events.push(Event::decode(data).map_err(|e| bad(&format!("is not an event ({e})")))?);
        at += 12 + n + 4;
    }
    if events.is_empty() {
        bail!("{}: no events", path.display());
    }
    Ok(events)
}
