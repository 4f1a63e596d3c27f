//! The Redis keys of one topic and consumer group (see the README's key layout).

use weir_core::{Error, Result};

/// Checks a topic or group name: non-empty, at most 200 bytes, no `:` (the key separator,
/// which would let `a:b`/`c` and `a`/`b:c` share keys), no whitespace or control characters.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {what} name for the Redis broker: non-empty, at most 200 bytes, without ':', \
             whitespace or control characters"
        ))
        .with_context(what, format!("{name:?}")))
    }
}

/// `{prefix}:stream:{topic}`: the topic's stream; every group of the topic reads it.
pub(crate) fn stream(prefix: &str, topic: &str) -> String {
    format!("{prefix}:stream:{topic}")
}

/// The keys a subscription of `group` to `topic` works with.
#[derive(Debug, Clone)]
pub(crate) struct GroupKeys {
    /// `{prefix}:stream:{topic}`: the topic's stream (all groups).
    pub(crate) stream: String,
    /// `{prefix}:retry:{topic}:{group}`: redeliveries for this group only (nacked, dropped or
    /// handed back entries); read together with the topic stream.
    pub(crate) retry: String,
    /// `{prefix}:delayed:{topic}:{group}`: sorted set of delayed nacks, scored by due time
    /// (Redis server clock, ms); moved into the retry stream when due.
    pub(crate) delayed: String,
}

impl GroupKeys {
    pub(crate) fn new(prefix: &str, topic: &str, group: &str) -> Self {
        GroupKeys {
            stream: stream(prefix, topic),
            retry: format!("{prefix}:retry:{topic}:{group}"),
            delayed: format!("{prefix}:delayed:{topic}:{group}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = GroupKeys::new("weir", "steps", "executor");
        assert_eq!(k.stream, "weir:stream:steps");
        assert_eq!(k.retry, "weir:retry:steps:executor");
        assert_eq!(k.delayed, "weir:delayed:steps:executor");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("topic", "events").is_ok());
        assert!(check_name("topic", "weir-conf-ack-00ff").is_ok());
        for bad in ["", "a:b", "a b", "a\nb", &"x".repeat(201)] {
            assert!(check_name("topic", bad).is_err(), "{bad:?}");
        }
    }
}
