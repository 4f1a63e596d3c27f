//! A command line split into its verb and payload, as Faktory splits it: the verb is the text
//! before the first space (case-sensitive), the payload the rest of the line (JSON may hold
//! spaces: the Python client sends `{"jid": "…"}`).

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `HELLO {…}`: the client's handshake.
    Hello(&'a [u8]),
    /// `PUSH {job}`.
    Push(&'a [u8]),
    /// `PUSHB [job, …]`.
    PushBulk(&'a [u8]),
    /// `FETCH q1 q2 …`: the queues in the order they are served.
    Fetch(Vec<&'a str>),
    /// `ACK {"jid": …}`.
    Ack(&'a [u8]),
    /// `FAIL {"jid": …, "errtype": …, "message": …, "backtrace": […]}`.
    Fail(&'a [u8]),
    /// `BEAT {"wid": …}`.
    Beat(&'a [u8]),
    /// `INFO`.
    Info,
    /// `FLUSH`.
    Flush,
    /// `END`: the client leaves.
    End,
    /// `QUEUE PAUSE|RESUME|REMOVE q1 q2 …` (or `*`).
    Queue {
        /// `PAUSE`, `RESUME` or `REMOVE`.
        op: &'a str,
        /// The queues.
        names: Vec<&'a str>,
    },
    /// `MUTATE {…}`.
    Mutate(&'a [u8]),
    /// A verb of Faktory Enterprise (`BATCH`, `TRACK`).
    Enterprise(&'static str),
    /// Anything else: the verb as sent (lossy UTF-8, at most 64 characters).
    Unknown(String),
}

/// Splits `line` into its command.
pub fn parse(line: &[u8]) -> Command<'_> {
    let (verb, payload) = match line.iter().position(|b| *b == b' ') {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => (line, &line[line.len()..]),
    };
    let words = || {
        std::str::from_utf8(payload)
            .unwrap_or("")
            .split(' ')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
    };
    match verb {
        b"HELLO" => Command::Hello(payload),
        b"PUSH" => Command::Push(payload),
        b"PUSHB" => Command::PushBulk(payload),
        b"FETCH" => Command::Fetch(words()),
        b"ACK" => Command::Ack(payload),
        b"FAIL" => Command::Fail(payload),
        b"BEAT" => Command::Beat(payload),
        b"INFO" => Command::Info,
        b"FLUSH" => Command::Flush,
        b"END" => Command::End,
        b"QUEUE" => {
            let mut words = words();
            let op = if words.is_empty() {
                ""
            } else {
                words.remove(0)
            };
            Command::Queue { op, names: words }
        }
        b"MUTATE" => Command::Mutate(payload),
        b"BATCH" => Command::Enterprise("batch"),
        b"TRACK" => Command::Enterprise("tracking"),
        other => Command::Unknown(String::from_utf8_lossy(other).chars().take(64).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_and_payloads_are_split_at_the_first_space() {
        assert_eq!(
            parse(br#"PUSH {"jid": "a b"}"#),
            Command::Push(br#"{"jid": "a b"}"#)
        );
        assert_eq!(parse(b"INFO"), Command::Info);
        assert_eq!(
            parse(b"FETCH critical  default"),
            Command::Fetch(vec!["critical", "default"])
        );
        assert_eq!(parse(b"FETCH"), Command::Fetch(vec![]));
        assert_eq!(
            parse(b"QUEUE PAUSE a b"),
            Command::Queue {
                op: "PAUSE",
                names: vec!["a", "b"]
            }
        );
        assert_eq!(
            parse(b"QUEUE"),
            Command::Queue {
                op: "",
                names: vec![]
            }
        );
        assert_eq!(parse(b"BATCH new"), Command::Enterprise("batch"));
    }

    #[test]
    fn unknown_verbs_are_named_and_case_matters() {
        assert_eq!(parse(b"push {}"), Command::Unknown("push".into()));
        assert_eq!(
            parse(b"\xff\xfe x"),
            Command::Unknown("\u{fffd}\u{fffd}".into())
        );
        let long = vec![b'A'; 1000];
        assert!(matches!(parse(&long), Command::Unknown(v) if v.len() == 64));
    }
}
