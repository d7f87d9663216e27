//! Handing a router's listening sockets to its successor, so that a router can be
//! restarted or upgraded to a new binary without refusing a single connection: the
//! successor asks over the router's control socket, receives the very same listening
//! sockets (`SCM_RIGHTS`), starts accepting on them, and only then does the old router
//! stop accepting and finish its connections in flight. Both accept from one queue in
//! the meantime, so nothing queued is lost.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

/// What a handed-over socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Role {
    /// The HTTP listener.
    Http,
    /// A stable TCP address.
    Tcp { port: u16 },
    /// The lock that makes the router the platform's one router.
    Lock,
}

/// At most this many sockets in one handover (the HTTP listener and the TCP routes).
const MAX_SOCKETS: usize = 4096;
/// File descriptors per message.
const PER_MESSAGE: usize = 64;

/// A control socket path usable whatever the data directory's depth (a socket path
/// must fit in 108 bytes): through an open handle on its directory.
fn short(path: &Path) -> std::io::Result<(std::fs::File, PathBuf)> {
    use std::os::fd::AsRawFd;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("a control socket needs a file name"))?;
    let handle = std::fs::File::open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd())).join(name);
    Ok((handle, short))
}

/// Listens for a successor on `path` (replacing a stale socket file).
pub fn listen(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    let (_dir, short) = short(path)?;
    let listener = tokio::net::UnixListener::bind(short)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(listener)
}

/// Serves one caller of the control socket (blocking): hands it `sockets` if it asks
/// for a handover; true once it said it accepts on them. A caller that does not speak
/// the protocol gets nothing.
pub fn hand_over(mut stream: UnixStream, sockets: Vec<(Role, OwnedFd)>) -> std::io::Result<bool> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    {
        let mut ask = [0_u8; 9];
        if stream.read_exact(&mut ask).is_err() || &ask != b"handover\n" {
            return Ok(false);
        }
        let owned = sockets;
        let sockets: Vec<(Role, BorrowedFd<'_>)> =
            owned.iter().map(|(r, fd)| (*r, fd.as_fd())).collect();
        let roles: Vec<Role> = sockets.iter().map(|(r, _)| *r).collect();
        let mut header = serde_json::to_vec(&roles).map_err(std::io::Error::other)?;
        header.push(b'\n');
        stream.write_all(&(header.len() as u32).to_be_bytes())?;
        stream.write_all(&header)?;
        for chunk in sockets.chunks(PER_MESSAGE) {
            let fds: Vec<BorrowedFd<'_>> = chunk.iter().map(|(_, fd)| *fd).collect();
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(PER_MESSAGE))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds));
            rustix::net::sendmsg(
                &stream,
                &[IoSlice::new(b"f")],
                &mut control,
                SendFlags::empty(),
            )?;
        }
        let mut taken = [0_u8; 6];
        stream.read_exact(&mut taken)?;
        Ok(&taken == b"taken\n")
    }
}

/// Asks the router listening on `path` for its sockets (and its lock); the caller
/// starts accepting on them, then calls [`Confirm::confirm`].
pub fn take(path: &Path) -> std::io::Result<(Vec<(Role, OwnedFd)>, Confirm)> {
    let (_dir, short) = short(path)?;
    let mut stream = UnixStream::connect(short)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"handover\n")?;
    let mut len = [0_u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 1 << 20 {
        return Err(std::io::Error::other("the handover header is too large"));
    }
    let mut header = vec![0_u8; len];
    stream.read_exact(&mut header)?;
    let roles: Vec<Role> = serde_json::from_slice(&header).map_err(std::io::Error::other)?;
    if roles.len() > MAX_SOCKETS {
        return Err(std::io::Error::other("too many sockets handed over"));
    }
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(roles.len());
    while fds.len() < roles.len() {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut byte = [0_u8; 1];
        let got = rustix::net::recvmsg(
            &stream,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        if got.bytes == 0 {
            return Err(std::io::Error::other(
                "the router closed the handover early",
            ));
        }
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
    }
    Ok((roles.into_iter().zip(fds).collect(), Confirm { stream }))
}

/// The predecessor, which keeps accepting until told the successor does.
#[derive(Debug)]
pub struct Confirm {
    stream: UnixStream,
}

impl Confirm {
    /// Tells the predecessor that the successor accepts now: it stops accepting.
    pub fn confirm(mut self) -> std::io::Result<()> {
        self.stream.write_all(b"taken\n")
    }
}
