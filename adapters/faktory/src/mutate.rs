//! MUTATE: changes to the retries, scheduled and dead sets, as Faktory makes them. `clear`
//! empties the set; `discard` deletes the jobs the filter picks (all without a filter); `kill`
//! moves them to the dead set; `requeue` moves them to their queues. The filter picks by
//! `regexp` (a Redis-style glob over the job's JSON; with `jobtype` too, the job must also be
//! of that type), else by `jobtype`, else by `jids`, else every job.

use serde::Deserialize;
use serde_json::Value;
use weir_core::Result;
use weir_core::jobs::{JobSet, JobStore, Move};

use crate::legacy::DEAD_FOR;

/// A MUTATE payload.
#[derive(Debug, Clone, Deserialize)]
pub struct Mutation {
    /// `clear`, `discard`, `kill` or `requeue`.
    pub cmd: String,
    /// `retries`, `scheduled` or `dead`.
    pub target: String,
    /// Which jobs.
    #[serde(default, deserialize_with = "crate::job::null_as_default")]
    pub filter: Filter,
}

/// Which jobs a MUTATE changes.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    /// Jobs of this type.
    #[serde(default)]
    pub jobtype: Option<String>,
    /// Jobs with these ids.
    #[serde(default)]
    pub jids: Option<Vec<String>>,
    /// Jobs whose JSON matches this glob (`*`, `?`, `[…]`).
    #[serde(default)]
    pub regexp: Option<String>,
}

/// What a MUTATE does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Empty the set.
    Clear,
    /// Delete the jobs picked.
    Discard,
    /// Move them to the dead set.
    Kill,
    /// Move them to their queues.
    Requeue,
}

/// The longest `regexp` taken (its matching costs its length times the job's).
pub const MAX_PATTERN: usize = 1_024;

impl Mutation {
    /// The set and the action, or Faktory's error.
    pub fn parse(&self) -> std::result::Result<(JobSet, Action), &'static str> {
        if self
            .filter
            .regexp
            .as_ref()
            .is_some_and(|p| p.len() > MAX_PATTERN)
        {
            return Err("the filter's regexp is over 1024 bytes");
        }
        let action = match self.cmd.as_str() {
            "clear" => Action::Clear,
            "discard" => Action::Discard,
            "kill" => Action::Kill,
            "requeue" => Action::Requeue,
            _ => return Err("unknown mutate operation"),
        };
        let set = match self.target.as_str() {
            "retries" => JobSet::Retries,
            "scheduled" => JobSet::Scheduled,
            "dead" => JobSet::Dead,
            _ => return Err("invalid target for mutation command"),
        };
        Ok((set, action))
    }
}

impl Filter {
    /// Whether the filter picks every job.
    fn is_empty(&self) -> bool {
        self.jobtype.is_none() && self.jids.is_none() && self.regexp.is_none()
    }

    /// Whether the job with this JSON is picked.
    fn picks(&self, json: &[u8]) -> bool {
        let job: Value = serde_json::from_slice(json).unwrap_or(Value::Null);
        let of_type = |t: &str| job["jobtype"].as_str() == Some(t);
        if let Some(pattern) = &self.regexp {
            return glob(pattern.as_bytes(), json) && self.jobtype.as_deref().is_none_or(of_type);
        }
        if let Some(jobtype) = &self.jobtype {
            return of_type(jobtype);
        }
        if let Some(jids) = &self.jids {
            return job["jid"]
                .as_str()
                .is_some_and(|jid| jids.iter().any(|j| j == jid));
        }
        true
    }
}

/// Jobs of a set read at a time.
const PAGE: usize = 1_000;

/// Applies `action` to the jobs of `set` that `filter` picks; returns how many changed.
pub async fn apply(
    store: &dyn JobStore,
    set: JobSet,
    action: Action,
    filter: &Filter,
    now_ms: i64,
) -> Result<usize> {
    if action == Action::Clear || (action == Action::Discard && filter.is_empty()) {
        store.clear_set(set).await?;
        return Ok(0);
    }
    // Dead jobs killed again stay as they are.
    if set == JobSet::Dead && action == Action::Kill {
        return Ok(0);
    }
    let to = match action {
        Action::Discard | Action::Clear => Move::Delete,
        Action::Kill => Move::ToSet(JobSet::Dead, now_ms + DEAD_FOR.as_millis() as i64),
        Action::Requeue => Move::ToQueue,
    };
    // Picked first, moved after: moving while paging would shift the pages.
    let mut picked = Vec::new();
    let mut offset = 0;
    loop {
        let page = store.set_jobs(set, offset, PAGE).await?;
        picked.extend(
            page.iter()
                .filter(|(job, _)| filter.picks(&job.payload))
                .map(|(job, _)| job.id.clone()),
        );
        if page.len() < PAGE {
            break;
        }
        offset += PAGE;
    }
    store.move_from_set(set, &picked, to).await
}

/// Whether `text` matches the glob `pattern` (Redis's MATCH: `*`, `?`, `[abc]`, `[^a]`,
/// `[a-z]`, `\x`).
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(&pattern[p..], text[t])
                        && matched
                    {
                        p += next;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                b'\\' if p + 1 < pattern.len() => {}
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((star_p, star_t)) => {
                star = Some((star_p, star_t + 1));
                p = star_p + 1;
                t = star_t + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// A `[…]` class at the start of `pattern`: whether `c` is in it, and the class's length;
/// `None` when it is not closed.
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negated = pattern.get(1) == Some(&b'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (lo, hi) = (
                pattern[i].min(pattern[i + 2]),
                pattern[i].max(pattern[i + 2]),
            );
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= pattern[i] == c;
            i += 1;
        }
    }
    (i < pattern.len()).then_some((matched != negated, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_redis_matches() {
        let m = |p: &str, t: &str| glob(p.as_bytes(), t.as_bytes());
        assert!(m("*", ""));
        assert!(m(
            "*\"jobtype\":\"email\"*",
            r#"{"jid":"1","jobtype":"email","args":[]}"#
        ));
        assert!(!m("*\"jobtype\":\"email\"*", r#"{"jobtype":"emails"}"#));
        assert!(m("h?llo", "hello") && !m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-c]llo", "hbllo") && !m("h[a-c]llo", "hdllo"));
        assert!(m("a\\*b", "a*b") && !m("a\\*b", "axb"));
        assert!(m("a*b*c", "aXXbYYc") && !m("a*b*c", "aXXbYY"));
    }

    #[test]
    fn filters_pick_by_glob_then_type_then_ids() {
        let job = br#"{"jid":"j1","jobtype":"email","args":[]}"#;
        let filter = |json: &str| serde_json::from_str::<Filter>(json).unwrap();
        assert!(filter("{}").picks(job));
        assert!(filter(r#"{"jobtype":"email"}"#).picks(job));
        assert!(!filter(r#"{"jobtype":"sms"}"#).picks(job));
        assert!(filter(r#"{"jids":["j0","j1"]}"#).picks(job));
        assert!(!filter(r#"{"jids":["j0"]}"#).picks(job));
        assert!(filter(r#"{"regexp":"*j1*"}"#).picks(job));
        assert!(!filter(r#"{"regexp":"*j1*","jobtype":"sms"}"#).picks(job));
        // The glob wins over the ids, as Faktory orders them.
        assert!(filter(r#"{"regexp":"*email*","jids":["other"]}"#).picks(job));
    }

    #[test]
    fn bad_commands_and_targets_get_faktorys_errors() {
        let parse = |json: &str| serde_json::from_str::<Mutation>(json).unwrap().parse();
        assert_eq!(
            parse(r#"{"cmd":"zap","target":"dead"}"#),
            Err("unknown mutate operation")
        );
        assert_eq!(
            parse(r#"{"cmd":"kill","target":"queue"}"#),
            Err("invalid target for mutation command")
        );
        assert_eq!(
            parse(r#"{"cmd":"requeue","target":"retries","filter":{}}"#),
            Ok((JobSet::Retries, Action::Requeue))
        );
    }
}
