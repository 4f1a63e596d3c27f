//! Keeping secrets out of logs, errors and `Debug`: one rule for every URL weir prints.
//!
//! A driver URL may carry a password (`amqp://user:pass@host`, `redis://:pass@host`, or the
//! password alone, `redis://secret@host`) and secret query parameters (`secret_access_key=`,
//! `sasl.password=`, `session_token=`). [`redact_url`] hides all of them.

/// Whether a setting or query parameter named `name` holds a secret: its name contains
/// `password`, `passwd`, `secret` or `token`, or it is a PEM private key or an OAuth bearer
/// configuration (case-insensitive; percent-encoded names are decoded first).
pub fn is_secret_name(name: &str) -> bool {
    let name = crate::percent::decode_lossy(name).to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "oauthbearer.config",
    ]
    .iter()
    .any(|s| name.contains(s))
        || name.ends_with("key.pem")
}

/// `url` with its userinfo password replaced by `***` (a userinfo without `:` is taken to be a
/// password and replaced whole) and the value of every secret query parameter
/// ([`is_secret_name`]) replaced by `***`. Text that is not a URL comes back unchanged.
///
/// Passwords are often written without percent-encoding, and may hold `/`, `?` or `#`: the
/// userinfo is taken to run to the *last* `@` that is not inside the query, so
/// `amqp://u:ab/c?d@host` hides `ab/c?d`. When in doubt it hides more.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match userinfo_end(rest) {
        Some(at) => {
            let (userinfo, host_and_tail) = rest.split_at(at);
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@"),
                None => "***@".to_owned(),
            };
            let host_and_tail = &host_and_tail[1..];
            let end = host_and_tail
                .find(['/', '?', '#'])
                .unwrap_or(host_and_tail.len());
            let (host, tail) = host_and_tail.split_at(end);
            (format!("{shown}{host}"), tail)
        }
        None => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            (authority.to_owned(), tail)
        }
    };
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let Some(query) = query else {
        return format!("{scheme}://{authority}{path}");
    };
    let (query, fragment) = query
        .split_once('#')
        .map_or((query, None), |(q, f)| (q, Some(f)));
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if is_secret_name(name) || holds_credentials(value) => {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    let fragment = fragment.map_or(String::new(), |f| format!("#{f}"));
    format!("{scheme}://{authority}{path}?{}{fragment}", pairs.join("&"))
}

/// Whether a query value is itself a URL with a userinfo (`results=redis://:pw@h/1`, also
/// percent-encoded): it is hidden whole.
fn holds_credentials(value: &str) -> bool {
    let decoded = crate::percent::decode_lossy(value);
    decoded
        .split_once("://")
        .is_some_and(|(_, rest)| userinfo_end(rest).is_some())
}

/// Where the userinfo of `rest` (a URL after `scheme://`) ends: the position of its `@`.
///
/// - An `@` before the first `/`, `?` or `#`: the plain case, its last such `@`.
/// - Otherwise, when the text before the first `/`, `?` or `#` has a `:`, the `@` further on is
///   taken as the end of a password holding `/`, `?` or `#` (`u:pass/word@host`), unless that
///   text is `host:port` and the `@` sits in a query value (`h:9092?user=me@corp`).
/// - No `:` there (`host/path@x`): no userinfo.
fn userinfo_end(rest: &str) -> Option<usize> {
    let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let head = &rest[..cut];
    if let Some(at) = head.rfind('@') {
        return Some(at);
    }
    let at = rest.rfind('@')?;
    let (_, after_colon) = head.split_once(':')?;
    let host_port = !after_colon.is_empty() && after_colon.bytes().all(|b| b.is_ascii_digit());
    let in_query = rest[cut..at]
        .find('?')
        .is_some_and(|q| rest[cut + q..at].contains('='));
    if host_port && in_query {
        return None;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secret_parameters_are_hidden() {
        let cases = [
            (
                "amqp://guest:secret@h:5672/vh",
                "amqp://guest:***@h:5672/vh",
            ),
            (
                "amqps://u:p@h?ca_file=/x.pem",
                "amqps://u:***@h?ca_file=/x.pem",
            ),
            (
                "redis://:pw@h:6379/0?prefix=x",
                "redis://:***@h:6379/0?prefix=x",
            ),
            ("redis://secret@h:6379", "redis://***@h:6379"),
            ("memory://", "memory://"),
            (
                "sqs://p?region=r&access_key_id=AK&secret_access_key=S3&session_token=T",
                "sqs://p?region=r&access_key_id=AK&secret_access_key=***&session_token=***",
            ),
            (
                "kafka://h:9092?sasl.username=u&sasl.password=pw&ssl.key.pem=K&sasl.oauthbearer.config=C",
                "kafka://h:9092?sasl.username=u&sasl.password=***&ssl.key.pem=***&sasl.oauthbearer.config=***",
            ),
            (
                "kafka://h?sasl%2Epassword=pw",
                "kafka://h?sasl%2Epassword=***",
            ),
            ("http://h/p?a=1#frag", "http://h/p?a=1#frag"),
            (
                "amqp://weir:1234/abc@rabbit/vh",
                "amqp://weir:***@rabbit/vh",
            ),
            ("amqp://u:ab?cd@h", "amqp://u:***@h"),
            (
                "amqp://u:a#b@h:5672/%2f?prefetch=1",
                "amqp://u:***@h:5672/%2f?prefetch=1",
            ),
            (
                "kafka://h:9092?sasl.username=me@corp",
                "kafka://h:9092?sasl.username=me@corp",
            ),
            ("redis://:p@ss@h:6379", "redis://:***@h:6379"),
            ("amqp://u:p@h/vh?x=a@b", "amqp://u:***@h/vh?x=a@b"),
            ("amqp://u:ab/c==@h", "amqp://u:***@h"),
            ("redis://h:6379?prefix=a@b", "redis://h:6379?prefix=a@b"),
            (
                "celery+redis://h/0?queue=q&results=redis%3A%2F%2F%3Apw%40h%2F1",
                "celery+redis://h/0?queue=q&results=***",
            ),
            (
                "celery+redis://h/0?results=redis://h/1&queue=q",
                "celery+redis://h/0?results=redis://h/1&queue=q",
            ),
            ("not a url", "not a url"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn an_at_sign_in_the_path_is_not_userinfo() {
        assert_eq!(redact_url("http://h/a@b"), "http://h/a@b");
    }
}
