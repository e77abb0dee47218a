//! Real pixels in terminals that speak a graphics protocol (kitty, iTerm2,
//! sixel), through ratatui-image. The lab asks the terminal once, at
//! start, which protocol it has and how large its cells are (`probe.rs`);
//! without one, previews stay half-blocks (`pictures.rs`).
//!
//! Encoding a picture for a protocol (PNG or sixel bands of a panel's worth
//! of pixels) takes milliseconds to tens of them, so it runs on a worker
//! thread: the event loop hands it the composed picture and keeps drawing
//! the previous encoding until the new one comes back. Neither the UI nor
//! training ever waits for it.

use super::pictures::{FRAME, compose};
use crate::data::PixelImages;
use ratatui::Frame;
use ratatui::layout::{Rect, Size};
use ratatui_image::picker::Picker;
use ratatui_image::protocol::Protocol;
use ratatui_image::{Image, Resize};
use std::sync::mpsc::{Receiver, Sender, channel};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// A picture to encode: which preview frame, for which panel.
struct Job {
    key: (u64, Rect),
    picture: image::RgbImage,
}

/// An encoded picture, ready to draw.
pub struct Encoded {
    key: (u64, Rect),
    protocol: Protocol,
}

pub struct Graphics {
    picker: Picker,
    jobs: Sender<Job>,
    /// The last picture asked for, and the last one encoded.
    asked: Option<(u64, Rect)>,
    shown: Option<Encoded>,
}

impl Graphics {
    /// Real pixels through `picker` (a protocol the terminal has, found by
    /// [`super::probe`]); the receiver delivers finished encodings to the
    /// event loop.
    pub fn start(picker: Picker) -> Option<(Self, UnboundedReceiver<Encoded>)> {
        let (jobs, job_rx) = channel();
        let (done, encoded) = unbounded_channel();
        let worker = picker.clone();
        std::thread::Builder::new()
            .name("disback-graphics".into())
            .spawn(move || encode_jobs(worker, job_rx, done))
            .ok()?;
        Some((
            Self {
                picker,
                jobs,
                asked: None,
                shown: None,
            },
            encoded,
        ))
    }

    /// The protocol in words, for the event log.
    pub fn describe(&self) -> String {
        let font = self.picker.font_size();
        let tmux = if self.picker.tmux_detected() {
            ", through tmux"
        } else {
            ""
        };
        format!(
            "image previews in real pixels: {:?} protocol, {}×{} px cells{tmux}",
            self.picker.protocol_type(),
            font.width,
            font.height
        )
    }

    /// Draws frame `generation` of `images` into `area`: the newest
    /// encoding so far (the previous frame until this one is ready, and
    /// nothing before the first), and asks for this one if it is new.
    pub fn draw(&mut self, frame: &mut Frame, area: Rect, images: &PixelImages, generation: u64) {
        let key = (generation, area);
        if self.asked != Some(key) {
            let font = self.picker.font_size();
            let size = (
                area.width as u32 * font.width as u32,
                area.height as u32 * font.height as u32,
            );
            let picture = compose(images, size, FRAME);
            if self.jobs.send(Job { key, picture }).is_ok() {
                self.asked = Some(key);
            }
        }
        // An encoding for another panel size would spill over its edges.
        if let Some(shown) = self.shown.as_ref().filter(|s| s.key.1 == area) {
            frame.render_widget(Image::new(&shown.protocol), area);
        }
    }

    /// Takes in a finished encoding.
    pub fn receive(&mut self, encoded: Encoded) {
        self.shown = Some(encoded);
    }
}

/// The worker: encodes the newest job, skipping any that a newer one has
/// made stale.
fn encode_jobs(picker: Picker, jobs: Receiver<Job>, done: UnboundedSender<Encoded>) {
    while let Ok(mut job) = jobs.recv() {
        while let Ok(newer) = jobs.try_recv() {
            job = newer;
        }
        let size = Size::new(job.key.1.width, job.key.1.height);
        let image = image::DynamicImage::ImageRgb8(job.picture);
        let Ok(protocol) = picker.new_protocol(image, size, Resize::Fit(None)) else {
            continue;
        };
        if done
            .send(Encoded {
                key: job.key,
                protocol,
            })
            .is_err()
        {
            return;
        }
    }
}
