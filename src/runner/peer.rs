//! Who is on the other end of the socket, and how a runner leaves its
//! terminal. Written against libc because std has no stable API for
//! either (`UnixStream::peer_cred` and `setsid` are unstable or absent).

use anyhow::{Result, bail};
use std::os::fd::AsRawFd;

/// The user id of the process connected to `socket` (`SO_PEERCRED`).
pub fn peer_uid(socket: &impl AsRawFd) -> Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        bail!(
            "cannot read the peer's credentials: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(cred.uid)
}

/// This process's user id.
pub fn own_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// Only the user who started the run may watch or steer it.
pub fn check_same_user(peer: u32, own: u32) -> Result<()> {
    if peer != own {
        bail!("refused: this run belongs to uid {own}, and you are uid {peer}");
    }
    Ok(())
}

/// Starts a new session for this (child) process: no controlling
/// terminal, so a closed terminal sends it no SIGHUP. For `pre_exec`.
pub fn leave_terminal() -> std::io::Result<()> {
    // SAFETY: setsid is async-signal-safe, as pre_exec requires.
    match unsafe { libc::setsid() } {
        -1 => Err(std::io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// Points standard output and error at `file` (the runner's log), so no
/// write can fail on a terminal or pipe that went away.
pub fn redirect_output(file: &std::fs::File) -> std::io::Result<()> {
    for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: both descriptors are valid; dup2 replaces the target.
        if unsafe { libc::dup2(file.as_raw_fd(), target) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_user_is_refused_and_the_same_user_let_in() {
        check_same_user(1000, 1000).unwrap();
        let err = check_same_user(1001, 1000).unwrap_err().to_string();
        assert!(err.contains("uid 1000") && err.contains("uid 1001"), "{err}");
    }

    #[test]
    fn a_socket_pair_reports_this_process_user() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a).unwrap(), own_uid());
    }
}
