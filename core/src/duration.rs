//! Durations as written in function definitions: `"30s"`, `"1h"`, `"2d"`, `"1h30m"`, `"250ms"`.

use std::time::Duration;

use crate::error::{Error, Result};

/// Parses a duration such as `30s`, `5m`, `1h30m`, `2d` or `250ms`.
///
/// An [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error whose message suits a
/// validation error on failure.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::invalid("empty duration"));
    }
    humantime::parse_duration(text).map_err(|e| {
        Error::invalid(format!("invalid duration {text:?} ({e}); write e.g. \"250ms\", \"30s\", \"5m\", \"1h30m\", \"2d\""))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        for (text, expected) in [
            ("30s", Duration::from_secs(30)),
            ("1h30m", Duration::from_secs(5400)),
            ("2d", Duration::from_secs(2 * 86400)),
            ("250ms", Duration::from_millis(250)),
        ] {
            assert_eq!(parse_duration(text).expect(text), expected);
        }
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        let err = parse_duration("soon").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains("invalid duration \"soon\""),
            "{err}"
        );
        assert!(parse_duration("").is_err());
    }
}
