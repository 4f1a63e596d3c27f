//! The query parameters of driver URLs (`redis://h?prefix=app&lease=30s`): one loop for every
//! driver, and errors that name the driver, the parameter and, for an unknown one, the
//! parameters the driver knows.
//!
//! ```
//! use std::time::Duration;
//! use weir_core::url_query::QueryParams;
//!
//! # fn main() -> weir_core::Result<()> {
//! let (mut lease, mut count) = (Duration::from_secs(30), 16);
//! let params = QueryParams::parse("redis broker", "redis://h?lease=2s&count=4", &["lease", "count"]);
//! for param in &params {
//!     match param.name() {
//!         "lease" => lease = param.duration()?,
//!         "count" => count = param.usize()?,
//!         _ => return Err(param.unknown()),
//!     }
//! }
//! assert_eq!((lease, count), (Duration::from_secs(2), 4));
//! # Ok(()) }
//! ```
//!
//! - Pairs are separated by `&`; empty pairs are skipped; a pair without `=` has the value `""`.
//! - Names are percent-decoded leniently, for matching ([`crate::percent::decode_lossy`]);
//!   values strictly, by [`Param::value`] and the typed getters ([`crate::percent::decode`]:
//!   `+` stays a plus sign). [`Param::raw`] and [`Param::raw_value`] give the text as written,
//!   for a driver that passes a pair on or takes a value literally.
//! - Every error is a permanent [`ErrorKind::Config`] whose message starts with the driver's
//!   name; it has the URL as context `url`, redacted ([`crate::redact::redact_url`]), when the
//!   parameters came from [`QueryParams::parse`] or [`QueryParams::with_url`]. An error shows a
//!   value as written, or `***` when the parameter's name says it holds a secret
//!   ([`crate::redact::is_secret_name`]); a bad percent-encoding is reported without the value.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::{Error, ErrorKind, Result, percent, redact};

/// The query parameters of one driver URL; iterate over it (`for param in &params`) to get
/// each [`Param`].
#[derive(Debug, Clone)]
pub struct QueryParams<'a> {
    /// Names the driver in errors (`redis broker`, `memory state`).
    driver: &'a str,
    /// The parameters the driver reads (listed by [`Param::unknown`]).
    known: &'a [&'a str],
    /// The text after `?`, without it.
    query: &'a str,
    /// The URL, redacted, for the context of errors.
    url: Option<String>,
}

impl<'a> QueryParams<'a> {
    /// The parameters of `url`: the text after its first `?`, up to a `#`. `driver` names the
    /// driver in errors and `known` lists the parameters it reads (for [`Param::unknown`]).
    /// Errors carry the URL, redacted, as context `url`.
    pub fn parse(driver: &'a str, url: &'a str, known: &'a [&'a str]) -> Self {
        // A `?` inside the fragment starts no query.
        let before_fragment = url.split_once('#').map_or(url, |(before, _)| before);
        let query = before_fragment
            .split_once('?')
            .map_or("", |(_, query)| query);
        QueryParams::new(driver, query, known).with_url(url)
    }

    /// The parameters of `query`, already cut out of its URL (`a=1&b=2`, without the `?`), for
    /// a driver that splits its URL itself. Errors have no `url` context unless
    /// [`with_url`](Self::with_url) adds it.
    pub fn new(driver: &'a str, query: &'a str, known: &'a [&'a str]) -> Self {
        QueryParams {
            driver,
            known,
            query,
            url: None,
        }
    }

    /// Errors carry `url`, redacted, as context `url`.
    pub fn with_url(mut self, url: &str) -> Self {
        self.url = Some(redact::redact_url(url));
        self
    }

    /// The parameters in the order written.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            params: self,
            pairs: self.query.split('&'),
        }
    }

    /// A permanent [`ErrorKind::Config`] error `"{driver}: {message}"`, with the `url` context
    /// if any: for what a driver checks itself.
    pub fn error(&self, message: impl fmt::Display) -> Error {
        let error =
            Error::new(ErrorKind::Config, format!("{}: {message}", self.driver)).permanent();
        match &self.url {
            Some(url) => error.with_context("url", url),
            None => error,
        }
    }
}

impl<'p> IntoIterator for &'p QueryParams<'_> {
    type Item = Param<'p>;
    type IntoIter = Iter<'p>;

    fn into_iter(self) -> Iter<'p> {
        self.iter()
    }
}

/// The iterator over the [`Param`]s of a [`QueryParams`], in the order written.
#[derive(Debug, Clone)]
pub struct Iter<'p> {
    params: &'p QueryParams<'p>,
    pairs: std::str::Split<'p, char>,
}

impl<'p> Iterator for Iter<'p> {
    type Item = Param<'p>;

    fn next(&mut self) -> Option<Param<'p>> {
        let raw = self.pairs.find(|pair| !pair.is_empty())?;
        let (raw_name, raw_value) = raw.split_once('=').unwrap_or((raw, ""));
        Some(Param {
            params: self.params,
            raw,
            raw_name,
            raw_value,
            name: percent::decode_lossy(raw_name),
        })
    }
}

/// One `name=value` pair of a [`QueryParams`].
#[derive(Debug, Clone)]
pub struct Param<'a> {
    params: &'a QueryParams<'a>,
    raw: &'a str,
    raw_name: &'a str,
    raw_value: &'a str,
    name: String,
}

impl<'a> Param<'a> {
    /// The name, percent-decoded leniently (an invalid escape is kept as written): for matching.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name strictly percent-decoded, for a name a driver passes on as a setting of its
    /// client library (an invalid escape is an error).
    pub fn decoded_name(&self) -> Result<String> {
        percent::decode(self.raw_name).map_err(|e| {
            self.params
                .error(format!("parameter name {:?}: {e}", self.name))
        })
    }

    /// The pair as written (`name=value`, or `name` alone), to pass it on unchanged.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// The value as written, not percent-decoded.
    pub fn raw_value(&self) -> &'a str {
        self.raw_value
    }

    /// The value, percent-decoded (`+` stays a plus sign); an invalid escape is an error that
    /// does not show the value.
    pub fn value(&self) -> Result<String> {
        percent::decode(self.raw_value)
            .map_err(|e| self.params.error(format!("parameter {}: {e}", self.name)))
    }

    /// The value as a duration (`250ms`, `30s`, `1h30m`, `2d`; [`crate::duration`]).
    pub fn duration(&self) -> Result<Duration> {
        crate::duration::parse_duration(&self.value()?).map_err(|why| self.invalid(why))
    }

    /// The value as a non-negative integer.
    pub fn usize(&self) -> Result<usize> {
        self.number()
    }

    /// The value as a number of type `T` (`u16`, `i32`, `u64`…); the error names the type.
    pub fn number<T>(&self) -> Result<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.value()?.parse::<T>().map_err(|e| {
            let ty = std::any::type_name::<T>();
            self.invalid(format_args!("not a valid {ty} ({e})"))
        })
    }

    /// The value as a boolean: `true`, `1` or `yes`; `false`, `0` or `no`.
    pub fn bool(&self) -> Result<bool> {
        // A bad escape is reported as such (without the value), not as "expected true…".
        self.value()?;
        self.one_of(&[
            ("true", true),
            ("1", true),
            ("yes", true),
            ("false", false),
            ("0", false),
            ("no", false),
        ])
        .map_err(|_| self.invalid("expected true or false"))
    }

    /// The value as one of `choices` (`(text, value)` pairs); the error lists the texts.
    pub fn one_of<T: Clone>(&self, choices: &[(&str, T)]) -> Result<T> {
        let value = self.value()?;
        if let Some((_, chosen)) = choices.iter().find(|(text, _)| *text == value) {
            return Ok(chosen.clone());
        }
        let texts: Vec<&str> = choices.iter().map(|(text, _)| *text).collect();
        let expected = match texts.split_last() {
            Some((last, [])) => format!("expected {last}"),
            Some((last, rest)) => format!("expected {} or {last}", rest.join(", ")),
            None => "no value is accepted".to_owned(),
        };
        Err(self.invalid(expected))
    }

    /// A [`ErrorKind::Config`] error for a value the driver refuses: `"{driver}: parameter
    /// {name}={value:?}: {why}"` (the value as written, `***` for a secret).
    pub fn invalid(&self, why: impl fmt::Display) -> Error {
        let shown = if redact::is_secret_name(self.raw_name) {
            "***"
        } else {
            self.raw_value
        };
        self.params
            .error(format!("parameter {}={shown:?}: {why}", self.name))
    }

    /// The [`ErrorKind::Config`] error for a parameter the driver does not know: `"{driver}:
    /// unknown parameter {name:?} (known: {known…})"`.
    pub fn unknown(&self) -> Error {
        let known: Cow<'_, str> = if self.params.known.is_empty() {
            "none".into()
        } else {
            self.params.known.join(", ").into()
        };
        self.params.error(format!(
            "unknown parameter {:?} (known: {known})",
            self.name
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["prefix", "lease", "count", "fifo"];

    fn params(url: &str) -> QueryParams<'_> {
        QueryParams::parse("test driver", url, KNOWN)
    }

    #[test]
    fn pairs_in_order_decoded_with_the_raw_text_kept() {
        let p = params("x://h/p?prefix=a%2Fb+c&&lease&pre%66ix=%41#frag");
        let seen: Vec<(String, &str, &str, String)> = p
            .iter()
            .map(|param| {
                let value = param.value().expect("decodes");
                (
                    param.name().to_owned(),
                    param.raw(),
                    param.raw_value(),
                    value,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("prefix".into(), "prefix=a%2Fb+c", "a%2Fb+c", "a/b+c".into()),
                ("lease".into(), "lease", "", String::new()),
                ("prefix".into(), "pre%66ix=%41", "%41", "A".into()),
            ]
        );
        assert_eq!(params("x://h").iter().count(), 0);
        assert_eq!(params("x://h?").iter().count(), 0);
        // A `?` inside the fragment starts no query.
        assert_eq!(params("x://h#frag?lease=soon").iter().count(), 0);
        // `new` takes the query alone and keeps a `#` (a driver may not cut fragments).
        let q = QueryParams::new("test driver", "prefix=a#b", KNOWN);
        let values: Vec<String> = q.iter().map(|p| p.value().expect("decodes")).collect();
        assert_eq!(values, ["a#b"]);
    }

    #[test]
    fn an_unknown_parameter_names_the_driver_the_parameter_and_the_known_ones() {
        let p = params("x://u:s3cret@h?leese=2s");
        let err = p.iter().next().expect("one").unknown();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(!err.is_retryable());
        assert_eq!(
            err.message(),
            "test driver: unknown parameter \"leese\" (known: prefix, lease, count, fifo)"
        );
        assert_eq!(err.context(), [("url", "x://u:***@h?leese=2s".to_owned())]);
        // Without the URL, no context.
        let q = QueryParams::new("test driver", "a=1", &[]);
        let err = q.iter().next().expect("one").unknown();
        assert_eq!(
            err.message(),
            "test driver: unknown parameter \"a\" (known: none)"
        );
        assert!(err.context().is_empty());
    }

    #[test]
    fn typed_getters_and_their_errors_name_the_parameter() {
        let p = params("x://h?lease=250ms&count=16&fifo=yes&neg=-1&big=70000");
        let all: Vec<Param<'_>> = p.iter().collect();
        assert_eq!(
            all[0].duration().expect("duration"),
            Duration::from_millis(250)
        );
        assert_eq!(all[1].usize().expect("usize"), 16);
        assert!(all[2].bool().expect("bool"));
        assert_eq!(all[3].number::<i32>().expect("i32"), -1);

        let err = all[3].usize().expect_err("negative");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.message()
                .starts_with("test driver: parameter neg=\"-1\": not a valid usize ("),
            "{err}"
        );
        let err = all[4].number::<u16>().expect_err("too big");
        assert!(
            err.message().contains("big=\"70000\": not a valid u16"),
            "{err}"
        );
        let err = all[1].duration().expect_err("not a duration");
        assert!(
            err.message()
                .starts_with("test driver: parameter count=\"16\": "),
            "{err}"
        );
        let err = all[0].bool().expect_err("not a bool");
        assert_eq!(
            err.message(),
            "test driver: parameter lease=\"250ms\": expected true or false"
        );
        let err = all[0]
            .one_of(&[("admin", 1), ("auto", 2), ("none", 3)])
            .expect_err("no choice");
        assert!(
            err.message().ends_with(": expected admin, auto or none"),
            "{err}"
        );
        assert_eq!(all[2].one_of(&[("yes", 'y')]).expect("choice"), 'y');
    }

    #[test]
    fn errors_never_show_secrets_or_badly_encoded_values() {
        let p = params("x://h?sasl.password=s3cret&count=%zz&key=%G1&name%zz=1");
        let all: Vec<Param<'_>> = p.iter().collect();
        let err = all[0].usize().expect_err("not a number");
        assert_eq!(err.kind(), ErrorKind::Config);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("sasl.password=\"***\""), "{shown}");

        let err = all[1].usize().expect_err("bad escape");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.message()
                .starts_with("test driver: parameter count: bad percent"),
            "{err}"
        );
        assert!(!err.message().contains("%zz"), "{err}");
        let err = all[1].bool().expect_err("bad escape");
        assert!(
            err.message().contains("bad percent") && !err.message().contains("%zz"),
            "{err}"
        );
        assert!(all[2].value().is_err());

        // A name with an invalid escape matches as written; strictly decoded it is an error.
        assert_eq!(all[3].name(), "name%zz");
        assert_eq!(
            all[3].decoded_name().expect_err("bad").kind(),
            ErrorKind::Config
        );
        assert_eq!(all[0].decoded_name().expect("decodes"), "sasl.password");
    }

    #[test]
    fn driver_errors_carry_the_driver_and_the_url() {
        let err = params("x://:pw@h?a=1").error("prefix and fifo go together");
        assert_eq!(err.message(), "test driver: prefix and fifo go together");
        assert_eq!(err.context(), [("url", "x://:***@h?a=1".to_owned())]);
        assert!(!err.is_retryable());
    }
}
