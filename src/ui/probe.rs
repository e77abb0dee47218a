//! Asking the terminal, once, what it can draw: a graphics protocol (kitty,
//! sixel) and its cells' size in pixels. The answer comes back on the same
//! input as the user's keys, so the asking is careful about both:
//!
//! - it happens before the lab reads its first key, on the lab's own
//!   thread, and reads only while it waits for the answer: at most
//!   [`WAIT`], and a short quiet moment after the terminal's status reply.
//!   Nothing is left reading afterwards. (ratatui-image's own query reads
//!   on a thread of its own that outlives its timeout when a terminal does
//!   not answer — tmux without passthrough — and that thread then took
//!   the user's first key: why this is written here.)
//! - what it read is split into the terminal's replies and the keys the
//!   user pressed meanwhile (see `input`): the keys are handed to the lab,
//!   so no key is lost or taken for a reply, and no reply for a key. The
//!   decoder goes to the lab's reader as it is, so a reply still arriving
//!   when the wait ends is dropped there, whole.
//!
//! The replies are interpreted by ratatui-image's parser; the picker is
//! built from what they say, as ratatui-image would have built it.

use super::input::{Decoder, Input, Piece, read_stdin, wait_for_input};
use crossterm::event::KeyEvent;
use ratatui_image::FontSize;
use ratatui_image::picker::cap_parser::{Parser, QueryStdioOptions, Response};
use ratatui_image::picker::{Picker, ProtocolType};
use std::time::{Duration, Instant};

/// The longest the lab waits for an answer (a terminal over SSH answers
/// within a round trip; one that never answers costs this once).
pub const WAIT: Duration = Duration::from_millis(1000);
/// After the terminal's status reply (the query's last), replies still on
/// their way (an outer terminal's, through tmux) get this long to arrive.
const QUIET: Duration = Duration::from_millis(100);

/// What the asking found.
pub struct Probe {
    /// The terminal's graphics, or none (half-blocks then).
    pub picker: Option<Picker>,
    /// Keys the user pressed while the lab waited, in order.
    pub keys: Vec<KeyEvent>,
    /// Whether the terminal answered at all.
    pub answered: bool,
    /// The decoder of what the terminal sent, for the rest of it.
    pub input: Decoder,
}

/// Asks the terminal on standard output and reads its answer from standard
/// input (which must be in raw mode).
pub fn probe() -> Probe {
    let (is_tmux, options) = query_options();
    let mut query = Parser::query(is_tmux, options);
    if is_tmux {
        // tmux answers a status request itself: without passthrough the
        // wrapped query gets no answer, and this one ends the wait at once.
        query.push_str("\x1b[5n");
    }
    let bytes = match exchange(query.as_bytes()) {
        Ok(bytes) => bytes,
        Err(_) => return Probe::nothing(),
    };
    interpret(&bytes)
}

impl Probe {
    fn nothing() -> Self {
        Self {
            picker: None,
            keys: Vec::new(),
            answered: false,
            input: Decoder::default(),
        }
    }
}

/// Whether the lab runs in tmux, and what to ask. In tmux, passthrough is
/// turned on for the lab's pane (as ratatui-image does) so that pictures
/// reach the outer terminal.
fn query_options() -> (bool, QueryStdioOptions) {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let is_tmux = var("TERM").starts_with("tmux") || var("TERM_PROGRAM") == "tmux" || !var("TMUX").is_empty();
    if is_tmux {
        let _ = std::process::Command::new("tmux")
            .args(["set", "-p", "allow-passthrough", "on"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    let mut options = QueryStdioOptions::default();
    // WezTerm and Konsole answer the kitty and sixel queries but draw them
    // badly (ratatui-image's compatibility notes): they get iTerm2 images
    // from the environment instead.
    if !var("WEZTERM_EXECUTABLE").is_empty() || !var("KONSOLE_VERSION").is_empty() {
        options.blacklist_protocols = vec![ProtocolType::Kitty, ProtocolType::Sixel];
    }
    (is_tmux, options)
}

/// Writes `query` and reads what comes back until the status reply and a
/// quiet moment, or [`WAIT`]. Reads only while a byte is there (poll), so
/// nothing waits on the input once this returns.
fn exchange(query: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut out = std::io::stdout();
    out.write_all(query)?;
    out.flush()?;
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut status_seen = false;
    loop {
        let left = WAIT.saturating_sub(started.elapsed());
        let wait = if status_seen { QUIET.min(left) } else { left };
        if wait.is_zero() || wait_for_input(wait) != Input::Ready {
            return Ok(bytes);
        }
        let mut buf = [0u8; 256];
        let n = read_stdin(&mut buf);
        if n == 0 {
            return Ok(bytes);
        }
        bytes.extend_from_slice(&buf[..n]);
        status_seen = status_seen || contains_status(&bytes);
    }
}

fn contains_status(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\x1b[0n")
}

/// The probe's result from what the terminal sent.
fn interpret(bytes: &[u8]) -> Probe {
    let mut parser = Parser::new();
    let (mut keys, mut responses, mut answered) = (Vec::new(), Vec::new(), false);
    let mut input = Decoder::default();
    for piece in input.feed(bytes, Instant::now()) {
        match piece {
            Piece::Key(k) => keys.push(k),
            Piece::Reply(r) => {
                answered = true;
                for c in r.chars() {
                    responses.extend(parser.push(c));
                }
            }
        }
    }
    let has = |r: &Response| responses.contains(r);
    let protocol = if has(&Response::Kitty) {
        Some(ProtocolType::Kitty)
    } else if has(&Response::Sixel) {
        Some(ProtocolType::Sixel)
    } else {
        None
    };
    let cell = responses.iter().find_map(|r| match *r {
        Response::CellSize(Some((w, h))) => Some(FontSize::new(w, h)),
        _ => None,
    });
    let picker = picker(protocol, cell.or_else(cell_size_from_window));
    Probe {
        picker,
        keys,
        answered,
        input,
    }
}

/// The picker for what was found: a protocol from the replies, else one the
/// environment names (iTerm2 and WezTerm), with the cells' size; none for
/// half-blocks or when the size is unknown.
fn picker(protocol: Option<ProtocolType>, cell: Option<FontSize>) -> Option<Picker> {
    let cell = cell?;
    // `from_fontsize` is the one way to give a picker a measured cell size
    // (it also reads iTerm2 hints from the environment); deprecated only in
    // favour of the query this module replaces.
    #[allow(deprecated)]
    let mut picker = Picker::from_fontsize(cell);
    if let Some(p) = protocol {
        picker.set_protocol_type(p);
    }
    (picker.protocol_type() != ProtocolType::Halfblocks).then_some(picker)
}

/// The cells' size from the window's size in pixels (TIOCGWINSZ), for a
/// terminal that does not answer the size query.
fn cell_size_from_window() -> Option<FontSize> {
    // SAFETY: TIOCGWINSZ fills a winsize owned here.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_xpixel > 0 && size.ws_ypixel > 0 && size.ws_col > 0 && size.ws_row > 0)
        .then(|| FontSize::new(size.ws_xpixel / size.ws_col, size.ws_ypixel / size.ws_row))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyCode;

    #[test]
    fn the_replies_name_the_protocol_and_the_cells() {
        let kitty = interpret(b"\x1b_Gi=31;OK\x1b\\\x1b[?62;4;22c\x1b[6;20;10t\x1b[0n");
        let picker = kitty.picker.expect("kitty graphics");
        assert_eq!(picker.protocol_type(), ProtocolType::Kitty, "kitty before sixel");
        assert_eq!((picker.font_size().width, picker.font_size().height), (10, 20));
        assert!(kitty.answered && kitty.keys.is_empty());
        let sixel = interpret(b"\x1b[?62;4;22c\x1b[6;16;8t\x1b[0n");
        assert_eq!(sixel.picker.unwrap().protocol_type(), ProtocolType::Sixel);
        // Only a status reply: no protocol, half-blocks.
        let plain_terminal = interpret(b"\x1b[?62;22c\x1b[6;16;8tx\x1b[0n");
        assert!(plain_terminal.picker.is_none());
        assert_eq!(plain_terminal.keys, vec![KeyEvent::from(KeyCode::Char('x'))]);
        // Nothing at all: nothing is found, nothing is lost.
        let silent = interpret(b"");
        assert!(!silent.answered && silent.picker.is_none() && silent.keys.is_empty());
    }

    #[test]
    fn a_reply_cut_by_the_end_of_the_wait_is_dropped_whole_by_the_lab() {
        // The status reply came (tmux's own), the outer terminal's kitty
        // reply only began: its rest reaches the lab's reader, not its keys.
        let mut probe = interpret(b"\x1b[0n\x1b_Gi=3");
        assert!(probe.keys.is_empty() && probe.picker.is_none());
        let rest = probe.input.feed(b"1;OK\x1b\\v", Instant::now());
        assert_eq!(rest.len(), 2, "{rest:?}");
        assert_eq!(rest[1], Piece::Key(KeyEvent::from(KeyCode::Char('v'))));
    }
}
