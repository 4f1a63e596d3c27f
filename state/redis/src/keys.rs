//! The key layout. One run's keys share the hash tag `{r:<run id>}`; the timer keys share
//! `{timers}`; so every script touches one slot and works on Redis Cluster.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:{r:ID}:run` | hash | `meta`, `event`, `status`, `created_at`, `ended_at`, `open` (steps not final), `failed` (failed steps), and per step `st:S` status, `at:S` attempts, `er:S` error, `lg:S` log, `fo:S` output of a failed step, `e:S:PARENT` edge taken (1/0), `et:S` / `en:S` edges taken / not taken |
//! | `P:{r:ID}:out` | hash | outputs of completed steps, by step id |
//! | `P:{r:ID}:hist` | list | the timeline, JSON entries |
//! | `P:runs` | zset | every run id by creation time |
//! | `P:runs:fn:F` / `P:runs:user:U` / `P:runs:status:S` | zset | run ids by creation time |
//! | `P:runs:ended` | zset | finished run ids by end time (what the run retention deletes) |
//! | `P:{timers}:due` | zset | timer id by due (or lease expiry) time |
//! | `P:{timers}:data` | hash | timer JSON by id |
//! | `P:ev:ID` | string | event JSON (expires after the retention) |
//! | `P:blob:ID` | string | a claim-checked message payload (expires after its TTL) |
//! | `P:events` / `P:events:name:N` | zset | event ids by `ts` |
//! | `P:events:accepted` | zset | `LEN:IDNAME` (id length, id, name) by acceptance time: what the retention trims from the two above |

/// Key builder under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    pub(crate) fn run(&self, id: &str) -> String {
        format!("{}:{{r:{id}}}:run", self.prefix)
    }

    pub(crate) fn out(&self, id: &str) -> String {
        format!("{}:{{r:{id}}}:out", self.prefix)
    }

    pub(crate) fn hist(&self, id: &str) -> String {
        format!("{}:{{r:{id}}}:hist", self.prefix)
    }

    pub(crate) fn runs(&self) -> String {
        format!("{}:runs", self.prefix)
    }

    pub(crate) fn runs_ended(&self) -> String {
        format!("{}:runs:ended", self.prefix)
    }

    pub(crate) fn runs_by(&self, what: &str, value: &str) -> String {
        format!("{}:runs:{what}:{value}", self.prefix)
    }

    pub(crate) fn timers_due(&self) -> String {
        format!("{}:{{timers}}:due", self.prefix)
    }

    pub(crate) fn timers_data(&self) -> String {
        format!("{}:{{timers}}:data", self.prefix)
    }

    pub(crate) fn blob(&self, id: &str) -> String {
        format!("{}:blob:{id}", self.prefix)
    }

    pub(crate) fn event(&self, id: &str) -> String {
        format!("{}:ev:{id}", self.prefix)
    }

    pub(crate) fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }

    pub(crate) fn events_by_name(&self, name: &str) -> String {
        format!("{}{name}", self.events_by_name_prefix())
    }

    /// What [`Keys::events_by_name`] puts before the name.
    pub(crate) fn events_by_name_prefix(&self) -> String {
        format!("{}:events:name:", self.prefix)
    }

    pub(crate) fn events_accepted(&self) -> String {
        format!("{}:events:accepted", self.prefix)
    }
}
