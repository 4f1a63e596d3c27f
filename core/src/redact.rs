//! Keeping secrets out of logs, errors and `Debug`: one rule for every URL weir prints.
//!
//! A driver URL may carry a password (`amqp://user:pass@host`, `redis://:pass@host`, or the
//! password alone, `redis://secret@host`) and secret query parameters (`secret_access_key=`,
//! `sasl.password=`, `session_token=`). [`redact_url`] hides all of them.

/// Whether a setting or query parameter named `name` holds a secret: its name contains
/// `password`, `passwd`, `secret` or `token`, or it is a PEM private key or an OAuth bearer
/// configuration (case-insensitive; percent-encoded names are decoded first).
pub fn is_secret_name(name: &str) -> bool {
    let name = percent_decoded(name).to_ascii_lowercase();
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
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_owned(),
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
            Some((name, _)) if is_secret_name(name) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    let fragment = fragment.map_or(String::new(), |f| format!("#{f}"));
    format!("{scheme}://{authority}{path}?{}{fragment}", pairs.join("&"))
}

/// `%XX` escapes decoded (lossy); used only to recognise secret parameter names.
fn percent_decoded(text: &str) -> String {
    if !text.contains('%') {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
