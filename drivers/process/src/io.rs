//! Bounded readers for the step's stdout (capped) and stderr (tail kept).

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use weir_core::{Error, ErrorKind, Result};

/// Reads all of `r`, failing with [`ErrorKind::TooLarge`] past `max` bytes (buffers at most `max + 1`).
pub(crate) async fn read_capped(r: Option<impl AsyncRead + Unpin>, max: usize) -> Result<Bytes> {
    let Some(r) = r else { return Ok(Bytes::new()) };
    let mut buf = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    r.take(limit)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| Error::internal("could not read the step's stdout").with_source(e))?;
    if buf.len() > max {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("step stdout is larger than max_output_bytes ({max} bytes)"),
        ));
    }
    Ok(Bytes::from(buf))
}

/// Reads all of `r`, keeping its last `max` bytes as text (marked when cut).
pub(crate) async fn read_tail(r: Option<impl AsyncRead + Unpin>, max: usize) -> Result<String> {
    let Some(mut r) = r else {
        return Ok(String::new());
    };
    let mut buf = Vec::new();
    let mut chunk = vec![0; 8192];
    let mut cut = false;
    loop {
        let n = r
            .read(&mut chunk)
            .await
            .map_err(|e| Error::internal("could not read the step's stderr").with_source(e))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > max.saturating_mul(2).max(chunk.len()) {
            cut = true;
            buf.drain(..buf.len() - max);
        }
    }
    if buf.len() > max {
        cut = true;
        buf.drain(..buf.len() - max);
    }
    if !cut {
        return Ok(String::from_utf8_lossy(&buf).into_owned());
    }
    // Start at a character boundary, not inside a UTF-8 sequence.
    let start = buf
        .iter()
        .take(3)
        .take_while(|b| (**b & 0xC0) == 0x80)
        .count();
    Ok(format!(
        "[log truncated to its last {max} bytes]\n{}",
        String::from_utf8_lossy(&buf[start..])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    async fn tail_keeps_the_end() {
        assert_eq!(read_tail(Some(&b"short"[..]), 10).await.unwrap(), "short");
        let long = "é".repeat(10_000);
        let tail = read_tail(Some(long.as_bytes()), 101).await.unwrap();
        assert!(tail.starts_with("[log truncated to its last 101 bytes]\n"));
        assert!(tail.ends_with("éé"));
        assert!(!tail.contains('\u{FFFD}'));
    }
}
