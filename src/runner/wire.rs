//! The runner's wire format: one JSON message per line over the run's Unix
//! socket. The payloads are the engine's own [`Command`] and [`Update`]
//! types (serde), so the socket is a second transport for the messages the
//! in-process channel carries, not a second protocol.

use crate::engine::protocol::{Command, Update};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Bumped whenever a message changes shape; checked at connect.
pub const VERSION: u32 = 2;

/// The longest line either side accepts: a preview of a few thousand
/// points is ~100 kB; garbage without newlines stops here.
pub const MAX_LINE: u64 = 16 * 1024 * 1024;

/// Why a client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// A lab: receives the run's state and updates, steers it if it
    /// controls it.
    Lab,
    /// `disback stop`: checkpoint the run and end it.
    Stop,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientMessage {
    Hello { version: u32, purpose: Purpose },
    Command(Command),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunnerMessage {
    /// The answer to a good hello.
    Welcome {
        version: u32,
        pid: u32,
    },
    Update(Update),
    /// A message was refused; nothing changed.
    Error(String),
}

/// One message as a line.
pub fn encode(message: &impl Serialize) -> String {
    let mut line = serde_json::to_string(message).expect("messages serialise");
    line.push('\n');
    line
}

/// Reads one line (without its newline); `None` at the end of the stream.
/// A line longer than [`MAX_LINE`] is an error.
pub async fn read_line(reader: &mut (impl AsyncBufRead + Unpin)) -> Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = reader.take(MAX_LINE).read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        if n as u64 >= MAX_LINE {
            bail!("a message longer than {MAX_LINE} bytes");
        }
        // The peer closed mid-line: what came is still a message to judge.
    } else {
        line.pop();
    }
    Ok(Some(line))
}

/// Decodes a line, saying what was wrong with it.
pub fn decode<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T> {
    serde_json::from_slice(line).with_context(|| {
        let shown: String = String::from_utf8_lossy(line).chars().take(80).collect();
        format!("not a message of protocol version {VERSION}: {shown:?}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::protocol::Preview;

    #[test]
    fn messages_round_trip_as_single_lines() {
        for m in [
            ClientMessage::Hello {
                version: VERSION,
                purpose: Purpose::Lab,
            },
            ClientMessage::Command(Command::SetPreview(Preview::ScoreField)),
            ClientMessage::Command(Command::SetFieldSigma(0.25)),
        ] {
            let line = encode(&m);
            assert_eq!(line.matches('\n').count(), 1);
            assert_eq!(decode::<ClientMessage>(line.trim_end().as_bytes()).unwrap(), m);
        }
    }

    #[tokio::test]
    async fn garbage_is_an_error_that_names_the_protocol() {
        let err = decode::<ClientMessage>(b"\xff\xfe hello")
            .unwrap_err()
            .to_string();
        assert!(err.contains("protocol version"), "{err}");
        let mut input: &[u8] = b"one\ntwo";
        let mut reader = tokio::io::BufReader::new(&mut input);
        assert_eq!(read_line(&mut reader).await.unwrap().unwrap(), b"one");
        assert_eq!(read_line(&mut reader).await.unwrap().unwrap(), b"two");
        assert!(read_line(&mut reader).await.unwrap().is_none());
    }
}
