//! The adapter URL, read once for both transports: `celery+<broker>://HOST…?queue=…&results=…`
//! with the parameters every Celery adapter takes (`queue`, `results`, `unhandled`, `routes`,
//! `track_started`); the transport reads its own parameters (RabbitMQ's `prefetch`, Redis's
//! `lease`, …) through a callback.

use weir_core::url_query::{Param, QueryParams};
use weir_core::{Error, Result};

use crate::chain::Routes;
use crate::intake::Unhandled;

/// The parameters both transports read.
const COMMON: [&str; 5] = ["queue", "results", "unhandled", "routes", "track_started"];

/// What a transport's adapter URL looks like.
#[derive(Debug, Clone, Copy)]
pub struct Transport<'a> {
    /// The broker schemes it takes (`amqp`, `amqps`): the URL's scheme is `celery+<one>`.
    pub schemes: &'a [&'a str],
    /// The URL's shape, shown in errors.
    pub example: &'a str,
    /// The parameters it reads itself (besides the common ones).
    pub params: &'a [&'a str],
    /// Whether it can send `rpc://` replies (RabbitMQ can; Redis cannot).
    pub rpc: bool,
}

/// Where the clients read results (`results=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultsSetting {
    /// `results=redis://…`: the Redis result backend at this URL.
    Redis(String),
    /// `results=rpc`: a reply to each task's `reply_to` (RabbitMQ only).
    Rpc,
    /// `results=none`.
    None,
}

/// An adapter URL, read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The broker's own URL: `amqp://…` or `redis://…`, without the query.
    pub broker: String,
    /// The Celery queue weir consumes.
    pub queue: String,
    /// Where results go.
    pub results: ResultsSetting,
    /// What happens to a task no weir function handles.
    pub unhandled: Unhandled,
    /// Task name → queue, for follow-up tasks.
    pub routes: Routes,
    /// Whether STARTED is written (Celery's `task_track_started`).
    pub track_started: bool,
}

impl Settings {
    /// Reads `url`, whose scheme must be `celery+<s>://` for one of the transport's schemes
    /// (the broker URL then has the scheme `s`). The transport's own parameters are handed to
    /// `read_own`; any other unknown one is an error. Errors name the URL with its secrets
    /// hidden.
    pub fn parse(
        url: &str,
        transport: &Transport<'_>,
        mut read_own: impl FnMut(&Param<'_>) -> Result<()>,
    ) -> Result<Settings> {
        let Transport {
            schemes,
            example,
            params: own,
            rpc,
        } = *transport;
        let Some((scheme, rest)) = schemes.iter().find_map(|s| {
            url.strip_prefix("celery+")
                .and_then(|u| u.strip_prefix(*s))
                .and_then(|u| u.strip_prefix("://"))
                .map(|rest| (*s, rest))
        }) else {
            let shown: Vec<String> = schemes.iter().map(|s| format!("celery+{s}://")).collect();
            return Err(Error::config(format!(
                "this Celery adapter takes {} URLs",
                shown.join(" and ")
            )));
        };
        let rest = rest.split_once('#').map_or(rest, |(rest, _)| rest);
        let (base, _) = rest.split_once('?').unwrap_or((rest, ""));
        if base.is_empty() || base.starts_with('/') {
            return Err(Error::config(format!(
                "the Celery adapter URL has no host ({example})"
            )));
        }
        let known: Vec<&str> = COMMON.iter().chain(own).copied().collect();
        let params = QueryParams::parse("celery adapter", url, &known);
        let (mut queue, mut results) = (None, None);
        let mut unhandled = Unhandled::default();
        let mut routes = Routes::default();
        let mut track_started = false;
        for param in &params {
            match param.name() {
                "queue" => queue = Some(param.value()?),
                "results" => results = Some(param.value()?),
                "unhandled" => {
                    unhandled = Unhandled::parse(&param.value()?)
                        .map_err(|e| param.invalid(format_args!("{e}")))?;
                }
                "routes" => {
                    routes = Routes::parse(&param.value()?)
                        .map_err(|e| param.invalid(format_args!("{e}")))?;
                }
                "track_started" => track_started = param.bool()?,
                name if own.contains(&name) => read_own(&param)?,
                _ => return Err(param.unknown()),
            }
        }
        let queue = queue.ok_or_else(|| {
            params.error("queue is required: the Celery queue weir consumes (?queue=weir)")
        })?;
        let results = match results.as_deref() {
            None if rpc => {
                return Err(params.error(
                    "results is required: results=redis://… (the result backend the clients read), results=rpc or results=none",
                ));
            }
            None => {
                return Err(params.error(
                    "results is required: results=redis://… (the result backend the clients read) or results=none",
                ));
            }
            Some("none") => ResultsSetting::None,
            Some("rpc" | "rpc://") if rpc => ResultsSetting::Rpc,
            Some("rpc" | "rpc://") => {
                return Err(params.error(
                    "results=rpc needs RabbitMQ (celery+amqp://): on Redis, use results=redis://… or none",
                ));
            }
            Some(url) => ResultsSetting::Redis(url.to_string()),
        };
        Ok(Settings {
            broker: format!("{scheme}://{base}"),
            queue,
            results,
            unhandled,
            routes,
            track_started,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMQP: Transport<'static> = Transport {
        schemes: &["amqp", "amqps"],
        example: "example",
        params: &["prefetch"],
        rpc: true,
    };

    fn parse(url: &str) -> Result<(Settings, Vec<String>)> {
        let mut own = Vec::new();
        let settings = Settings::parse(url, &AMQP, |p| {
            own.push(format!("{}={}", p.name(), p.value()?));
            Ok(())
        })?;
        Ok((settings, own))
    }

    #[test]
    fn the_common_parameters_are_read_and_the_transports_handed_on() {
        let (s, own) = parse(
            "celery+amqps://u:p@h:5671/v?queue=weir&results=rpc&prefetch=9&track_started=true&routes=a:b#x",
        )
        .expect("parses");
        assert_eq!(s.broker, "amqps://u:p@h:5671/v");
        assert_eq!(s.queue, "weir");
        assert_eq!(s.results, ResultsSetting::Rpc);
        assert!(s.track_started);
        assert_eq!(own, ["prefetch=9"]);
        let (s, _) = parse("celery+amqp://h?queue=q&results=redis%3A%2F%2Fr%2F1").expect("parses");
        assert_eq!(s.results, ResultsSetting::Redis("redis://r/1".into()));
    }

    #[test]
    fn what_is_missing_or_unknown_is_named() {
        let err = |url: &str| parse(url).expect_err(url).to_string();
        assert!(err("celery+redis://h?queue=q").contains("celery+amqp:// and celery+amqps://"));
        assert!(err("celery+amqp://?queue=q&results=none").contains("no host"));
        assert!(err("celery+amqp://h?results=none").contains("queue is required"));
        assert!(err("celery+amqp://h?queue=q").contains("results is required"));
        assert!(err("celery+amqp://h?queue=q&results=none&lease=3s").contains("lease"));
        let no_rpc = Transport { rpc: false, ..AMQP };
        let e = Settings::parse(
            "celery+amqp://u:s3cret@h?queue=q&results=rpc",
            &no_rpc,
            |_| Ok(()),
        )
        .expect_err("no rpc");
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("results=rpc needs RabbitMQ"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
