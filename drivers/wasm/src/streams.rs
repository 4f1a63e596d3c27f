//! The guest's stdout and stderr, kept in memory with weir-core's [`OutputBuffer`] (capped:
//! a write past `max_output_bytes` traps the guest) and [`LogTail`] (keeps the last bytes).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use weir_core::Result;
use weir_core::driver::output::{LogTail, OutputBuffer};

/// How much a guest may write in one call (a WASI write permit).
const WRITE_PERMIT: usize = 1024 * 1024;

/// Where the guest's bytes go: stdout (capped) or the log (tail).
enum Sink {
    Stdout {
        buf: OutputBuffer,
        error: Option<weir_core::Error>,
    },
    Log(LogTail),
}

impl Sink {
    /// Takes `bytes`; `false` when stdout went over its limit (the guest must stop).
    fn push(&mut self, bytes: &[u8]) -> bool {
        match self {
            Sink::Stdout { buf, error } => {
                if error.is_some() {
                    return false;
                }
                match buf.push(bytes) {
                    Ok(()) => true,
                    Err(e) => {
                        *error = Some(e);
                        false
                    }
                }
            }
            Sink::Log(tail) => {
                tail.push(bytes);
                true
            }
        }
    }
}

/// A guest output stream shared between the WASI context and the driver.
#[derive(Clone)]
pub(crate) struct Capture(Arc<Mutex<Option<Sink>>>);

impl Capture {
    /// Stdout: at most `max` bytes; writing more traps the guest.
    pub fn stdout(max: usize) -> Self {
        Capture(Arc::new(Mutex::new(Some(Sink::Stdout {
            buf: OutputBuffer::new(max),
            error: None,
        }))))
    }

    /// The log: keeps the last `max` bytes of stderr.
    pub fn log(max: usize) -> Self {
        Capture(Arc::new(Mutex::new(Some(Sink::Log(LogTail::new(max))))))
    }

    /// Whether stdout went over its limit.
    pub fn overflowed(&self) -> bool {
        matches!(&*self.0.lock(), Some(Sink::Stdout { error: Some(_), .. }))
    }

    /// The captured stdout, or the `too_large` error when it went over its limit.
    pub fn into_stdout(self) -> Result<Bytes> {
        match self.0.lock().take() {
            Some(Sink::Stdout { error: Some(e), .. }) => Err(e),
            Some(Sink::Stdout { buf, .. }) => Ok(buf.into_bytes()),
            _ => Ok(Bytes::new()),
        }
    }

    /// The captured log.
    pub fn into_log(self) -> String {
        match self.0.lock().take() {
            Some(Sink::Log(tail)) => tail.finish(),
            _ => String::new(),
        }
    }

    fn push(&self, bytes: &[u8]) -> bool {
        match self.0.lock().as_mut() {
            Some(sink) => sink.push(bytes),
            None => false,
        }
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if self.push(&bytes) {
            Ok(())
        } else {
            // A trap, not an I/O error: the guest stops here instead of carrying on.
            Err(StreamError::trap(
                "stdout is larger than max_output_bytes: the step was stopped",
            ))
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(if self.push(buf) {
            Ok(buf.len())
        } else {
            Err(io::Error::other("stdout is larger than max_output_bytes"))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::ErrorKind;

    #[test]
    fn stdout_refuses_to_grow_past_its_limit_and_keeps_the_error() {
        let mut out = Capture::stdout(5);
        assert!(out.write(Bytes::from_static(b"123")).is_ok());
        assert!(!out.overflowed());
        assert!(matches!(
            out.write(Bytes::from_static(b"456")),
            Err(StreamError::Trap(_))
        ));
        assert!(out.overflowed());
        // Later writes fail too, even small ones that would fit.
        assert!(out.write(Bytes::from_static(b"4")).is_err());
        let err = out.into_stdout().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert!(err.to_string().contains("max_output_bytes"));
    }

    #[test]
    fn stdout_and_log_give_back_what_was_written() {
        let mut out = Capture::stdout(100);
        out.write(Bytes::from_static(b"{\"a\":")).unwrap();
        out.write(Bytes::from_static(b"1}")).unwrap();
        assert_eq!(out.into_stdout().unwrap(), Bytes::from_static(b"{\"a\":1}"));
        let mut log = Capture::log(4);
        log.write(Bytes::from_static(b"0123456789")).unwrap();
        assert!(log.into_log().ends_with("\n6789"));
    }
}
