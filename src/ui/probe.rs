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
//! - what it read is split into the terminal's replies (escape sequences
//!   of the kinds the query asks for) and anything else, which is a key the
//!   user pressed meanwhile: those are handed to the lab as key events, so
//!   no key is lost or taken for a reply, and no reply for a key.
//!
//! The replies are interpreted by ratatui-image's parser; the picker is
//! built from what they say, as ratatui-image would have built it.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
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
        if wait.is_zero() || !readable(wait)? {
            return Ok(bytes);
        }
        let mut buf = [0u8; 256];
        // SAFETY: reading into a buffer of the given length from fd 0.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return Ok(bytes);
        }
        bytes.extend_from_slice(&buf[..n as usize]);
        status_seen = status_seen || contains_status(&bytes);
    }
}

/// Whether standard input has a byte within `wait`.
fn readable(wait: Duration) -> std::io::Result<bool> {
    let mut fd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one pollfd, owned here, for the duration of the call.
    match unsafe { libc::poll(&mut fd, 1, ms) } {
        n if n < 0 => {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => Ok(false),
                _ => Err(e),
            }
        }
        n => Ok(n > 0 && fd.revents & libc::POLLIN != 0),
    }
}

fn contains_status(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\x1b[0n")
}

/// A piece of what the terminal sent: a reply to the query, or a key.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Reply(String),
    Key(KeyEvent),
}

/// Splits the bytes into escape sequences and the rest. Replies are the
/// sequences the query asks for: APC (kitty's `ESC _ G … ESC \`), OSC
/// (`ESC ] … BEL`), and CSI ending in `c` (device attributes), `t` (cell
/// size), `n` (status) or `R` (cursor position). Everything else is a key:
/// characters, Enter, Tab, Backspace, Esc, Ctrl-letters and the arrows.
fn split(bytes: &[u8]) -> Vec<Piece> {
    let text = String::from_utf8_lossy(bytes);
    let chars: Vec<char> = text.chars().collect();
    let mut pieces = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '\x1b' {
            pieces.extend(key_of(c).map(Piece::Key));
            i += 1;
            continue;
        }
        let (end, piece) = sequence(&chars, i);
        pieces.extend(piece);
        i = end;
    }
    pieces
}

/// The escape sequence starting at `start` (an ESC): where it ends, and
/// what it is.
fn sequence(chars: &[char], start: usize) -> (usize, Option<Piece>) {
    let text = |end: usize| chars[start..end].iter().collect::<String>();
    match chars.get(start + 1) {
        // APC and OSC run to their terminator (BEL, or ESC \).
        Some('_') | Some(']') | Some('P') => {
            let mut j = start + 2;
            while j < chars.len() {
                if chars[j] == '\x07' {
                    return (j + 1, Some(Piece::Reply(text(j + 1))));
                }
                if chars[j] == '\x1b' && chars.get(j + 1) == Some(&'\\') {
                    return (j + 2, Some(Piece::Reply(text(j + 2))));
                }
                j += 1;
            }
            (chars.len(), Some(Piece::Reply(text(chars.len()))))
        }
        Some('[') | Some('O') => {
            // CSI (or SS3): parameters, then a final byte in @..~.
            let mut j = start + 2;
            while j < chars.len() && !('@'..='~').contains(&chars[j]) {
                j += 1;
            }
            let Some(&last) = chars.get(j) else {
                return (chars.len(), None);
            };
            let piece = match (chars[start + 1], last) {
                ('[', 'c' | 't' | 'n' | 'R') => Piece::Reply(text(j + 1)),
                (_, 'A') => Piece::Key(plain(KeyCode::Up)),
                (_, 'B') => Piece::Key(plain(KeyCode::Down)),
                (_, 'C') => Piece::Key(plain(KeyCode::Right)),
                (_, 'D') => Piece::Key(plain(KeyCode::Left)),
                _ => return (j + 1, None),
            };
            (j + 1, Some(piece))
        }
        // A lone ESC is the Esc key.
        _ => (start + 1, Some(Piece::Key(plain(KeyCode::Esc)))),
    }
}

fn plain(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

/// The key a character typed in raw mode stands for.
fn key_of(c: char) -> Option<KeyEvent> {
    Some(match c {
        '\r' | '\n' => plain(KeyCode::Enter),
        '\t' => plain(KeyCode::Tab),
        '\x7f' | '\x08' => plain(KeyCode::Backspace),
        '\x01'..='\x1a' => KeyEvent::new(KeyCode::Char((b'a' + c as u8 - 1) as char), KeyModifiers::CONTROL),
        c if c.is_control() => return None,
        c => plain(KeyCode::Char(c)),
    })
}

/// The probe's result from what the terminal sent.
fn interpret(bytes: &[u8]) -> Probe {
    let mut parser = Parser::new();
    let (mut keys, mut responses, mut answered) = (Vec::new(), Vec::new(), false);
    for piece in split(bytes) {
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

    fn keys(pieces: &[Piece]) -> Vec<KeyEvent> {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Key(k) => Some(*k),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn replies_and_keys_are_told_apart() {
        // Keys typed before, between and after a kitty terminal's replies.
        let bytes = b"v\x1b_Gi=31;OK\x1b\\q\x1b[?62;22c\x1b[6;20;10t \x1b[0n\r\x1b[A\x03";
        let pieces = split(bytes);
        let replies: Vec<&Piece> = pieces.iter().filter(|p| matches!(p, Piece::Reply(_))).collect();
        assert_eq!(replies.len(), 4, "{pieces:?}");
        assert_eq!(
            keys(&pieces),
            vec![
                plain(KeyCode::Char('v')),
                plain(KeyCode::Char('q')),
                plain(KeyCode::Char(' ')),
                plain(KeyCode::Enter),
                plain(KeyCode::Up),
                KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
            ]
        );
        // A lone Esc is a key, not the start of a reply.
        assert_eq!(keys(&split(b"\x1b")), vec![plain(KeyCode::Esc)]);
    }

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
        assert_eq!(plain_terminal.keys, vec![plain(KeyCode::Char('x'))]);
        // Nothing at all: nothing is found, nothing is lost.
        let silent = interpret(b"");
        assert!(!silent.answered && silent.picker.is_none() && silent.keys.is_empty());
    }
}
