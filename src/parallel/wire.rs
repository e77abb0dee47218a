//! The frames of the team's TCP connections: one byte of kind, four of
//! length (little-endian), the bytes. (Hand-written: five bytes of header
//! over `std`'s sockets, where a messaging crate would bring a runtime.)

use anyhow::{Result, bail};
use std::io::{Read, Write};
use std::net::TcpStream;

/// Rank 0's order, or (at the start) the team's token.
pub const MESSAGE: u8 = 0;
/// A rank failed: the bytes say which and why.
pub const FAILURE: u8 = 1;
/// A rank asks to join: its rank, the world it was told, the secret.
pub const HELLO: u8 = 2;
/// Rank 0 refuses a connection that did not show the secret.
pub const REFUSED: u8 = 3;
/// A rank has done its part of the end and leaves: its connection's
/// closing is no failure.
pub const LEFT: u8 = 4;

/// The largest frame read: orders and ids are small; a stranger's bytes
/// must not make rank 0 allocate gigabytes.
const LARGEST: usize = 64 << 20;

pub fn write_frame(link: &mut TcpStream, kind: u8, bytes: &[u8]) -> Result<()> {
    let mut frame = Vec::with_capacity(5 + bytes.len());
    frame.push(kind);
    frame.extend((bytes.len() as u32).to_le_bytes());
    frame.extend(bytes);
    link.write_all(&frame)?;
    Ok(())
}

pub fn read_frame(link: &mut TcpStream) -> Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    link.read_exact(&mut head)?;
    let len = u32::from_le_bytes(head[1..].try_into()?) as usize;
    if len > LARGEST {
        bail!("a frame of {len} bytes, more than any rank sends");
    }
    let mut bytes = vec![0u8; len];
    link.read_exact(&mut bytes)?;
    Ok((head[0], bytes))
}
