//! Faktory's framing (a subset of Redis's RESP): a command is one line, `VERB[ payload]\r\n`;
//! a reply is `+text`, `-ERR text`, a bulk string `$<len>\r\n<bytes>\r\n`, or the null bulk
//! string `$-1`. Every reply ends in `\r\n` (the Rust client cuts the last two bytes of a line
//! whatever they are).

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One reply to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Ok,
    /// `+<text>` (the greeting: `+HI {…}`).
    Simple(String),
    /// `-ERR <text>`.
    Error(String),
    /// `$<len>\r\n<bytes>`: a job, the INFO document, PUSHB's rejections, a BEAT state.
    Bulk(Vec<u8>),
    /// `$-1`: no job (FETCH found none).
    Null,
}

impl Reply {
    /// An error reply; line breaks in `message` become spaces (a reply is one line).
    pub fn error(message: impl std::fmt::Display) -> Reply {
        Reply::Error(message.to_string().replace(['\r', '\n'], " "))
    }

    /// Appends the reply's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Ok => out.extend_from_slice(b"+OK\r\n"),
            Reply::Simple(text) => {
                out.push(b'+');
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Error(text) => {
                out.extend_from_slice(b"-ERR ");
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Bulk(bytes) => {
                out.push(b'$');
                out.extend_from_slice(bytes.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
        }
    }
}

/// What reading a command line gave.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadLine {
    /// A line, without its `\r\n` (or `\n`).
    Line(Vec<u8>),
    /// The line grew past the limit before its end: the connection cannot be read on (the
    /// rest of the line would be taken for commands), so it is closed after an error reply.
    TooLong,
    /// The client closed the connection (a partial last line is dropped).
    Closed,
}

/// Reads one line of at most `max` bytes (without the line end) from `reader`, holding no more
/// than that in memory whatever the client sends.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<ReadLine> {
    let mut line = Vec::new();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(ReadLine::Closed);
        }
        match available.iter().position(|b| *b == b'\n') {
            Some(end) => {
                if line.len() + end > max + 1 {
                    return Ok(ReadLine::TooLong);
                }
                line.extend_from_slice(&available[..end]);
                reader.consume(end + 1);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > max {
                    return Ok(ReadLine::TooLong);
                }
                return Ok(ReadLine::Line(line));
            }
            None => {
                let taken = available.len();
                // One byte of slack: the `\r` of a line exactly `max` long.
                if line.len() + taken > max + 1 {
                    return Ok(ReadLine::TooLong);
                }
                line.extend_from_slice(available);
                reader.consume(taken);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(reply: Reply) -> String {
        let mut out = Vec::new();
        reply.encode(&mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn replies_are_encoded_as_faktory_sends_them() {
        assert_eq!(encoded(Reply::Ok), "+OK\r\n");
        assert_eq!(
            encoded(Reply::Simple(r#"HI {"v":2}"#.into())),
            "+HI {\"v\":2}\r\n"
        );
        assert_eq!(
            encoded(Reply::error("Job not found x\r\nmore")),
            "-ERR Job not found x  more\r\n"
        );
        assert_eq!(encoded(Reply::Bulk(b"{}".to_vec())), "$2\r\n{}\r\n");
        assert_eq!(encoded(Reply::Bulk("é".as_bytes().to_vec())), "$2\r\né\r\n");
        assert_eq!(encoded(Reply::Null), "$-1\r\n");
    }

    async fn lines(input: &[u8], max: usize) -> Vec<ReadLine> {
        // A tiny buffer, so that lines arrive in pieces.
        let mut reader = tokio::io::BufReader::with_capacity(3, input);
        let mut out = Vec::new();
        loop {
            let line = read_line(&mut reader, max).await.expect("reads");
            let done = line != ReadLine::Closed && !matches!(line, ReadLine::Line(_));
            let closed = line == ReadLine::Closed;
            out.push(line);
            if done || closed {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn lines_end_in_crlf_or_lf_and_a_partial_last_line_is_dropped() {
        assert_eq!(
            lines(b"PUSH {\"a\": 1}\r\nINFO\nEND", 100).await,
            [
                ReadLine::Line(b"PUSH {\"a\": 1}".to_vec()),
                ReadLine::Line(b"INFO".to_vec()),
                ReadLine::Closed
            ]
        );
    }

    #[tokio::test]
    async fn a_line_over_the_limit_is_refused_without_reading_it_all() {
        assert_eq!(
            lines(b"12345\r\n123456\r\n", 5).await,
            [ReadLine::Line(b"12345".to_vec()), ReadLine::TooLong]
        );
        let endless = vec![b'x'; 1 << 20];
        assert_eq!(lines(&endless, 1000).await, [ReadLine::TooLong]);
    }
}
