//! Where there are no Unix sockets (Windows), this stands in for
//! `serve/unix_socket.rs`: the listener code stays the same on every platform,
//! but none of these types can ever hold a value. The config refuses
//! `listen = "unix:PATH"` here, naming the platform, and `bind_unix` says so
//! again should anything ask.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::UnixSocket;

/// Never made: there is no Unix socket file on this platform.
pub struct SocketFile(Never);

/// A listening Unix socket (never made here).
pub(crate) struct StdUnixListener(Never);

/// A registered listening Unix socket (never made here).
pub(crate) struct UnixListener(Never);

/// An accepted Unix-socket connection (never made here).
pub struct UnixStream(Never);

/// The address of a Unix socket (never made here).
pub(crate) struct UnixAddr(Never);

#[derive(Clone, Copy)]
enum Never {}

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "Unix sockets (listen = \"unix:PATH\") do not exist on {}: listen on a loopback TCP address",
            std::env::consts::OS
        ),
    )
}

pub(crate) fn bind_unix(_: &UnixSocket) -> io::Result<(StdUnixListener, SocketFile)> {
    Err(unsupported())
}

pub(crate) fn duplicate(listener: &UnixListener) -> io::Result<StdUnixListener> {
    match listener.0 {}
}

pub(crate) fn peer_uid(stream: &UnixStream) -> Option<u32> {
    match stream.0 {}
}

impl SocketFile {
    pub(crate) fn set_permissions(&self, _: &UnixSocket) -> io::Result<()> {
        match self.0 {}
    }
}

impl StdUnixListener {
    pub(crate) fn set_nonblocking(&self, _: bool) -> io::Result<()> {
        match self.0 {}
    }

    pub(crate) fn try_clone(&self) -> io::Result<StdUnixListener> {
        match self.0 {}
    }

    pub(crate) fn local_addr(&self) -> io::Result<UnixAddr> {
        match self.0 {}
    }
}

impl UnixListener {
    pub(crate) fn from_std(listener: StdUnixListener) -> io::Result<UnixListener> {
        match listener.0 {}
    }

    pub(crate) async fn accept(&self) -> io::Result<(UnixStream, UnixAddr)> {
        match self.0 {}
    }

    pub(crate) fn local_addr(&self) -> io::Result<UnixAddr> {
        match self.0 {}
    }
}

impl UnixAddr {
    pub(crate) fn as_pathname(&self) -> Option<&Path> {
        match self.0 {}
    }
}

impl UnixStream {
    pub(crate) async fn connect(_: &Path) -> io::Result<UnixStream> {
        Err(unsupported())
    }
}

impl AsyncRead for UnixStream {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.0 {}
    }
}

impl AsyncWrite for UnixStream {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        match self.0 {}
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0 {}
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0 {}
    }
}
