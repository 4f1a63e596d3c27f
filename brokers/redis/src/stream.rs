//! Stream entries: their fields, and parsing of the replies that carry them.

use bytes::Bytes;
use redis::Value;

/// Which stream of a subscription an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Sel {
    /// The topic stream (`{prefix}:stream:{topic}`), read by every group.
    Main,
    /// The group's retry stream (`{prefix}:retry:{topic}:{group}`).
    Retry,
}

impl Sel {
    /// One letter naming the stream in a delayed member (keeps members unique).
    fn tag(self) -> char {
        match self {
            Sel::Main => 'm',
            Sel::Retry => 'r',
        }
    }
}

/// An entry read from a stream, pending for this consumer.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) sel: Sel,
    pub(crate) id: String,
    /// Field `k`.
    pub(crate) key: String,
    /// Field `p`.
    pub(crate) payload: Bytes,
    /// Field `r` (deliveries before this entry was written), plus the deliveries Redis counted
    /// for this entry beyond the first.
    pub(crate) redeliveries: u32,
}

/// The member of a delayed nack in the sorted set: `{r}\n{stream tag}-{id}\n{key length}\n`
/// followed by the key and the payload (binary-safe; parsed by the `PROMOTE` script). The
/// source entry id keeps members unique.
pub(crate) fn delayed_member(
    entry_sel: Sel,
    id: &str,
    key: &str,
    payload: &[u8],
    r: u32,
) -> Vec<u8> {
    let head = format!("{r}\n{}-{id}\n{}\n", entry_sel.tag(), key.len());
    let mut member = Vec::with_capacity(head.len() + key.len() + payload.len());
    member.extend_from_slice(head.as_bytes());
    member.extend_from_slice(key.as_bytes());
    member.extend_from_slice(payload);
    member
}

/// The bytes of a string-like reply.
pub(crate) fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

/// A string-like reply as text.
pub(crate) fn text_of(value: Value) -> Option<String> {
    bytes_of(value).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// An integer reply (or a string holding one).
pub(crate) fn int_of(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// The elements of an array reply (`Nil` is empty).
pub(crate) fn array_of(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => Vec::new(),
    }
}

/// Parses `[id, [field, value, …]]` entries of `sel`. An entry whose fields are nil (deleted
/// while pending) is skipped.
pub(crate) fn entries_of(sel: Sel, value: Value) -> Vec<Entry> {
    array_of(value)
        .into_iter()
        .filter_map(|item| entry_of(sel, item))
        .collect()
}

fn entry_of(sel: Sel, item: Value) -> Option<Entry> {
    let mut parts = array_of(item).into_iter();
    let id = text_of(parts.next()?)?;
    let fields = parts.next()?;
    if matches!(fields, Value::Nil) {
        return None;
    }
    let mut entry = Entry {
        sel,
        id,
        key: String::new(),
        payload: Bytes::new(),
        redeliveries: 0,
    };
    let fields: Vec<(Value, Value)> = match fields {
        Value::Map(pairs) => pairs,
        other => {
            let mut flat = array_of(other).into_iter();
            let mut pairs = Vec::new();
            while let (Some(f), Some(v)) = (flat.next(), flat.next()) {
                pairs.push((f, v));
            }
            pairs
        }
    };
    for (field, value) in fields {
        match bytes_of(field).as_deref() {
            Some(b"k") => entry.key = text_of(value).unwrap_or_default(),
            Some(b"p") => entry.payload = bytes_of(value).map(Bytes::from).unwrap_or_default(),
            Some(b"r") => {
                entry.redeliveries = int_of(&value)
                    .and_then(|r| u32::try_from(r).ok())
                    .unwrap_or(0)
            }
            _ => {}
        }
    }
    Some(entry)
}

/// Parses an `XREADGROUP` reply (`[[stream, entries], …]`, or a map under RESP3; nil on
/// timeout); `main` names the topic stream, any other key is the retry stream.
pub(crate) fn read_reply(main: &str, value: Value) -> Vec<Entry> {
    let streams: Vec<(Value, Value)> = match value {
        Value::Map(pairs) => pairs,
        other => array_of(other)
            .into_iter()
            .filter_map(|s| {
                let mut parts = array_of(s).into_iter();
                Some((parts.next()?, parts.next()?))
            })
            .collect(),
    };
    let mut out = Vec::new();
    // Redeliveries first: they are older than anything new on the topic stream.
    let mut main_entries = Vec::new();
    for (key, entries) in streams {
        if bytes_of(key).as_deref() == Some(main.as_bytes()) {
            main_entries = entries_of(Sel::Main, entries);
        } else {
            out.extend(entries_of(Sel::Retry, entries));
        }
    }
    out.extend(main_entries);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn parses_read_replies() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk(b"w:stream:t"),
                Value::Array(vec![Value::Array(vec![
                    bulk(b"1-0"),
                    Value::Array(vec![
                        bulk(b"k"),
                        bulk(b"key"),
                        bulk(b"p"),
                        bulk(b"\x00\xff"),
                    ]),
                ])]),
            ]),
            Value::Array(vec![
                bulk(b"w:retry:t:g"),
                Value::Array(vec![Value::Array(vec![
                    bulk(b"2-0"),
                    Value::Array(vec![
                        bulk(b"k"),
                        bulk(b"k2"),
                        bulk(b"p"),
                        bulk(b"x"),
                        bulk(b"r"),
                        bulk(b"3"),
                    ]),
                ])]),
            ]),
        ]);
        let entries = read_reply("w:stream:t", reply);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].sel, Sel::Retry);
        assert_eq!(entries[0].redeliveries, 3);
        assert_eq!(entries[1].sel, Sel::Main);
        assert_eq!(entries[1].id, "1-0");
        assert_eq!(entries[1].key, "key");
        assert_eq!(&entries[1].payload[..], b"\x00\xff");
        assert_eq!(entries[1].redeliveries, 0);
        assert!(read_reply("w:stream:t", Value::Nil).is_empty());
    }

    #[test]
    fn deleted_entries_are_skipped() {
        let entries = Value::Array(vec![Value::Array(vec![bulk(b"1-0"), Value::Nil])]);
        assert!(entries_of(Sel::Main, entries).is_empty());
    }

    #[test]
    fn delayed_member_layout() {
        let m = delayed_member(Sel::Retry, "5-1", "k:1", b"pay\nload", 2);
        assert_eq!(m, b"2\nr-5-1\n3\nk:1pay\nload");
    }
}
