//! Bounded collection of what a step prints, shared by every runtime driver: stdout is capped
//! (over the limit the attempt fails, nothing more is buffered) and the log keeps its tail.
//!
//! Drivers that get their output as chunks (Docker's attach stream, a WASI pipe, an HTTP body)
//! push them into an [`OutputBuffer`] and a [`LogTail`]; drivers with an [`AsyncRead`] use
//! [`read_capped`] and [`read_tail`].

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, ErrorKind, Result};

/// The error of an attempt whose stdout went over `max` bytes.
pub fn output_too_large(max: usize) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("step output (stdout, or the response body) is larger than max_output_bytes ({max} bytes)"),
    )
    .permanent()
}

/// A step's stdout, refusing to grow past a limit.
#[derive(Debug)]
pub struct OutputBuffer {
    buf: Vec<u8>,
    max: usize,
}

impl OutputBuffer {
    /// An empty buffer that takes at most `max` bytes.
    pub fn new(max: usize) -> Self {
        OutputBuffer {
            buf: Vec::new(),
            max,
        }
    }

    /// Appends `chunk`; fails with [`output_too_large`] (keeping nothing of `chunk`) when the
    /// total would exceed the limit.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        if self.buf.len().saturating_add(chunk.len()) > self.max {
            return Err(output_too_large(self.max));
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// Bytes collected so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The collected output.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from(self.buf)
    }
}

/// A step's log (stderr): keeps its last `max` bytes, marked when cut.
#[derive(Debug)]
pub struct LogTail {
    buf: Vec<u8>,
    max: usize,
    cut: bool,
}

impl LogTail {
    /// An empty log that keeps the last `max` bytes.
    pub fn new(max: usize) -> Self {
        LogTail {
            buf: Vec::new(),
            max,
            cut: false,
        }
    }

    /// Appends `chunk`, dropping the oldest bytes beyond the limit (amortised: the buffer holds
    /// at most twice the limit between trims).
    pub fn push(&mut self, chunk: &[u8]) {
        if chunk.len() >= self.max {
            self.cut |= !self.buf.is_empty() || chunk.len() > self.max;
            self.buf.clear();
            self.buf.extend_from_slice(&chunk[chunk.len() - self.max..]);
            return;
        }
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > self.max.saturating_mul(2).max(8192) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.buf.len() > self.max {
            self.cut = true;
            self.buf.drain(..self.buf.len() - self.max);
        }
    }

    /// The log as text (lossy UTF-8), starting at a character boundary when it was cut.
    pub fn finish(mut self) -> String {
        self.trim();
        if !self.cut {
            return String::from_utf8_lossy(&self.buf).into_owned();
        }
        let start = self
            .buf
            .iter()
            .take(3)
            .take_while(|b| (**b & 0xC0) == 0x80)
            .count();
        format!(
            "[log truncated to its last {} bytes]\n{}",
            self.max,
            String::from_utf8_lossy(&self.buf[start..])
        )
    }
}

/// Reads all of `r` into an [`OutputBuffer`] of `max` bytes (buffers at most `max`).
pub async fn read_capped(r: Option<impl AsyncRead + Unpin>, max: usize) -> Result<Bytes> {
    let Some(r) = r else { return Ok(Bytes::new()) };
    let mut buf = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    r.take(limit)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| Error::internal("could not read the step's stdout").with_source(e))?;
    if buf.len() > max {
        return Err(output_too_large(max));
    }
    Ok(Bytes::from(buf))
}

/// Reads all of `r` into a [`LogTail`] of `max` bytes.
pub async fn read_tail(r: Option<impl AsyncRead + Unpin>, max: usize) -> Result<String> {
    let mut tail = LogTail::new(max);
    let Some(mut r) = r else {
        return Ok(tail.finish());
    };
    let mut chunk = vec![0; 8192];
    loop {
        let n = r
            .read(&mut chunk)
            .await
            .map_err(|e| Error::internal("could not read the step's stderr").with_source(e))?;
        if n == 0 {
            return Ok(tail.finish());
        }
        tail.push(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_buffer_refuses_to_grow_past_its_limit() {
        let mut out = OutputBuffer::new(5);
        out.push(b"123").unwrap();
        out.push(b"45").unwrap();
        let err = out.push(b"6").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert!(!err.is_retryable());
        assert_eq!(out.len(), 5);
        assert_eq!(out.into_bytes(), Bytes::from("12345"));
    }

    #[test]
    fn log_tail_keeps_the_end_of_many_chunks() {
        let mut log = LogTail::new(10);
        for i in 0..5000 {
            log.push(format!("{i:04}").as_bytes());
        }
        assert_eq!(
            log.finish(),
            "[log truncated to its last 10 bytes]\n9749984999"
        );
        let mut log = LogTail::new(10);
        log.push(b"short");
        assert_eq!(log.finish(), "short");
        let mut log = LogTail::new(4);
        log.push(b"0123456789");
        assert!(log.finish().ends_with("\n6789"));
    }

    #[tokio::test]
    async fn capped_read_fails_past_the_limit() {
        assert_eq!(
            read_capped(Some(&b"12345"[..]), 5).await.unwrap(),
            Bytes::from("12345")
        );
        let err = read_capped(Some(&b"123456"[..]), 5).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
    }

    #[tokio::test]
    async fn tail_keeps_the_end_at_a_character_boundary() {
        assert_eq!(read_tail(Some(&b"short"[..]), 10).await.unwrap(), "short");
        let long = "é".repeat(10_000);
        let tail = read_tail(Some(long.as_bytes()), 101).await.unwrap();
        assert!(tail.starts_with("[log truncated to its last 101 bytes]\n"));
        assert!(tail.ends_with("éé"));
        assert!(!tail.contains('\u{FFFD}'));
    }
}
