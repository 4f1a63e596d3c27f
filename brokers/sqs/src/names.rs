//! Queue names: `{prefix}_{topic}_{group}` per group, `{prefix}_{topic}` for the holding
//! queue of a topic without groups (`.fifo` appended for FIFO queues).
//!
//! SQS names allow letters, digits, `-` and `_`, at most 80 characters. Topic and group are
//! encoded without `_` (any other character becomes `-`, and a name that had to change gets a
//! hash of the original appended), so `_` only separates the parts: `ListQueues` with the name
//! prefix `{prefix}_{topic}_` finds the group queues of exactly that topic, never those of a
//! topic `{topic}-more`. Parts too long are shortened to a head plus a hash, deterministically,
//! so every process computes the same names.

/// SQS's longest queue name.
const MAX_QUEUE_NAME: usize = 80;
/// The longest encoded topic part (leaves room for the prefix and the group).
const MAX_TOPIC_PART: usize = 30;

/// 64-bit FNV-1a: a hash that stays the same across builds and platforms.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `name` as a queue-name part of at most `max` characters, without `_`.
fn encode(name: &str, max: usize) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let tag = format!("{:08x}", fnv1a(name.as_bytes()) as u32);
    if clean == name && clean.len() <= max && !clean.is_empty() {
        return clean;
    }
    // Shortened or changed: a head of the clean name plus a hash of the original.
    let head_len = max.saturating_sub(tag.len() + 1).min(clean.len());
    format!("{}-{tag}", &clean[..head_len])
}

/// The names of one topic's queues.
#[derive(Debug, Clone)]
pub(crate) struct TopicNames {
    /// `{prefix}_{topic}_`: the name prefix of every group queue of the topic.
    pub(crate) group_prefix: String,
    /// The holding queue: what is published while the topic has no group.
    pub(crate) holding: String,
    fifo: bool,
}

impl TopicNames {
    pub(crate) fn new(prefix: &str, topic: &str, fifo: bool) -> Self {
        let topic = encode(topic, MAX_TOPIC_PART);
        TopicNames {
            group_prefix: format!("{prefix}_{topic}_"),
            holding: format!("{prefix}_{topic}{}", suffix(fifo)),
            fifo,
        }
    }

    /// The queue of `group`.
    pub(crate) fn group(&self, group: &str) -> String {
        let room = MAX_QUEUE_NAME - self.group_prefix.len() - suffix(self.fifo).len();
        format!(
            "{}{}{}",
            self.group_prefix,
            encode(group, room),
            suffix(self.fifo)
        )
    }

    /// Whether a queue URL found by `ListQueues` is a group queue of this topic (and of the
    /// configured kind: FIFO or standard).
    pub(crate) fn is_group_queue(&self, url: &str) -> bool {
        let name = url.rsplit('/').next().unwrap_or(url);
        name.starts_with(&self.group_prefix) && name.ends_with(".fifo") == self.fifo
    }
}

fn suffix(fifo: bool) -> &'static str {
    if fifo { ".fifo" } else { "" }
}

/// A FIFO `MessageGroupId` for `key`: the key itself when it is 1..=128 characters SQS allows
/// (printable ASCII), else a hash of it.
pub(crate) fn message_group_id(key: &str) -> String {
    if !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_graphic()) {
        key.to_owned()
    } else {
        format!("weir-key-{:016x}", fnv1a(key.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let t = TopicNames::new("weir", "events", false);
        assert_eq!(t.group("router"), "weir_events_router");
        assert_eq!(t.holding, "weir_events");
        assert!(t.is_group_queue("http://h/123/weir_events_router"));
        assert!(!t.is_group_queue("http://h/123/weir_events"));
        assert!(!t.is_group_queue("http://h/123/weir_events-more_router"));
        assert!(!t.is_group_queue("http://h/123/weir_events_router.fifo"));
        let f = TopicNames::new("weir", "steps", true);
        assert_eq!(f.group("executor"), "weir_steps_executor.fifo");
        assert_eq!(f.holding, "weir_steps.fifo");
        assert!(f.is_group_queue("http://h/1/weir_steps_executor.fifo"));
    }

    #[test]
    fn odd_and_long_names_fit() {
        let t = TopicNames::new("abcdefghijklmnopqrstuvwx", &"t".repeat(200), true);
        let q = t.group(&"g".repeat(200));
        assert!(q.len() <= 80, "{q}");
        assert!(q.ends_with(".fifo"));
        assert_eq!(q.matches('_').count(), 2, "{q}");
        assert_eq!(q, t.group(&"g".repeat(200)), "deterministic");
        assert_ne!(t.group("a_b"), t.group("a-b"));
        assert_ne!(t.group("a.b"), t.group("a-b"));
        assert!(!t.group("a_b").contains("a_b"));
        let q = TopicNames::new("w", "", false).group("");
        assert!(q.starts_with("w_-") && q.len() <= 80, "{q}");
    }

    #[test]
    fn group_ids() {
        assert_eq!(message_group_id("k1"), "k1");
        assert!(message_group_id("").starts_with("weir-key-"));
        assert!(message_group_id("ä").starts_with("weir-key-"));
        assert_eq!(message_group_id(&"x".repeat(200)).len(), 25);
    }
}
