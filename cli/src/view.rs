//! How runs are shown: the JSON of `weir run --json` / `weir runs show --json` /
//! `GET /v1/runs/{id}`, and the human rendering.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};
use weir_core::run::{Run, RunSummary, StepStatus};

/// `{"run_id","function_id","function_version","status","event_id","steps":{id:{status,output,attempts,…}}}`,
/// plus `"timeline"` when asked.
pub fn run_json(run: &Run, timeline: bool) -> Value {
    let mut steps = Map::new();
    for (id, s) in &run.steps {
        let mut step = Map::new();
        step.insert("status".into(), json!(s.status.as_str()));
        step.insert("output".into(), s.output.clone().unwrap_or(Value::Null));
        step.insert("attempts".into(), json!(s.attempts));
        if let Some(e) = &s.error {
            step.insert("error".into(), json!(e));
        }
        if let Some(l) = &s.log {
            step.insert("log".into(), json!(l));
        }
        if !s.edges.is_empty() {
            step.insert("edges".into(), json!(s.edges));
        }
        steps.insert(id.clone(), Value::Object(step));
    }
    let mut out = json!({
        "run_id": run.id,
        "function_id": run.function_id,
        "function_version": run.function_version,
        "fn_version": run.fn_version,
        "status": run.shown_status().as_str(),
        "event_id": run.event.id,
        "created_at": run.created_at,
        "ended_at": run.ended_at,
        "steps": steps,
    });
    // A cancel rule that never matched is no longer a wait once the run ended.
    let waits: Vec<Value> = run
        .pauses
        .values()
        .filter(|p| {
            !(p.cancels
                && p.status == weir_core::pause::PauseStatus::Waiting
                && run.status.is_final())
        })
        .map(wait_json)
        .collect();
    if !waits.is_empty() {
        out["waits"] = Value::Array(waits);
    }
    if timeline {
        out["timeline"] = serde_json::to_value(&run.history).unwrap_or(Value::Null);
        out["event"] = serde_json::to_value(&run.event).unwrap_or(Value::Null);
    }
    out
}

/// A function's DAG, as the dashboard draws it: `{"steps": [{"id", "name", "runtime"}],
/// "edges": [{"from", "to", "kind": "then"|"async"|"wait", "on_timeout", "if"}]}`, steps in
/// definition order.
pub fn graph_json(function: &weir_core::function::Function) -> Value {
    let steps: Vec<Value> = function
        .steps
        .iter()
        .map(|s| json!({"id": s.id, "name": s.name, "runtime": s.runtime_type}))
        .collect();
    let edges: Vec<Value> = function
        .edges
        .iter()
        .map(|e| {
            let kind = match e.wait.map(|w| &function.waits[w].kind) {
                None => "then",
                Some(weir_core::function::WaitKind::Event(_)) => "async",
                Some(weir_core::function::WaitKind::Sleep(_)) => "wait",
            };
            let mut edge = json!({
                "from": function.steps[e.parent].id,
                "to": function.steps[e.child].id,
                "kind": kind,
            });
            if e.on_timeout {
                edge["on_timeout"] = json!(true);
            }
            if let Some(condition) = &e.condition {
                edge["if"] = json!(condition.source());
            }
            edge
        })
        .collect();
    json!({"steps": steps, "edges": edges})
}

/// What a pause of the run waits for (`weir runs show`, `GET /v1/runs/{id}`): `{"key", "step",
/// "kind": "event"|"sleep"|"cancel", "events", "all", "until", "status", "matched"}`.
fn wait_json(p: &weir_core::pause::Pause) -> Value {
    let kind = if p.cancels {
        "cancel"
    } else if p.is_sleep() {
        "sleep"
    } else {
        "event"
    };
    let mut out = json!({
        "key": p.key(),
        "kind": kind,
        "until": p.expires_ms,
        "status": p.status.as_str(),
    });
    if !p.step.is_empty() {
        out["step"] = json!(p.step);
    }
    if !p.specs.is_empty() {
        out["events"] = json!(p.specs.iter().map(|s| s.event.as_str()).collect::<Vec<_>>());
    }
    if p.all {
        out["all"] = json!(true);
    }
    if !p.matched.is_empty() {
        out["matched"] = json!(
            p.matched
                .iter()
                .map(|m| m.as_ref().map(|e| e.id.as_str()))
                .collect::<Vec<_>>()
        );
    }
    if let Some(at) = p.resolved_ms {
        out["ended_at"] = json!(at);
    }
    out
}

fn mark(status: &str) -> &'static str {
    match status {
        "completed" => "✓",
        "failed" => "✗",
        "skipped" => "–",
        "cancelled" => "⊘",
        _ => "…",
    }
}

/// Renders a run (as [`run_json`] gives it) for people: one block per step.
pub fn render_run(run: &Value, step_order: &[String]) -> String {
    let mut out = String::new();
    let status = run["status"].as_str().unwrap_or("?");
    let _ = writeln!(
        out,
        "run {} of {} — {status}",
        run["run_id"].as_str().unwrap_or("?"),
        run["function_id"].as_str().unwrap_or("?")
    );
    if let Some(error) = run["error"].as_str() {
        // A run whose stored state cannot be decoded: what is known of it.
        let _ = writeln!(out, "  {}", printable(error));
    }
    let empty = Map::new();
    let steps = run["steps"].as_object().unwrap_or(&empty);
    let mut ids: Vec<&String> = step_order
        .iter()
        .filter(|id| steps.contains_key(*id))
        .collect();
    ids.extend(steps.keys().filter(|k| !step_order.contains(k)));
    for id in ids {
        let s = &steps[id];
        let st = s["status"].as_str().unwrap_or("?");
        let attempts = s["attempts"].as_u64().unwrap_or(0);
        let plural = if attempts == 1 { "" } else { "s" };
        let _ = writeln!(
            out,
            "  {} {id}: {st} ({attempts} attempt{plural})",
            mark(st)
        );
        if !s["output"].is_null() {
            let _ = writeln!(out, "      output: {}", s["output"]);
        }
        if let Some(e) = s["error"].as_str() {
            let _ = writeln!(
                out,
                "      {}: {e}",
                if st == "skipped" { "why" } else { "error" }
            );
        }
        if let Some(l) = s["log"].as_str() {
            for line in l.lines().take(20) {
                let _ = writeln!(out, "      log: {line}");
            }
        }
    }
    if let Some(waits) = run["waits"].as_array() {
        let _ = writeln!(out, "waits:");
        for w in waits {
            let what = match w["kind"].as_str() {
                Some("sleep") => "sleeps".to_string(),
                kind => {
                    let names: Vec<&str> = w["events"]
                        .as_array()
                        .map(|e| e.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let join = if w["all"] == json!(true) {
                        " and "
                    } else {
                        " or "
                    };
                    let verb = if kind == Some("cancel") {
                        "cancels on"
                    } else {
                        "waits for"
                    };
                    format!("{verb} {}", names.join(join))
                }
            };
            let after = w["step"]
                .as_str()
                .map(|s| format!(" after {s}"))
                .unwrap_or_default();
            let matched = w["matched"]
                .as_array()
                .map(|m| {
                    let ids: Vec<&str> = m.iter().filter_map(Value::as_str).collect();
                    format!(" (event {})", ids.join(", "))
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}{after} {what} until {} — {}{matched}",
                w["key"].as_str().unwrap_or("?"),
                timeline_time(w["until"].as_i64(), None).trim_end_matches(|c| c != 'Z'),
                w["status"].as_str().unwrap_or("?"),
            );
        }
    }
    if let Some(tl) = run["timeline"].as_array() {
        let _ = writeln!(out, "timeline:");
        let start = tl.first().and_then(|h| h["at"].as_i64());
        for h in tl {
            let _ = writeln!(
                out,
                "  {} {}{}{}{}",
                timeline_time(h["at"].as_i64(), start),
                h["kind"].as_str().unwrap_or(""),
                h["step"]
                    .as_str()
                    .map(|s| format!(" {s}"))
                    .unwrap_or_default(),
                h["attempt"]
                    .as_u64()
                    .map(|a| format!(" #{a}"))
                    .unwrap_or_default(),
                h["detail"]
                    .as_str()
                    .map(|d| format!(" — {d}"))
                    .unwrap_or_default(),
            );
        }
    }
    out
}

/// A timeline entry's time: UTC with milliseconds, then how long after the run's first entry
/// (`2026-12-02T09:53:05.981Z +8ms`).
fn timeline_time(at_ms: Option<i64>, start_ms: Option<i64>) -> String {
    let Some(at) = at_ms.filter(|at| *at >= 0) else {
        return "?".into();
    };
    let clock = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(at as u64),
    );
    let since = at.saturating_sub(start_ms.unwrap_or(at)).max(0) as u64;
    let since = humantime::format_duration(std::time::Duration::from_millis(since));
    format!("{clock} {:>8}", format!("+{since}"))
}

/// One line per run for `weir runs`.
pub fn render_summaries(runs: &[RunSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26}  {:<24}  {:<9}  EVENT",
        "RUN", "FUNCTION", "STATUS"
    );
    for r in runs {
        let _ = writeln!(
            out,
            "{:<26}  {:<24}  {:<9}  {} ({})",
            r.id,
            r.function_id,
            r.status.as_str(),
            printable(&r.event_id),
            printable(&r.event_name)
        );
    }
    out
}

/// One line per event for `weir events`: when it happened (UTC), id, name and the user it is
/// about (`user.id`, else `external_id`, else `email`; `-` for none).
pub fn render_events(events: &[weir_core::Event]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<24}  {:<26}  {:<32}  USER", "TIME", "ID", "NAME");
    for e in events {
        let user = e.user_key().unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<24}  {:<26}  {:<32}  {}",
            event_time(e.ts),
            printable(&e.id),
            printable(&e.name),
            printable(&user)
        );
    }
    out
}

/// `text` with its control characters escaped (`\u{1b}`, `\n`): event ids, names and users
/// come from whoever sends events, and printed raw they could move the cursor, recolour or
/// retitle the terminal of the operator listing them.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// An event's `ts` as UTC with milliseconds, or the raw number when it is before 1970 or after
/// 9999 (the sender sets it).
pub fn event_time(ts: i64) -> String {
    const YEAR_10000_MS: i64 = 253_402_300_800_000;
    if !(0..YEAR_10000_MS).contains(&ts) {
        return format!("{ts} ms");
    }
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ts as u64),
    )
    .to_string()
}

/// Whether every step of the run is terminal and none failed.
pub fn completed(run: &Run) -> bool {
    run.steps
        .values()
        .all(|s| matches!(s.status, StepStatus::Completed | StepStatus::Skipped))
}

#[cfg(test)]
mod tests {
    use super::timeline_time;

    #[test]
    fn control_characters_from_events_are_escaped_in_tables() {
        let event = weir_core::Event::from_json(
            serde_json::json!({"name": "a/\u{1b}]0;owned\u{7}b", "id": "x\ny",
                               "user": {"id": "\u{1b}[2J"}, "ts": 0}),
            "",
        )
        .expect("event");
        let table = super::render_events(&[event]);
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert_eq!(table.lines().count(), 2, "one line per event: {table}");
        assert!(table.contains(r"a/\u{1b}]0;owned\u{7}b"), "{table}");
        assert!(
            table.contains(r"x\ny") && table.contains(r"\u{1b}[2J"),
            "{table}"
        );
        assert_eq!(super::printable("plain/name"), "plain/name");
    }

    #[test]
    fn event_times_outside_what_rfc3339_says_are_numbers() {
        assert_eq!(super::event_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::event_time(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(super::event_time(253_402_300_800_000), "253402300800000 ms");
        assert_eq!(super::event_time(-5), "-5 ms");
    }

    #[test]
    fn timeline_times_are_readable_and_relative_to_the_first_entry() {
        let start = 1_796_205_185_973;
        assert_eq!(
            timeline_time(Some(start), Some(start)),
            "2026-12-02T09:53:05.973Z      +0s"
        );
        assert_eq!(
            timeline_time(Some(start + 8), Some(start)),
            "2026-12-02T09:53:05.981Z     +8ms"
        );
        assert_eq!(
            timeline_time(Some(start + 61_250), Some(start)),
            "2026-12-02T09:54:07.223Z +1m 1s 250ms"
        );
        assert_eq!(timeline_time(None, Some(start)), "?");
    }
}
