//! Durations as written in function definitions: `"30s"`, `"1h"`, `"2d"`, `"1h30m"`, `"250ms"`.

use std::time::Duration;

/// Parses a duration such as `30s`, `5m`, `1h30m`, `2d` or `250ms`.
///
/// Returns a message suitable for a validation error on failure.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("invalid duration {text:?} ({e}); write e.g. \"250ms\", \"30s\", \"5m\", \"1h30m\", \"2d\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        let err = parse_duration("soon").unwrap_err();
        assert!(err.contains("invalid duration \"soon\""), "{err}");
        assert!(parse_duration("").is_err());
    }
}
