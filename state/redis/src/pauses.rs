//! Pauses on Redis: each pause lives in its run's hash (recorded by the `FINISH_ATTEMPT`
//! script with the completion that began it; resumed and ended by scripts on that hash, so a
//! pause resolves once), and is filed for the router in one hash per event name and match key
//! (`P:pauses:LEN:NAME:KEY`, outside the run's slot, written beside the scripts: derived data
//! the engine files again and cleans after the fact).

use std::collections::{BTreeMap, HashMap};

use weir_core::pause::{Pause, PauseAnswer, PauseHit, PauseStatus};
use weir_core::run::HistoryEntry;
use weir_core::{Error, Event, Result};

use crate::scripts;
use crate::state::RedisStateStore;

/// `specs,all,trigger id`: what the pause scripts read of a pause.
pub(crate) fn pause_meta(pause: &Pause) -> String {
    format!(
        "{},{},{}",
        pause.specs.len(),
        u8::from(pause.all),
        pause.trigger_id
    )
}

fn corrupt(what: &str) -> Error {
    Error::internal(format!("corrupt pause data in redis: {what}"))
}

fn parse_status(s: &str) -> Result<PauseStatus> {
    Ok(match s {
        "waiting" => PauseStatus::Waiting,
        "matched" => PauseStatus::Matched,
        "timed_out" => PauseStatus::TimedOut,
        "cancelled" => PauseStatus::Cancelled,
        _ => return Err(corrupt("status")),
    })
}

/// A pause from its JSON as registered, status, end time and matched events (`None` where
/// none matched).
fn assemble(
    json: &str,
    status: &str,
    resolved: Option<&str>,
    matched: Vec<Option<&str>>,
) -> Result<Pause> {
    let mut pause: Pause = serde_json::from_str(json)?;
    pause.status = parse_status(status)?;
    pause.resolved_ms = resolved
        .filter(|r| !r.is_empty())
        .and_then(|r| r.parse().ok());
    pause.matched = if matched.iter().all(Option::is_none) {
        Vec::new()
    } else {
        matched
            .into_iter()
            .map(|m| m.map(serde_json::from_str::<Event>).transpose())
            .collect::<std::result::Result<_, _>>()?
    };
    Ok(pause)
}

/// Decodes the answer of the `read_pause` Lua function.
fn read_answer(parts: Vec<String>) -> Result<Option<Pause>> {
    let [json, status, resolved, matched @ ..] = parts.as_slice() else {
        return if parts.is_empty() {
            Ok(None)
        } else {
            Err(corrupt("answer"))
        };
    };
    let matched = matched
        .iter()
        .map(|m| (!m.is_empty()).then_some(m.as_str()))
        .collect();
    assemble(json, status, Some(resolved), matched).map(Some)
}

/// The pauses of a run from its hash's fields.
pub(crate) fn decode_run_pauses(
    run_hash: &HashMap<String, String>,
) -> Result<BTreeMap<String, Pause>> {
    let mut out = BTreeMap::new();
    for (field, json) in run_hash {
        let Some(key) = field.strip_prefix("pz:") else {
            continue;
        };
        let status = run_hash
            .get(&format!("ps:{key}"))
            .ok_or_else(|| corrupt("no status"))?;
        let specs: usize = run_hash
            .get(&format!("pk:{key}"))
            .and_then(|m| m.split(',').next()?.parse().ok())
            .ok_or_else(|| corrupt("no specs"))?;
        let matched = (0..specs)
            .map(|i| run_hash.get(&format!("pm:{key}:{i}")).map(String::as_str))
            .collect();
        let resolved = run_hash.get(&format!("pr:{key}")).map(String::as_str);
        out.insert(key.to_string(), assemble(json, status, resolved, matched)?);
    }
    Ok(out)
}

/// The step of a pause key (`step/ordinal`); none for a cancel rule (`!cancel/ordinal`).
fn step_of(key: &str) -> Option<&str> {
    let step = key.split_once('/').map_or(key, |(step, _)| step);
    (!step.starts_with('!')).then_some(step)
}

/// The answer of a pause script: a waiting pause of a run that no longer runs is answered
/// `Cancelled` (it can no longer end otherwise; the caller unfiles it).
fn answer(applied: i64, parts: Vec<String>, run_status: &str) -> Result<PauseAnswer> {
    let mut pause = read_answer(parts)?;
    if let Some(p) = pause.as_mut()
        && p.status == PauseStatus::Waiting
        && run_status != "running"
    {
        p.status = PauseStatus::Cancelled;
    }
    Ok(PauseAnswer {
        applied: applied == 1,
        pause,
    })
}

impl RedisStateStore {
    pub(crate) async fn watch(&self, pauses: &[Pause]) -> Result<()> {
        if pauses.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let mut last = None;
        for pause in pauses {
            let json = serde_json::to_string(pause)?;
            let id = pause.id();
            for (i, spec) in pause.specs.iter().enumerate() {
                pipe.hset(
                    self.keys().pauses(&spec.event, &spec.key),
                    format!("{id}#{i}"),
                    &json,
                )
                .ignore();
            }
            let timer = pause.expiry_timer();
            let mut inv = scripts::SCHEDULE_TIMER.prepare_invoke();
            inv.key(self.keys().timers_due())
                .key(self.keys().timers_data())
                .arg(&timer.id)
                .arg(timer.due_ms)
                .arg(serde_json::to_string(&timer)?);
            pipe.invoke_script(&inv).ignore();
            last = Some(inv);
        }
        let inv = last.expect("one pause at least");
        self.conn().pipe_with_script::<()>(&pipe, &inv).await
    }

    pub(crate) async fn find(&self, name: &str, keys: &[String]) -> Result<Vec<PauseHit>> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.hgetall(self.keys().pauses(name, key));
        }
        let filed: Vec<HashMap<String, String>> = self.conn().pipe(&pipe).await?;
        let mut hits = Vec::new();
        for (field, json) in filed.iter().flatten() {
            let spec = field
                .rsplit_once('#')
                .and_then(|(_, s)| s.parse().ok())
                .ok_or_else(|| corrupt("filed spec"))?;
            hits.push(PauseHit {
                pause: serde_json::from_str(json)?,
                spec,
            });
        }
        Ok(hits)
    }

    pub(crate) async fn resume(
        &self,
        run_id: &str,
        key: &str,
        spec: usize,
        event: &Event,
        now_ms: i64,
    ) -> Result<PauseAnswer> {
        let mut entry = HistoryEntry::now("pause.matched")
            .detail(format!("event {} ({})", event.id, event.name));
        if let Some(step) = step_of(key) {
            entry = entry.step(step);
        }
        let mut inv = scripts::RESUME_PAUSE.prepare_invoke();
        inv.key(self.keys().run(run_id))
            .key(self.keys().hist(run_id))
            .arg(key)
            .arg(spec)
            .arg(&event.id)
            .arg(serde_json::to_string(event)?)
            .arg(now_ms)
            .arg(serde_json::to_string(&entry)?);
        let (applied, parts, run): (i64, Vec<String>, String) =
            self.conn().script("resume_pause", &inv).await?;
        answer(applied, parts, &run)
    }

    /// Ends a waiting pause with `status` (timed out, cancelled).
    pub(crate) async fn end(
        &self,
        run_id: &str,
        key: &str,
        status: PauseStatus,
        now_ms: i64,
    ) -> Result<PauseAnswer> {
        // The timeline entry says what the pause waited for: read it first (ending is rare).
        let Some(mut pause) = self.read(run_id, key).await? else {
            return Ok(PauseAnswer {
                applied: false,
                pause: None,
            });
        };
        if !pause.end(status, now_ms) {
            return Ok(PauseAnswer {
                applied: false,
                pause: Some(pause),
            });
        }
        let entry = pause.history_entry(None);
        let mut inv = scripts::END_PAUSE.prepare_invoke();
        inv.key(self.keys().run(run_id))
            .key(self.keys().hist(run_id))
            .arg(key)
            .arg(now_ms)
            .arg(serde_json::to_string(&entry)?)
            .arg(status.as_str());
        let (applied, parts, run): (i64, Vec<String>, String) =
            self.conn().script("end_pause", &inv).await?;
        answer(applied, parts, &run)
    }

    pub(crate) async fn unwatch(&self, pause: &Pause) -> Result<()> {
        let mut pipe = redis::pipe();
        let id = pause.id();
        for (i, spec) in pause.specs.iter().enumerate() {
            pipe.hdel(
                self.keys().pauses(&spec.event, &spec.key),
                format!("{id}#{i}"),
            )
            .ignore();
        }
        let timer = pause.expiry_timer().id;
        pipe.zrem(self.keys().timers_due(), &timer).ignore();
        pipe.hdel(self.keys().timers_data(), &timer).ignore();
        self.conn().pipe::<()>(&pipe).await
    }

    pub(crate) async fn read(&self, run_id: &str, key: &str) -> Result<Option<Pause>> {
        let mut inv = scripts::GET_PAUSE.prepare_invoke();
        inv.key(self.keys().run(run_id)).arg(key);
        let parts: Vec<String> = self.conn().script("get_pause", &inv).await?;
        read_answer(parts)
    }
}
