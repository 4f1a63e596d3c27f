//! Waits: pauses for events (`async` edges) and sleeps (`wait` edges) — armed when their
//! parent step completes, resumed by the router or by stored events (the lookback), ended by
//! their expiry timer, and followed by resolving their edges.
//!
//! Nothing is missed at the start: the router files every event whose name a function waits
//! for in the event store *before* publishing it (see `ingest.rs`), and a new pause is filed
//! (`watch_pauses`) *before* the stored events of its lookback are read. Of an event and a
//! pause racing, either the router finds the pause or the lookback finds the event; a pause
//! resolves once (`resume_pause` is atomic), so finding it twice is harmless.
//!
//! Nothing is lost at a crash: each step is repeated from what the store holds by whoever
//! carries the work — the parent's step message (arming, filing and the lookback, see
//! `recover_waits`), the event message (a resume), the pause's expiry timer (a timeout, and any
//! ended pause whose edges were not followed) — until `unwatch_pause` completes the timer.

use serde_json::{Map, Value};
use tracing::debug;

use super::Engine;
use super::executor::{Work, edge_condition};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, now_ms};
use crate::events::EventFilter;
use crate::expr::Vars;
use crate::function::{EventSpec, Function, MatchKey, Sleep, Wait, WaitKind, WaitMode, time_of};
use crate::pause::{Pause, PauseHit, PauseSpec, PauseStatus, pause_key};
use crate::run::Run;
use crate::state::{RunState, Transition};

/// At most this many stored events are read for one spec's lookback: the newest of its window
/// (then resumed oldest first).
pub const LOOKBACK_LIMIT: usize = 10_000;

impl Engine {
    /// The pauses that `function`'s step `index`, completing with `output`, begins: one per
    /// wait with at least one edge whose `if` holds. A `wait` expression that fails to give a
    /// time is the step's error.
    pub(super) fn arm_waits(
        &self,
        function: &Function,
        index: usize,
        run: &RunState,
        output: &Value,
        exclude: &[String],
    ) -> std::result::Result<Vec<Pause>, String> {
        let waits: Vec<&Wait> = function
            .waits
            .iter()
            .filter(|w| w.parent == index)
            .collect();
        if waits.is_empty() {
            return Ok(Vec::new());
        }
        let parent = &function.steps[index];
        let mut outputs = run.outputs.clone();
        outputs.insert(parent.id.clone(), output.clone());
        let now = now_ms();
        let mut pauses = Vec::new();
        for wait in waits {
            let armed: Vec<usize> = wait
                .edges
                .iter()
                .copied()
                .filter(|&e| {
                    edge_condition(
                        &function.edges[e],
                        &parent.id,
                        &run.event,
                        &outputs,
                        Some(output),
                    )
                    .0
                })
                .collect();
            if armed.is_empty() {
                continue;
            }
            let mut pause = Pause {
                run_id: run.id.clone(),
                function_id: function.id.clone(),
                function_version: function.version.clone(),
                step: parent.id.clone(),
                ordinal: wait.ordinal,
                specs: Vec::new(),
                all: false,
                cancels: false,
                edges: armed,
                exclude: exclude.to_vec(),
                trigger_id: run.event.id.clone(),
                trigger: None,
                registered_ms: now,
                expires_ms: now,
                status: PauseStatus::Waiting,
                matched: Vec::new(),
                resolved_ms: None,
            };
            match &wait.kind {
                WaitKind::Event(w) => {
                    pause.all = w.mode == WaitMode::All;
                    pause.expires_ms = now.saturating_add(w.ttl.as_millis() as i64);
                    let mut keep_trigger = false;
                    for spec in &w.specs {
                        let key = spec.key.as_ref().and_then(|k| k.pause_key(&run.event));
                        keep_trigger |=
                            spec.matcher.is_some() && !(key.is_some() && spec.key_decides);
                        pause.specs.push(PauseSpec {
                            event: spec.event.clone(),
                            key: key.unwrap_or_default(),
                        });
                    }
                    if keep_trigger {
                        pause.trigger = Some(run.event.clone());
                    }
                }
                WaitKind::Sleep(Sleep::For(d)) => {
                    pause.expires_ms = now.saturating_add(d.as_millis() as i64);
                }
                WaitKind::Sleep(Sleep::Until(expr)) => {
                    let mut vars = Vars::new();
                    vars.set_event("event", &run.event);
                    vars.set_json_map("steps", &outputs);
                    vars.set_json("response", output);
                    let value = expr
                        .eval_json(&vars)
                        .map_err(|e| format!("the wait after {:?} failed: {e}", parent.id))?;
                    pause.expires_ms = time_of(&value).map_err(|e| {
                        format!("the wait {:?} after {:?} {e}", expr.source(), parent.id)
                    })?;
                }
            }
            pauses.push(pause);
        }
        Ok(pauses)
    }

    /// Files the pauses a completion recorded, then looks for the events they wait for among
    /// the stored ones (the lookback), resuming them.
    pub(super) async fn open_pauses(
        &self,
        function: &Function,
        trigger: &Event,
        pauses: Vec<Pause>,
    ) -> Result<()> {
        self.inner.state.watch_pauses(&pauses).await?;
        // Read again now that the pauses are filed: an earlier wait resumed meanwhile (or a
        // pause armed before pauses recorded what they exclude) counts too.
        let used = match pauses.first() {
            Some(p) if !p.cancels => self.events_used(function, &p.run_id).await?,
            _ => Vec::new(),
        };
        for pause in &pauses {
            self.look_back(function, pause, trigger, &used).await?;
        }
        Ok(())
    }

    /// The events that resumed earlier waits of run `run_id`, when its function has more than
    /// one event wait (else none: nothing to read).
    pub(super) async fn events_used(
        &self,
        function: &Function,
        run_id: &str,
    ) -> Result<Vec<String>> {
        let event_waits = function
            .waits
            .iter()
            .filter(|w| matches!(w.kind, WaitKind::Event(_)))
            .count();
        if event_waits < 2 {
            return Ok(Vec::new());
        }
        let Some(run) = self.inner.state.get_run(run_id).await? else {
            return Ok(Vec::new());
        };
        Ok(run
            .pauses
            .values()
            .filter(|p| !p.cancels)
            .flat_map(|p| p.matched.iter().flatten().map(|e| e.id.clone()))
            .collect())
    }

    /// Resumes `pause` with stored events within its lookback (the newest
    /// [`LOOKBACK_LIMIT`] of each name, taken oldest first), but for those it excludes and
    /// those in `used` (events that resumed the run's other waits).
    async fn look_back(
        &self,
        function: &Function,
        pause: &Pause,
        trigger: &Event,
        used: &[String],
    ) -> Result<()> {
        let Some((specs, lookback)) = event_specs(function, pause) else {
            return Ok(());
        };
        let from_ms = match lookback {
            Some(l) => pause.registered_ms - l.as_millis() as i64,
            None => trigger.ts,
        };
        for (index, spec) in specs.iter().enumerate() {
            // Newest first, so that a limit keeps the events closest to the registration (the
            // one racing it among them); then taken in the order they happened.
            let filter = EventFilter {
                name: Some(spec.event.clone()),
                from_ms: Some(from_ms),
                limit: Some(LOOKBACK_LIMIT),
                newest_first: true,
                ..Default::default()
            };
            let mut events = self.inner.events.scan(&filter).await?;
            events.reverse();
            for event in events {
                if event.id == trigger.id
                    || pause.exclude.contains(&event.id)
                    || used.contains(&event.id)
                    || !spec_matches(spec, &pause.specs[index], trigger, &event)
                {
                    continue;
                }
                let answer = self
                    .inner
                    .state
                    .resume_pause(&pause.run_id, &pause.key(), index, &event, now_ms())
                    .await?;
                let Some(after) = answer.pause else {
                    return Ok(());
                };
                if after.status != PauseStatus::Waiting {
                    if after.status == PauseStatus::Matched && answer.applied {
                        self.follow_pause(function, &after, false).await?;
                    }
                    return Ok(());
                }
                if after.matched.get(index).is_some_and(Option::is_some) {
                    break; // this spec matched (`all`), here or elsewhere: on to the next
                }
            }
        }
        Ok(())
    }

    /// The pauses `event` matches now, without resuming them: those filed under its name and
    /// match keys (one lookup, whatever the number of pauses pending) whose match holds
    /// (evaluated only when the key does not decide it) — waiting ones, and ended ones not yet
    /// unfiled. Never the event's own run's, nor those of a function version this node has not
    /// loaded.
    pub async fn matching_pauses(&self, event: &Event) -> Result<Vec<PauseHit>> {
        Ok(self.find_matching(event).await?.0)
    }

    /// [`Engine::matching_pauses`], and the error of the first pause passed over because its
    /// function version is not loaded here.
    async fn find_matching(&self, event: &Event) -> Result<(Vec<PauseHit>, Option<Error>)> {
        let Some(paths) = self.inner.functions.awaited(&event.name) else {
            return Ok((Vec::new(), None));
        };
        let mut keys: Vec<String> = paths
            .iter()
            .filter_map(|p| MatchKey::key_at(p, event))
            .collect();
        keys.push(String::new());
        let hits = self.inner.state.find_pauses(&event.name, &keys).await?;
        let mut matching = Vec::with_capacity(hits.len());
        let mut passed_over = None;
        // Pauses found together mostly belong to one function version: look it up once.
        let mut function: Option<std::sync::Arc<Function>> = None;
        for hit in hits {
            let pause = &hit.pause;
            if pause.trigger_id == event.id || pause.exclude.contains(&event.id) {
                continue;
            }
            let same = function
                .as_ref()
                .is_some_and(|f| f.id == pause.function_id && f.version == pause.function_version);
            if !same {
                match self.function_of(pause).await {
                    Ok(f) => function = Some(f),
                    Err(e) => {
                        // Not this node's to decide (a version it has not loaded): the other
                        // pauses the event matches must not wait for it; the caller hands the
                        // event back for a node that has the version.
                        passed_over.get_or_insert(e);
                        function = None;
                        continue;
                    }
                }
            }
            let Some(function) = function.as_deref() else {
                continue;
            };
            let Some((specs, _)) = event_specs(function, pause) else {
                continue;
            };
            let (Some(spec), Some(filed)) = (specs.get(hit.spec), pause.specs.get(hit.spec)) else {
                continue;
            };
            if spec.event == event.name && self.matches_filed(spec, filed, pause, event).await? {
                matching.push(hit);
            }
        }
        Ok((matching, passed_over))
    }

    /// Resumes the pauses `event` matches (each once, whichever nodes route it), and follows
    /// the ones it resolves. When a pause belongs to a function version this node has not
    /// loaded, the others are resumed and then `NotFound` is answered: the router hands the
    /// event back, for a node that has the version (routing again is idempotent).
    pub(super) async fn resume_pauses(&self, event: &Event) -> Result<usize> {
        let mut resumed = 0;
        let mut recorded: Vec<String> = Vec::new();
        let (hits, passed_over) = self.find_matching(event).await?;
        for hit in hits {
            let pause = &hit.pause;
            // One event fills one spec of a pause (`all` of two specs of one name needs two).
            let id = pause.id();
            if recorded.contains(&id) {
                continue;
            }
            let function = self.function_of(pause).await?;
            let answer = self
                .inner
                .state
                .resume_pause(&pause.run_id, &pause.key(), hit.spec, event, now_ms())
                .await?;
            let Some(after) = answer.pause else { continue };
            let by_this_event = after.matched.iter().flatten().any(|m| m.id == event.id);
            if answer.applied {
                recorded.push(id);
            }
            match after.status {
                PauseStatus::Waiting => {}
                // Resolved by this event now.
                PauseStatus::Matched if answer.applied => {
                    resumed += 1;
                    self.follow_pause(&function, &after, false).await?;
                }
                // Resolved before (by this event, whose node died before following it, or by
                // another event or a timeout whose follower may have failed): follow again,
                // which also unfiles it and drops its timer once followed.
                _ => {
                    resumed += usize::from(by_this_event);
                    self.follow_pause(&function, &after, true).await?;
                }
            }
        }
        match passed_over {
            Some(e) => Err(e),
            None => Ok(resumed),
        }
    }

    /// Whether `event` matches a pause found by its key: the key decides alone, or the match
    /// is evaluated against the run's trigger.
    async fn matches_filed(
        &self,
        spec: &EventSpec,
        filed: &PauseSpec,
        pause: &Pause,
        event: &Event,
    ) -> Result<bool> {
        if spec.matcher.is_none() || (!filed.key.is_empty() && spec.key_decides) {
            return Ok(true);
        }
        // The trigger kept with the pause, lent (not copied); else read from the run.
        let loaded;
        let trigger = match &pause.trigger {
            Some(t) => t,
            None => match self.inner.state.get_run_state(&pause.run_id).await? {
                Some(run) => {
                    loaded = run.event;
                    &loaded
                }
                None => return Ok(false),
            },
        };
        Ok(spec_matches(spec, filed, trigger, event))
    }

    /// Ends `pause` if it is still waiting (its expiry timer fired), and follows it however it
    /// ended (a match or a timeout whose node died before following it).
    pub(super) async fn pause_expired(&self, timer: &crate::pause::PauseRef) -> Result<()> {
        let answer = self
            .inner
            .state
            .expire_pause(&timer.run_id, &timer.key, now_ms())
            .await?;
        let Some(pause) = answer.pause else {
            // The run is gone (deleted after the retention): unfile what is left of it.
            return self.inner.state.unwatch_pause(&timer.stub()).await;
        };
        if pause.status == PauseStatus::Waiting {
            return Ok(());
        }
        let function = self.function_of(&pause).await?;
        self.follow_pause(&function, &pause, !answer.applied).await
    }

    /// Resolves the edges of an ended pause, moves the run on, then unfiles the pause and
    /// drops its expiry timer. Idempotent: `again` when the pause ended before (this repeats
    /// the work of a node that may have died half-way), which re-derives every decision.
    pub(super) async fn follow_pause(
        &self,
        function: &Function,
        pause: &Pause,
        again: bool,
    ) -> Result<()> {
        if pause.cancels {
            if pause.status == PauseStatus::Matched {
                let by = pause.matched.iter().flatten().next();
                let detail = match by {
                    Some(e) => format!("cancelled by event {} ({})", e.id, e.name),
                    None => "cancelled by an event".to_string(),
                };
                self.cancel_run(&pause.run_id, &detail).await?;
            }
            return self.inner.state.unwatch_pause(pause).await;
        }
        let Some((wait, _)) = wait_of(function, pause) else {
            return Ok(());
        };
        let why = match pause.status {
            PauseStatus::Matched => "the wait matched an event".to_string(),
            PauseStatus::TimedOut if pause.is_sleep() => String::new(),
            PauseStatus::TimedOut => "the wait timed out".to_string(),
            PauseStatus::Cancelled => "the run was cancelled".to_string(),
            PauseStatus::Waiting => return Ok(()),
        };
        // The edges armed when the wait began (older pauses: all of the wait's).
        let edges = if pause.edges.is_empty() {
            &wait.edges
        } else {
            &pause.edges
        };
        let work: Vec<Work> = edges
            .iter()
            .map(|&e| {
                let edge = &function.edges[e];
                let taken = match pause.status {
                    PauseStatus::Matched => !edge.on_timeout,
                    PauseStatus::TimedOut => edge.on_timeout,
                    _ => false,
                };
                Work::Edge {
                    edge: e,
                    taken,
                    reason: why.clone(),
                }
            })
            .collect();
        let run = RunState {
            id: pause.run_id.clone(),
            function_id: function.id.clone(),
            function_version: function.version.clone(),
            status: crate::run::RunStatus::Running,
            // Resolving a wait's edges evaluates no expression: the trigger is not needed.
            event: placeholder(&pause.trigger_id),
            outputs: Map::new(),
        };
        let unknown = Transition {
            applied: true,
            open_steps: usize::MAX,
            finished: None,
        };
        // Repeated, edge decisions are re-derived from the stored tallies (`recovering`), so
        // the same children are queued or skipped.
        let snapshot = if again {
            match self.inner.state.get_run(&pause.run_id).await? {
                Some(run) => Some(run),
                None => return Ok(()),
            }
        } else {
            None
        };
        self.advance(function, run, work, unknown, snapshot.as_ref())
            .await?;
        self.inner.state.unwatch_pause(pause).await
    }

    /// Repeats what a node that completed step `index` of `run` may have left undone for its
    /// waits: files the waiting ones again and reads their lookback; follows the ended ones.
    pub(super) async fn recover_waits(
        &self,
        function: &Function,
        run: &Run,
        index: usize,
        trigger: &Event,
        _outputs: &Map<String, Value>,
    ) -> Result<()> {
        let step = &function.steps[index].id;
        for wait in function.waits.iter().filter(|w| w.parent == index) {
            let Some(pause) = run.pauses.get(&pause_key(step, wait.ordinal)) else {
                continue; // not armed (its edges' `if` was false)
            };
            if pause.status == PauseStatus::Waiting {
                self.open_pauses(function, trigger, vec![pause.clone()])
                    .await?;
            } else {
                self.follow_pause(function, pause, true).await?;
            }
        }
        Ok(())
    }

    /// The `async` input of a step after an `async` edge, and with `any` which spec matched:
    /// the matched event (`all`: the array of them, in spec order); null after a timeout.
    pub(super) async fn async_input(
        &self,
        function: &Function,
        wait: usize,
        run_id: &str,
    ) -> Result<(Option<Value>, Option<usize>)> {
        let wait = &function.waits[wait];
        let key = pause_key(&function.steps[wait.parent].id, wait.ordinal);
        let Some(pause) = self.inner.state.get_pause(run_id, &key).await? else {
            return Ok((None, None));
        };
        if pause.status != PauseStatus::Matched {
            return Ok((None, None));
        }
        let mode = match &wait.kind {
            WaitKind::Event(w) => w.mode,
            WaitKind::Sleep(_) => return Ok((None, None)),
        };
        let as_json = |e: &Event| serde_json::to_value(e).unwrap_or(Value::Null);
        Ok(match mode {
            WaitMode::All => (
                Some(Value::Array(
                    pause
                        .matched
                        .iter()
                        .map(|m| m.as_ref().map_or(Value::Null, as_json))
                        .collect(),
                )),
                None,
            ),
            WaitMode::One | WaitMode::Any => {
                let found = pause
                    .matched
                    .iter()
                    .enumerate()
                    .find_map(|(i, m)| Some((i, m.as_ref()?)));
                match found {
                    Some((i, e)) => (Some(as_json(e)), (mode == WaitMode::Any).then_some(i)),
                    None => (None, None),
                }
            }
        })
    }

    /// The function version a pause's run is pinned to (fetched from the catalog when this
    /// node has not loaded it); `NotFound` (handled again later, for a node that has it)
    /// when neither has it.
    async fn function_of(&self, pause: &Pause) -> Result<std::sync::Arc<Function>> {
        self.function_version(&pause.function_id, &pause.function_version)
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "function {} version {} is not loaded on this node; the pause of run {} waits for a node that has it",
                        pause.function_id, pause.function_version, pause.run_id
                    ),
                )
            })
    }
}

/// The event specs a pause of `function` waits for (a wait's, or a cancel rule's), with the
/// wait's lookback; `None` for a sleep.
fn event_specs<'f>(
    function: &'f Function,
    pause: &Pause,
) -> Option<(&'f [EventSpec], Option<std::time::Duration>)> {
    if pause.cancels {
        let rule = function.cancels.get(pause.ordinal as usize)?;
        return Some((std::slice::from_ref(&rule.spec), None));
    }
    match wait_of(function, pause)?.1 {
        WaitKind::Event(w) => Some((&w.specs, w.lookback)),
        WaitKind::Sleep(_) => None,
    }
}

/// The pauses of a new run of `function` for its `cancel` rules (registered with the run).
pub(super) fn cancel_pauses(
    function: &Function,
    run_id: &str,
    trigger: &Event,
    now: i64,
) -> Vec<Pause> {
    function
        .cancels
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let key = rule.spec.key.as_ref().and_then(|k| k.pause_key(trigger));
            let decided = key.is_some() && rule.spec.key_decides;
            Pause {
                run_id: run_id.to_string(),
                function_id: function.id.clone(),
                function_version: function.version.clone(),
                step: String::new(),
                ordinal: i as u32,
                specs: vec![PauseSpec {
                    event: rule.spec.event.clone(),
                    key: key.unwrap_or_default(),
                }],
                all: false,
                cancels: true,
                edges: Vec::new(),
                exclude: Vec::new(),
                trigger_id: trigger.id.clone(),
                trigger: (rule.spec.matcher.is_some() && !decided).then(|| trigger.clone()),
                registered_ms: now,
                // Without a timeout the rule holds until the run ends (a year at most).
                expires_ms: now.saturating_add(
                    rule.timeout
                        .unwrap_or(std::time::Duration::from_secs(365 * 86_400))
                        .as_millis() as i64,
                ),
                status: PauseStatus::Waiting,
                matched: Vec::new(),
                resolved_ms: None,
            }
        })
        .collect()
}

impl Engine {
    /// Cancels run `run_id` (`detail` says why, in its timeline): see
    /// [`crate::state::StateStore::cancel_run`]. Its running attempts stop at their next
    /// check (see `EngineConfig::cancel_check`), its pauses are unfiled and their timers
    /// dropped. Answers the store's answer.
    pub async fn cancel_run(&self, run_id: &str, detail: &str) -> Result<crate::state::CancelRun> {
        let answer = self
            .inner
            .state
            .cancel_run(run_id, detail, now_ms())
            .await?;
        if answer.applied {
            let function_id = answer
                .pauses
                .first()
                .map(|p| p.function_id.clone())
                .or(self
                    .inner
                    .state
                    .get_run_state(run_id)
                    .await?
                    .map(|r| r.function_id))
                .unwrap_or_default();
            if let Some(m) = self.inner.metrics.function(&function_id) {
                m.run_finished(crate::run::RunStatus::Cancelled);
            }
            let _ = self.inner.finished.send(super::RunFinished {
                run_id: run_id.to_string(),
                function_id,
                status: crate::run::RunStatus::Cancelled,
            });
        }
        for pause in &answer.pauses {
            self.inner.state.unwatch_pause(pause).await?;
        }
        Ok(answer)
    }

    /// Unfiles the cancel rules of a run that ended (they no longer apply).
    pub(super) async fn release_cancel_rules(
        &self,
        function: &Function,
        run_id: &str,
    ) -> Result<()> {
        if function.cancels.is_empty() {
            return Ok(());
        }
        let Some(run) = self.inner.state.get_run(run_id).await? else {
            return Ok(());
        };
        for pause in run.pauses.values().filter(|p| p.cancels) {
            self.inner.state.unwatch_pause(pause).await?;
        }
        Ok(())
    }
}

/// The wait of `function` a pause belongs to, with its kind.
fn wait_of<'f>(function: &'f Function, pause: &Pause) -> Option<(&'f Wait, &'f WaitKind)> {
    let parent = *function.index.get(&pause.step)?;
    function
        .waits
        .iter()
        .find(|w| w.parent == parent && w.ordinal == pause.ordinal)
        .map(|w| (w, &w.kind))
}

/// Whether `event` matches `spec` of a pause filed as `filed` for a run triggered by
/// `trigger`: its key (when filed with one) and its match.
fn spec_matches(spec: &EventSpec, filed: &PauseSpec, trigger: &Event, event: &Event) -> bool {
    if spec.event != event.name {
        return false;
    }
    if !filed.key.is_empty() {
        let key = spec.key.as_ref().and_then(|k| k.incoming_key(event));
        if key.as_deref() != Some(filed.key.as_str()) {
            return false;
        }
        if spec.key_decides {
            return true;
        }
    }
    let Some(matcher) = &spec.matcher else {
        return true;
    };
    let mut vars = Vars::new();
    vars.set_event("event", trigger);
    vars.set_event("async", event);
    matcher.eval_bool(&vars).unwrap_or_else(|e| {
        debug!(error = %e, event = %event.id, "a match failed to evaluate; not matched");
        false
    })
}

/// An event standing for a trigger that is not at hand (following a pause evaluates no
/// expression on it).
fn placeholder(id: &str) -> Event {
    Event {
        name: String::new(),
        data: Value::Object(Map::new()),
        user: Value::Object(Map::new()),
        id: id.to_string(),
        ts: 0,
        v: None,
    }
}
