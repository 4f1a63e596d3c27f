//! The key layout. One run's keys share the hash tag `{r:<run id>}`; the timer keys share
//! `{timers}`; the job keys share `{jobs}`; the catalog keys share `{catalog}`; so the run,
//! timer, job and catalog scripts touch one slot each. The event scripts (append, undo, trim)
//! and the dead-letter script do not: they build keys from a prefix and need a single Redis
//! node.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:{r:ID}:run` | hash | `meta`, `event`, `status`, `created_at`, `ended_at`, `open` (steps not final), `failed` (failed steps), and per step `st:S` status, `at:S` attempts, `er:S` error, `lg:S` log, `fo:S` output of a failed step, `e:S:PARENT` edge taken (1/0), `et:S` / `en:S` edges taken / not taken; `waits` (waiting pauses of steps); per pause `pz:K` its JSON, `pk:K` `specs,all,trigger id`, `ps:K` status, `pr:K` end time, `pm:K:I` the event matching spec I, `pi:K:I` its id |
//! | `P:{r:ID}:out` | hash | outputs of completed steps, by step id |
//! | `P:{r:ID}:hist` | list | the timeline, JSON entries |
//! | `P:runs` | zset | every run id by creation time |
//! | `P:runs:fn:F` / `P:runs:user:U` / `P:runs:status:S` | zset | run ids by creation time |
//! | `P:runs:ended` | zset | finished run ids by end time (what the run retention deletes) |
//! | `P:pauses:LEN:NAME:KEY` | hash | waiting pauses filed by event name and match key: `PAUSE_ID#SPEC` → the pause's JSON |
//! | `P:{timers}:due` | zset | timer id by due (or lease expiry) time |
//! | `P:{timers}:data` | hash | timer JSON by id |
//! | `P:ev:ID` | string | event JSON, after `#REQUEST\n` when an ingest request stored it (expires after the retention) |
//! | `P:ev-again:ID` | set | ingest requests that found event `ID` stored (`''`: a plain append); an undo of the request that stored it leaves it (expires after an hour) |
//! | `P:ingest:undone:REQUEST` | string | an ingest request taken back: its append fails (expires after an hour) |
//! | `P:blob:ID` | string | a claim-checked message payload (expires after its TTL) |
//! | `P:events` / `P:events:name:N` | zset | event ids by `ts` |
//! | `P:events:accepted` | zset | `LEN:IDNAME` (id length, id, name) by acceptance time: what the retention trims from the two above |
//! | `P:events:user:U` | zset | ids of the events whose user key is `U`, by `ts` |
//! | `P:events:accepted:user` | zset | `LEN:IDUSER` by acceptance time: what the retention trims from the by-user indexes |
//! | `P:events:user-indexed-since` | string | since when (acceptance ms) every event appended is in the by-user index (`0`: since the store began) |
//! | `P:{jobs}:q:NAME` | list | the jobs waiting in queue `NAME`, oldest first (see `jobs` for a job's encoding) |
//! | `P:{jobs}:queues` | set | the names of the known queues (a queue is known once a job was put on it) |
//! | `P:{jobs}:paused` | set | the names of the paused queues |
//! | `P:{jobs}:reserved` | hash | reserved jobs by id: `RESERVED_AT:` (ms) then the job |
//! | `P:{jobs}:expiring` | zset | reserved job ids by reservation expiry (`RESERVED_AT` + the job's `reserve_ms`) |
//! | `P:{jobs}:set:S` | zset | the job ids of set `S` (`scheduled`, `retries`, `dead`) by time |
//! | `P:{jobs}:set:S:data` | hash | the jobs of set `S` by id: `TIME:` then the job |
//! | `P:{jobs}:totals` | hash | `processed`, `failures` |
//! | `P:dead` | zset | dead letter ids (scores 0: ordered by id, a ULID) |
//! | `P:dead:data` | hash | dead letter JSON by id |
//! | `P:failures:TOPIC:KEY` | string | failures counted on one message (expires) |
//! | `P:{catalog}:gen` | string | the catalog's generation: bumped by every change of it |
//! | `P:{catalog}:schemas` | hash | pushed event schemas: `LEN:NAME` then the version → `STORED_AT:` then the schema's canonical JSON |
//! | `P:{catalog}:fn:LEN:ID:versions` | hash | a function's stored versions: number → the record's JSON |
//! | `P:{catalog}:fn:LEN:ID:hashes` | hash | content hash → version number |
//! | `P:{catalog}:fn:LEN:ID:bundle:HASH` | string | a version's bundle of files |
//! | `P:{catalog}:fn:LEN:ID:counts` | hash | lifetime counts of ended runs per version: `runs:HASH`, `failed:HASH` |
//! | `P:{catalog}:routings` | hash | function id → `REVISION:` then its routing's JSON |

use weir_core::jobs::JobSet;

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

    /// The hash of the pauses waiting for events named `name` filed under match key `key`
    /// (the name's length first, so that no name and key pair spells another's).
    pub(crate) fn pauses(&self, name: &str, key: &str) -> String {
        format!("{}:pauses:{}:{name}:{key}", self.prefix, name.len())
    }

    /// The catalog's generation counter.
    pub(crate) fn catalog_generation(&self) -> String {
        format!("{}:{{catalog}}:gen", self.prefix)
    }

    /// The hash of the pushed event schemas.
    pub(crate) fn catalog_schemas(&self) -> String {
        format!("{}:{{catalog}}:schemas", self.prefix)
    }

    /// The hash of a function's stored versions by number.
    pub(crate) fn catalog_versions(&self, function_id: &str) -> String {
        format!(
            "{}:{{catalog}}:fn:{}:{function_id}:versions",
            self.prefix,
            function_id.len()
        )
    }

    /// The hash from a function's content hashes to version numbers.
    pub(crate) fn catalog_hashes(&self, function_id: &str) -> String {
        format!(
            "{}:{{catalog}}:fn:{}:{function_id}:hashes",
            self.prefix,
            function_id.len()
        )
    }

    /// The bundle of a function's version by content hash.
    pub(crate) fn catalog_bundle(&self, function_id: &str, version: &str) -> String {
        format!(
            "{}:{{catalog}}:fn:{}:{function_id}:bundle:{version}",
            self.prefix,
            function_id.len()
        )
    }

    /// The hash of a function's lifetime run counts: `runs:HASH`, `failed:HASH`.
    pub(crate) fn catalog_counts(&self, function_id: &str) -> String {
        format!(
            "{}:{{catalog}}:fn:{}:{function_id}:counts",
            self.prefix,
            function_id.len()
        )
    }

    /// The hash of every function's routing.
    pub(crate) fn catalog_routings(&self) -> String {
        format!("{}:{{catalog}}:routings", self.prefix)
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

    /// What [`Keys::events_by_user`] puts before the user key.
    pub(crate) fn events_by_user_prefix(&self) -> String {
        format!("{}:events:user:", self.prefix)
    }

    /// Event ids of one user key by `ts`.
    pub(crate) fn events_by_user(&self, user: &str) -> String {
        format!("{}{user}", self.events_by_user_prefix())
    }

    /// `LEN:IDUSER` of the events with a user key, by acceptance time: what the retention
    /// trims from the by-user indexes.
    pub(crate) fn events_accepted_by_user(&self) -> String {
        format!("{}:events:accepted:user", self.prefix)
    }

    /// Since when (epoch ms, acceptance time) every stored event is in the by-user index: 0
    /// when the store was empty at its first append by a weir that indexes users.
    pub(crate) fn events_users_indexed_since(&self) -> String {
        format!("{}:events:user-indexed-since", self.prefix)
    }

    /// Dead letter ids (a sorted set, all scores 0: ids are ULIDs, so ordered by time).
    pub(crate) fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    /// Dead letters by id (a hash of JSON).
    pub(crate) fn dead_data(&self) -> String {
        format!("{}:dead:data", self.prefix)
    }

    /// The failure count of the message `key`.
    pub(crate) fn failures(&self, key: &str) -> String {
        format!("{}:failures:{key}", self.prefix)
    }

    /// The key naming an ingest request taken back (`undo_append`): its append stores nothing.
    pub(crate) fn ingest_undone(&self, batch: &str) -> String {
        format!("{}:ingest:undone:{batch}", self.prefix)
    }

    /// Prefix of the keys marking an event that an append found stored: the request that
    /// stored it keeps it even when it is undone.
    pub(crate) fn event_found_again_prefix(&self) -> String {
        format!("{}:ev-again:", self.prefix)
    }

    /// The list of queue `name`'s waiting jobs.
    pub(crate) fn jobs_queue(&self, name: &str) -> String {
        format!("{}{name}", self.jobs_queue_prefix())
    }

    /// What [`Keys::jobs_queue`] puts before the name (the job scripts build queue keys from
    /// it and a job's queue).
    pub(crate) fn jobs_queue_prefix(&self) -> String {
        format!("{}:{{jobs}}:q:", self.prefix)
    }

    /// The set of known queue names.
    pub(crate) fn jobs_known_queues(&self) -> String {
        format!("{}:{{jobs}}:queues", self.prefix)
    }

    /// The set of paused queue names.
    pub(crate) fn jobs_paused(&self) -> String {
        format!("{}:{{jobs}}:paused", self.prefix)
    }

    /// The hash of reservations by job id.
    pub(crate) fn jobs_reserved(&self) -> String {
        format!("{}:{{jobs}}:reserved", self.prefix)
    }

    /// The zset of reserved job ids by expiry.
    pub(crate) fn jobs_expiring(&self) -> String {
        format!("{}:{{jobs}}:expiring", self.prefix)
    }

    /// The zset of `set`'s job ids by time.
    pub(crate) fn jobs_set(&self, set: JobSet) -> String {
        format!("{}:{{jobs}}:set:{}", self.prefix, set.name())
    }

    /// The hash of `set`'s jobs by id.
    pub(crate) fn jobs_set_data(&self, set: JobSet) -> String {
        format!("{}:{{jobs}}:set:{}:data", self.prefix, set.name())
    }

    /// The hash of the running totals.
    pub(crate) fn jobs_totals(&self) -> String {
        format!("{}:{{jobs}}:totals", self.prefix)
    }

    /// Every job key but the queues' lists (which [`Keys::jobs_queue`] names).
    pub(crate) fn jobs_fixed(&self) -> Vec<String> {
        let mut keys = vec![
            self.jobs_known_queues(),
            self.jobs_paused(),
            self.jobs_reserved(),
            self.jobs_expiring(),
            self.jobs_totals(),
        ];
        for set in JobSet::ALL {
            keys.push(self.jobs_set(set));
            keys.push(self.jobs_set_data(set));
        }
        keys
    }
}
