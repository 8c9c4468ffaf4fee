//! [`Stream`]: a TCP socket on the thread's ring ([`Tcp`]), plain or wrapped in TLS (either
//! role), behind one `AsyncRead + AsyncWrite` type so the codecs and drivers above never ask
//! which.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};

use super::tcp::Tcp;

/// A connection's byte stream.
pub enum Stream {
    /// Plain TCP.
    Plain(Tcp),
    /// TLS over TCP (client or server side).
    Tls(Box<futures_rustls::TlsStream<Tcp>>),
}

impl Stream {
    /// The socket's descriptor.
    pub fn fd(&self) -> RawFd {
        match self {
            Stream::Plain(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.get_ref().0.as_raw_fd(),
        }
    }

    /// Reads once and appends to `rbuf`. Plain sockets hand over what the ring received
    /// without a copy when `rbuf` is empty; TLS decrypts through `scratch`. `Ok(0)` is the end
    /// of the stream.
    pub fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        rbuf: &mut BytesMut,
        scratch: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::Plain(s) => s.poll_read_buf(cx, rbuf),
            Stream::Tls(s) => match Pin::new(s.as_mut()).poll_read(cx, scratch) {
                Poll::Ready(Ok(n)) => {
                    if rbuf.is_empty() {
                        *rbuf = BytesMut::from(&scratch[..n]);
                    } else {
                        rbuf.extend_from_slice(&scratch[..n]);
                    }
                    Poll::Ready(Ok(n))
                }
                other => other,
            },
        }
    }

    /// Shuts down the write side (FIN) without waiting.
    pub fn shutdown_write(&self) {
        // SAFETY: the descriptor belongs to this live stream.
        unsafe {
            libc::shutdown(self.fd(), libc::SHUT_WR);
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
