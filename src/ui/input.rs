//! The lab's input: what the terminal sends, told apart into the user's
//! keys and the terminal's replies to queries (the graphics probe's kitty
//! answer, device attributes, cell sizes, colours). Replies come on the
//! same input as keys and may come late: over SSH, or from the terminal
//! outside tmux, long after the probe stopped waiting. They are dropped
//! here, whenever they arrive, so their digits never select path nodes.
//!
//! Why not crossterm's event reader: its parser reads an APC, OSC or DCS
//! reply (`ESC _ G i=31;OK ESC \`) as Alt+`_` and then plain keys, and a
//! secondary device attributes reply (`ESC [ > 1;10;0 c`) as an error and
//! then the keys `1;10;0c`; what it made of them cannot be undone above
//! it, and its parser is not public. So the bytes are read and decoded
//! here: the lab needs only characters, Enter, Tab, Backspace, Esc, the
//! arrows and a few more.
//!
//! A reply is a string sequence (APC `ESC _`, OSC `ESC ]`, DCS `ESC P`,
//! SOS `ESC X`, PM `ESC ^`, to BEL or `ESC \`) or a CSI sequence that is
//! not a key: one with a private marker (`ESC [ ?`, `>`, `=`, `<`), or one
//! ending in anything but a key's final byte (`c`, `n`, `t`, `R`, …).
//!
//! A key can look like the start of a reply (Alt+`]` is `ESC ]`, the start
//! of an OSC string), so nothing may wait for a reply's end for ever: the
//! bytes of one reply arrive together, so a sequence still unfinished
//! [`SEQUENCE_WAIT`] after its ESC, longer than [`LONGEST_SEQUENCE`], or
//! holding a byte no reply holds (Ctrl-C, Enter, Backspace, another ESC)
//! was keys, and is given back as keys. The cost: keys typed within
//! [`SEQUENCE_WAIT`] after Alt+`]` arrive that much later, and Alt+`[` with
//! digits and a letter typed within it is read as a reply.
//!
//! The other way round, a reply whose ESC arrives alone (a slow link may
//! cut anywhere) is not held back: after [`ESC_WAIT`] that ESC is the Esc
//! key, since Esc must answer at once. What follows it within
//! [`SEQUENCE_WAIT`] of the ESC, if it continues a sequence, is still read
//! as one, so the reply's digits never become keys; the one Esc key is the
//! price (in the lab it opens at most the question whether to leave).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// Bytes a sequence may hold: the replies the lab asks for are under a
/// hundred; a longer one is keys after a stray `ESC _`.
const LONGEST_SEQUENCE: usize = 512;
/// How long after its ESC a sequence may still be arriving: the bytes of a
/// reply come together, within a round trip's jitter even when a slow
/// link cuts them; keys typed after an Alt+`]` come later than that.
const SEQUENCE_WAIT: Duration = Duration::from_millis(500);
/// How long a lone ESC waits for the rest of a sequence before it is the
/// Esc key (the bytes of one sequence arrive together, in practice).
const ESC_WAIT: Duration = Duration::from_millis(50);

/// A piece of what the terminal sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Key(KeyEvent),
    /// A reply to a query, as it came (escape sequence included).
    Reply(String),
}

/// Decodes the terminal's bytes as they arrive, in chunks cut anywhere: a
/// sequence or character cut short waits for the rest, for a while (the
/// time is passed in, so that tests need no clock).
#[derive(Debug, Default)]
pub struct Decoder {
    pending: Vec<u8>,
    /// When the pending bytes' first arrived.
    since: Option<Instant>,
    /// The pending bytes start with an ESC already given as the Esc key.
    esc_given: bool,
    /// When a lone ESC was given as the Esc key: the rest of its sequence
    /// may still come.
    lone_esc: Option<Instant>,
}

/// What the bytes at the start of the pending ones are.
enum Next {
    /// A piece (or nothing, for bytes that mean nothing) and its length.
    Done(Option<Piece>, usize),
    /// The start of a sequence that the bytes after it show to be keys
    /// (Alt with a key, then keys): its length.
    Keys(usize),
    /// More bytes are needed to tell.
    Incomplete,
}

impl Decoder {
    /// Takes the bytes that arrived at `now`; returns the pieces they
    /// finish (and what waited too long before them).
    pub fn feed(&mut self, bytes: &[u8], now: Instant) -> Vec<Piece> {
        let mut pieces = self.settle(now);
        let continues = matches!(bytes.first(), Some(b'[' | b'_' | b']' | b'P' | b'X' | b'^'));
        match self.lone_esc.take() {
            Some(at) if continues && self.pending.is_empty() && now < at + SEQUENCE_WAIT => {
                self.pending.push(ESC);
                self.esc_given = true;
                self.since = Some(at);
            }
            _ => {}
        }
        let was_empty = self.pending.is_empty();
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while start < self.pending.len() {
            let len = match next(&self.pending[start..]) {
                Next::Done(piece, len) => {
                    pieces.extend(piece);
                    len
                }
                Next::Keys(len) => {
                    pieces.extend(give_back(&self.pending[start..start + len], self.esc_given));
                    len
                }
                Next::Incomplete => break,
            };
            start += len;
            self.esc_given = false;
        }
        self.pending.drain(..start);
        if self.pending.is_empty() {
            self.since = None;
        } else if start > 0 || was_empty {
            self.since = Some(now);
        }
        pieces
    }

    /// When [`Decoder::settle`] next has something to give: a lone ESC's
    /// wait or an unfinished sequence's end.
    pub fn deadline(&self) -> Option<Instant> {
        let since = self.since?;
        Some(since + if self.lone() { ESC_WAIT } else { SEQUENCE_WAIT })
    }

    /// What has waited too long by `now`: a lone ESC is the Esc key; an
    /// unfinished sequence was keys.
    pub fn settle(&mut self, now: Instant) -> Vec<Piece> {
        match self.deadline() {
            Some(deadline) if now >= deadline => {}
            _ => return Vec::new(),
        }
        let lone = self.lone();
        let pending = std::mem::take(&mut self.pending);
        let since = self.since.take();
        if lone {
            self.lone_esc = since;
            return vec![Piece::Key(plain(KeyCode::Esc))];
        }
        let pieces = give_back(&pending, self.esc_given);
        self.esc_given = false;
        pieces
    }

    fn lone(&self) -> bool {
        self.pending == [ESC] && !self.esc_given
    }
}

/// How often the reading thread looks whether the lab has closed.
const TICK: Duration = Duration::from_millis(50);

/// The user's keys from standard input (in raw mode), read on a thread of
/// its own while the lab is open; dropping it stops and joins the thread,
/// so that nothing reads the input once the lab has closed.
pub struct Keys {
    keys: UnboundedReceiver<KeyEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keys {
    /// Starts reading, in the middle of what `decoder` has seen (the
    /// probe's: a reply it read half of is dropped whole).
    pub fn start(decoder: Decoder) -> Self {
        let (tx, keys) = unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::Builder::new()
            .name("disback-keys".into())
            .spawn(move || read_keys(decoder, &tx, &halt))
            .ok();
        Self { keys, stop, thread }
    }

    /// The next key; `None` once the terminal is gone.
    pub async fn next(&mut self) -> Option<KeyEvent> {
        self.keys.recv().await
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reading thread: keys go to `tx` until the lab stops it or the input
/// ends (the channel then closes).
fn read_keys(mut decoder: Decoder, tx: &UnboundedSender<KeyEvent>, stop: &AtomicBool) {
    let send = |pieces: Vec<Piece>| {
        for piece in pieces {
            if let Piece::Key(key) = piece {
                let _ = tx.send(key);
            }
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = decoder
            .deadline()
            .map_or(TICK, |d| d.saturating_duration_since(now).min(TICK));
        match wait_for_input(wait) {
            Input::Ready => {}
            Input::Quiet => {
                send(decoder.settle(Instant::now()));
                continue;
            }
            Input::Gone => return,
        }
        let mut buf = [0u8; 1024];
        match read_stdin(&mut buf) {
            0 => return,
            n => send(decoder.feed(&buf[..n], Instant::now())),
        }
    }
}

/// What standard input has within a wait.
#[derive(Debug, PartialEq)]
pub enum Input {
    Ready,
    Quiet,
    /// Closed, or an error: the terminal is gone.
    Gone,
}

/// Waits up to `wait` for standard input to have a byte (poll, so that a
/// read never blocks and the caller can stop).
pub fn wait_for_input(wait: Duration) -> Input {
    let mut fd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // Rounded up: a deadline is not woken for before it has passed.
    let ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: one pollfd, owned here, for the duration of the call.
    match unsafe { libc::poll(&mut fd, 1, ms) } {
        n if n < 0 => match std::io::Error::last_os_error().kind() {
            std::io::ErrorKind::Interrupted => Input::Quiet,
            _ => Input::Gone,
        },
        0 => Input::Quiet,
        _ if fd.revents & libc::POLLIN != 0 => Input::Ready,
        _ => Input::Gone,
    }
}

/// Reads what standard input has (after [`wait_for_input`] said it has
/// some); 0 when it is closed or failed.
pub fn read_stdin(buf: &mut [u8]) -> usize {
    loop {
        // SAFETY: reading into a buffer of the given length from fd 0.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        let interrupted = n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
        if !interrupted {
            return n.max(0) as usize;
        }
    }
}

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;

fn next(bytes: &[u8]) -> Next {
    match bytes {
        [ESC] => Next::Incomplete,
        [ESC, b'_' | b']' | b'P' | b'X' | b'^', ..] => string(bytes),
        [ESC, b'[', ..] => csi(bytes),
        [ESC, b'O', ..] => ss3(bytes),
        // Esc pressed twice, or Esc then a sequence: the first is the key.
        [ESC, ESC, ..] => Next::Done(Some(Piece::Key(plain(KeyCode::Esc))), 1),
        // ESC before a character is Alt with it.
        [ESC, rest @ ..] => match character(rest) {
            Next::Done(Some(Piece::Key(mut key)), len) => {
                key.modifiers |= KeyModifiers::ALT;
                Next::Done(Some(Piece::Key(key)), len + 1)
            }
            Next::Done(_, len) => Next::Done(None, len + 1),
            Next::Keys(len) => Next::Keys(len + 1),
            Next::Incomplete => Next::Incomplete,
        },
        _ => character(bytes),
    }
}

/// An APC, OSC, DCS, SOS or PM sequence: to its BEL or `ESC \`. A byte no
/// reply holds (a control other than these, DEL, an ESC starting anything
/// else) or too many bytes show it was keys: Alt+`]` and what followed.
fn string(bytes: &[u8]) -> Next {
    let reply = |end: usize| Some(Piece::Reply(String::from_utf8_lossy(&bytes[..end]).into_owned()));
    for (i, &b) in bytes.iter().enumerate().skip(2) {
        match b {
            BEL => return Next::Done(reply(i + 1), i + 1),
            ESC => match bytes.get(i + 1) {
                Some(b'\\') => return Next::Done(reply(i + 2), i + 2),
                Some(_) => return Next::Keys(i),
                None => return Next::Incomplete,
            },
            0x00..=0x1f | 0x7f => return Next::Keys(i),
            _ if i >= LONGEST_SEQUENCE => return Next::Keys(i),
            _ => {}
        }
    }
    Next::Incomplete
}

/// A CSI sequence: parameters and intermediates (0x20–0x3f), then a final
/// byte (0x40–0x7e). A key if it has a key's final byte and no private
/// marker; otherwise a reply. Any other byte, or too many, show it was
/// keys: Alt+`[` and what followed.
fn csi(bytes: &[u8]) -> Next {
    let Some(end) = bytes[2..].iter().position(|b| !(0x20..=0x3f).contains(b)) else {
        return match bytes.len() > LONGEST_SEQUENCE {
            true => Next::Keys(LONGEST_SEQUENCE),
            false => Next::Incomplete,
        };
    };
    let end = end + 2;
    let last = bytes[end];
    if !(0x40..=0x7e).contains(&last) || end >= LONGEST_SEQUENCE {
        return Next::Keys(end);
    }
    let params = std::str::from_utf8(&bytes[2..end]).unwrap_or_default();
    let private = params.starts_with(['?', '>', '=', '<']);
    let key = (!private).then(|| csi_key(params, last)).flatten();
    let piece = match key {
        Some(key) => Piece::Key(key),
        None => Piece::Reply(String::from_utf8_lossy(&bytes[..=end]).into_owned()),
    };
    Next::Done(Some(piece), end + 1)
}

/// The keys that bytes taken for the start of a sequence were: Alt with
/// the byte after the ESC (the plain key when that ESC was already given
/// as the Esc key), then one key a character.
fn give_back(bytes: &[u8], esc_given: bool) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut rest = bytes;
    if let [ESC, b, tail @ ..] = bytes {
        if let Some(mut key) = key_of(char::from(*b)) {
            if !esc_given {
                key.modifiers |= KeyModifiers::ALT;
            }
            pieces.push(Piece::Key(key));
        }
        rest = tail;
    }
    while !rest.is_empty() {
        match character(rest) {
            Next::Done(piece, len) => {
                pieces.extend(piece);
                rest = &rest[len..];
            }
            // A character cut short: nothing.
            _ => break,
        }
    }
    pieces
}

/// The key a CSI sequence stands for: `ESC [ A` (Up), `ESC [ 1;5A`
/// (Ctrl-Up), `ESC [ 3~` (Delete), …; none for a reply.
fn csi_key(params: &str, last: u8) -> Option<KeyEvent> {
    let mut numbers = params.split(';').map(|p| p.parse::<u8>().ok());
    let first = numbers.next().flatten();
    let modifiers = numbers.next().flatten().map_or(KeyModifiers::NONE, modifiers_of);
    let code = match last {
        b'A' | b'B' | b'C' | b'D' | b'H' | b'F' => cursor_key(last),
        b'Z' => return Some(KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT)),
        b'~' => match first? {
            1 | 7 => KeyCode::Home,
            2 => KeyCode::Insert,
            3 => KeyCode::Delete,
            4 | 8 => KeyCode::End,
            5 => KeyCode::PageUp,
            6 => KeyCode::PageDown,
            n @ 11..=15 => KeyCode::F(n - 10),
            n @ 17..=21 => KeyCode::F(n - 11),
            n @ 23..=24 => KeyCode::F(n - 12),
            _ => return None,
        },
        _ => return None,
    };
    Some(KeyEvent::new(code, modifiers))
}

/// The cursor keys' final bytes, the same after CSI and after SS3.
fn cursor_key(last: u8) -> KeyCode {
    match last {
        b'A' => KeyCode::Up,
        b'B' => KeyCode::Down,
        b'C' => KeyCode::Right,
        b'D' => KeyCode::Left,
        b'H' => KeyCode::Home,
        _ => KeyCode::End,
    }
}

/// xterm's modifier parameter: 1 + a bit each for Shift, Alt, Ctrl.
fn modifiers_of(n: u8) -> KeyModifiers {
    let bits = n.saturating_sub(1);
    let mut m = KeyModifiers::NONE;
    for (bit, modifier) in [
        (1, KeyModifiers::SHIFT),
        (2, KeyModifiers::ALT),
        (4, KeyModifiers::CONTROL),
    ] {
        if bits & bit != 0 {
            m |= modifier;
        }
    }
    m
}

/// SS3 (`ESC O x`): the arrows, Home, End and F1–F4 in application mode.
fn ss3(bytes: &[u8]) -> Next {
    let Some(&last) = bytes.get(2) else {
        return Next::Incomplete;
    };
    let code = match last {
        b'A' | b'B' | b'C' | b'D' | b'H' | b'F' => cursor_key(last),
        b'P'..=b'S' => KeyCode::F(1 + last - b'P'),
        _ => return Next::Keys(2),
    };
    Next::Done(Some(Piece::Key(plain(code))), 3)
}

/// One UTF-8 character, as a key (or nothing, for bytes that are not one).
fn character(bytes: &[u8]) -> Next {
    let len = match bytes[0] {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return Next::Done(None, 1),
    };
    let Some(encoded) = bytes.get(..len) else {
        return Next::Incomplete;
    };
    match std::str::from_utf8(encoded).ok().and_then(|s| s.chars().next()) {
        Some(c) => Next::Done(key_of(c).map(Piece::Key), len),
        None => Next::Done(None, 1),
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
        c if c.is_uppercase() => KeyEvent::new(KeyCode::Char(c), KeyModifiers::SHIFT),
        c => plain(KeyCode::Char(c)),
    })
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

    fn replies(pieces: &[Piece]) -> Vec<String> {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Reply(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// A moment `ms` milliseconds after the start of a test.
    fn at(ms: u64) -> Instant {
        thread_local!(static START: Instant = Instant::now());
        START.with(|start| *start + Duration::from_millis(ms))
    }

    /// What `bytes` arriving together are, once nothing more comes.
    fn decode(bytes: &[u8]) -> Vec<Piece> {
        arrive(&[(0, bytes)])
    }

    /// What chunks arriving at the given milliseconds are, once nothing
    /// more comes.
    fn arrive(chunks: &[(u64, &[u8])]) -> Vec<Piece> {
        let mut d = Decoder::default();
        let mut pieces = Vec::new();
        for &(ms, bytes) in chunks {
            pieces.extend(d.feed(bytes, at(ms)));
        }
        pieces.extend(d.settle(at(10_000)));
        pieces
    }

    fn alt(c: char) -> KeyEvent {
        let mut key = key_of(c).unwrap();
        key.modifiers |= KeyModifiers::ALT;
        key
    }

    fn chars(s: &str) -> Vec<KeyEvent> {
        s.chars().filter_map(key_of).collect()
    }

    /// Replies of every kind a terminal may send the lab, late or not.
    const REPLIES: [&str; 8] = [
        "\x1b_Gi=31;OK\x1b\\",
        "\x1b_Gi=31;ENOTSUPPORTED:\x07",
        "\x1b[?62;4;22c",
        "\x1b[>1;4000;29c",
        "\x1b[6;20;10t",
        "\x1b[0n",
        "\x1b]11;rgb:1e1e/1e1e/2e2e\x1b\\",
        "\x1bP1$r0;1m\x1b\\",
    ];

    #[test]
    fn replies_are_dropped_and_keys_kept_however_the_bytes_are_cut() {
        let mut bytes = String::from("v");
        for (i, reply) in REPLIES.iter().enumerate() {
            bytes.push_str(reply);
            bytes.push(char::from(b'a' + i as u8));
        }
        bytes.push_str("3\r\x1b[A\x1b[1;5B\x03é");
        let expected: Vec<KeyEvent> = std::iter::once(plain(KeyCode::Char('v')))
            .chain((0..REPLIES.len()).map(|i| plain(KeyCode::Char(char::from(b'a' + i as u8)))))
            .chain([
                plain(KeyCode::Char('3')),
                plain(KeyCode::Enter),
                plain(KeyCode::Up),
                KeyEvent::new(KeyCode::Down, KeyModifiers::CONTROL),
                KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
                plain(KeyCode::Char('é')),
            ])
            .collect();
        let whole = decode(bytes.as_bytes());
        assert_eq!(keys(&whole), expected);
        assert_eq!(replies(&whole), REPLIES);
        // Cut in two anywhere (a reply's start read with one chunk, its end
        // with the next), the same keys and replies.
        let b = bytes.as_bytes();
        for cut in 1..b.len() {
            let mut d = Decoder::default();
            let mut pieces = d.feed(&b[..cut], at(0));
            pieces.extend(d.feed(&b[cut..], at(1)));
            assert_eq!(pieces, whole, "cut at byte {cut}");
        }
    }

    #[test]
    fn a_lone_escape_is_the_esc_key_once_nothing_follows() {
        let mut d = Decoder::default();
        assert!(d.feed(b"\x1b", at(0)).is_empty());
        assert_eq!(d.deadline(), Some(at(0) + ESC_WAIT));
        assert!(d.settle(at(49)).is_empty());
        assert_eq!(d.settle(at(50)), vec![Piece::Key(plain(KeyCode::Esc))]);
        assert!(d.deadline().is_none() && d.settle(at(100)).is_empty());
        // Esc twice; Esc then a reply; Alt with a key.
        assert_eq!(keys(&decode(b"\x1b\x1b")), vec![plain(KeyCode::Esc); 2]);
        let pieces = decode(b"\x1b\x1b[0n");
        assert_eq!(keys(&pieces), vec![plain(KeyCode::Esc)]);
        assert_eq!(replies(&pieces), vec!["\x1b[0n"]);
        assert_eq!(keys(&decode(b"\x1bx")), vec![alt('x')]);
        // A reply still on its way is not the Esc key.
        let mut d = Decoder::default();
        assert!(d.feed(b"\x1b_Gi=3", at(0)).is_empty() && d.settle(at(400)).is_empty());
        assert_eq!(
            replies(&d.feed(b"1;OK\x1b\\", at(450))),
            vec!["\x1b_Gi=31;OK\x1b\\"]
        );
    }

    #[test]
    fn keys_that_start_like_a_reply_are_keys_once_no_reply_follows() {
        // Alt+] and Alt+_ alone, Alt+Shift+P then q: the keys, not a reply
        // waiting for its end, and the q after them.
        assert_eq!(keys(&decode(b"\x1b]")), vec![alt(']')]);
        assert_eq!(
            keys(&arrive(&[(0, b"\x1b_"), (100, b"q")])),
            vec![alt('_'), plain(KeyCode::Char('q'))]
        );
        let mut d = Decoder::default();
        assert!(d.feed(b"\x1bP", at(0)).is_empty());
        assert_eq!(d.deadline(), Some(at(0) + SEQUENCE_WAIT));
        assert_eq!(
            keys(&d.feed(b"q", at(600))),
            vec![alt('P'), plain(KeyCode::Char('q'))]
        );
        // Alt+[ then digits and a letter typed later: keys, not a reply.
        let typed = arrive(&[(0, b"\x1b["), (200, b"1"), (400, b"2"), (600, b"n")]);
        assert_eq!(keys(&typed), [vec![alt('[')], chars("12n")].concat());
        // Esc, then ] and q (one read from a fast typist): Esc, ] and q.
        let pieces = arrive(&[(0, b"\x1b"), (60, b"]q")]);
        assert_eq!(keys(&pieces), [vec![plain(KeyCode::Esc)], chars("]q")].concat());
        let bundled = decode(b"\x1b]q");
        assert_eq!(keys(&bundled), [vec![alt(']')], chars("q")].concat());
        // Bytes no reply holds end a string or CSI at once: Ctrl-C, Enter.
        let mut d = Decoder::default();
        let pieces = d.feed(b"\x1b_Gi=3\x03", at(0));
        assert_eq!(keys(&pieces), [vec![alt('_')], chars("Gi=3\x03")].concat());
        assert!(pieces.contains(&Piece::Key(KeyEvent::new(
            KeyCode::Char('c'),
            KeyModifiers::CONTROL
        ))));
        assert_eq!(
            keys(&d.feed(b"\x1b]1\r", at(1))),
            [vec![alt(']')], chars("1\r")].concat()
        );
        assert_eq!(
            keys(&d.feed(b"\x1b[1\x7f", at(2))),
            [vec![alt('[')], chars("1\x7f")].concat()
        );
        assert!(d.deadline().is_none());
        // A string longer than any reply is keys: Alt+] and every x.
        let long = [b"\x1b]".as_slice(), &[b'x'; LONGEST_SEQUENCE]].concat();
        let pieces = Decoder::default().feed(&long, at(0));
        assert_eq!(
            keys(&pieces),
            [vec![alt(']')], chars(&"x".repeat(LONGEST_SEQUENCE))].concat()
        );
    }

    #[test]
    fn a_reply_cut_by_a_slow_link_is_still_a_reply() {
        let reply = b"\x1b_Gi=31;OK\x1b\\";
        // Cut anywhere after its ESC, the rest 200 ms later: one reply.
        for cut in 2..reply.len() {
            let pieces = arrive(&[(0, &reply[..cut]), (200, &reply[cut..]), (300, b"v")]);
            assert_eq!(keys(&pieces), chars("v"), "cut at byte {cut}");
        }
        // Its ESC alone, the rest 200 ms later: that ESC was the Esc key
        // (it could not wait), but the rest is no keys.
        for reply in REPLIES {
            let (esc, rest) = reply.as_bytes().split_at(1);
            let pieces = arrive(&[(0, esc), (200, rest), (300, b"v")]);
            assert_eq!(
                keys(&pieces),
                vec![plain(KeyCode::Esc), plain(KeyCode::Char('v'))],
                "{reply:?}"
            );
        }
        // Too late for that (or a key that continues no sequence): keys.
        let late = arrive(&[(0, b"\x1b"), (600, b"_G")]);
        assert_eq!(keys(&late), [vec![plain(KeyCode::Esc)], chars("_G")].concat());
        assert_eq!(
            keys(&arrive(&[(0, b"\x1b"), (100, b"7")])),
            [vec![plain(KeyCode::Esc)], chars("7")].concat()
        );
    }

    #[test]
    fn keys_with_escapes_are_read_as_keys() {
        let cases: [(&[u8], KeyEvent); 8] = [
            (b"\x1bOA", plain(KeyCode::Up)),
            (b"\x1b[D", plain(KeyCode::Left)),
            (b"\x1b[3~", plain(KeyCode::Delete)),
            (b"\x1b[5;2~", KeyEvent::new(KeyCode::PageUp, KeyModifiers::SHIFT)),
            (b"\x1b[Z", KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT)),
            (b"\x1bOP", plain(KeyCode::F(1))),
            (b"\x7f", plain(KeyCode::Backspace)),
            (b"\t", plain(KeyCode::Tab)),
        ];
        for (bytes, key) in cases {
            assert_eq!(decode(bytes), vec![Piece::Key(key)], "{bytes:?}");
        }
    }
}
