//! The dashboard in a real browser (headless Chromium through chromedriver): runs in every
//! state drawn as their DAGs, a step's output on click, filters, a test event sent from the
//! form, a user's timeline, the API key asked for once, and producer-set markup shown as text,
//! never run. Screenshots of each view are saved under the test's target directory
//! (`WEIR_SCREENSHOTS_TO=docs/images` writes them there too).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::browser::Browser;
use serde_json::{Value, json};
use weir::api::Keys;

/// Markup a producer could send: it must show as text and never run.
const XSS: &str = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>";

/// Writes an executable step script.
fn script(dir: &Path, name: &str, body: &str) {
    let path = dir.join("steps").join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Two functions under `root`: `shop` (charge, then email, audit only when asked, refund
/// that fails when asked, then confirm) and `onboarding` (welcome, then a wait for another
/// event).
fn write_functions(root: &Path) {
    let shop = root.join("shop");
    std::fs::create_dir_all(&shop).expect("mkdir");
    let def = json!({"id": "shop", "name": "Shop order", "triggers": [{"event": "shop/ordered"}],
    "steps": {
        "charge": {"path": "file://./steps/charge"},
        "email": {"path": "file://./steps/email", "after": [{"step": "charge"}]},
        "audit": {"path": "file://./steps/audit",
                  "after": [{"step": "charge", "if": "event.data.audit == true"}]},
        "refund": {"path": "file://./steps/refund", "after": [{"step": "charge"}],
                   "retries": {"attempts": 1}},
        "confirm": {"path": "file://./steps/confirm",
                    "after": [{"step": "email"}, {"step": "refund"}]}
    }});
    std::fs::write(shop.join("weir.json"), def.to_string()).expect("write");
    script(
        &shop,
        "charge",
        "cat >/dev/null; echo '{\"charged\": 4200, \"currency\": \"EUR\"}'",
    );
    // The step's log (stderr) holds the event as sent: producer-set text.
    script(
        &shop,
        "email",
        "input=$(cat); echo \"$input\" >&2; case \"$input\" in *'\"slow\":true'*) sleep 60;; esac; echo '{\"sent\": true}'",
    );
    script(&shop, "audit", "cat >/dev/null; echo '{\"audited\": true}'");
    script(
        &shop,
        "refund",
        "input=$(cat); case \"$input\" in *'\"fail\":true'*) echo 'card declined' >&2; exit 3;; esac; echo '{\"refunded\": false}'",
    );
    script(
        &shop,
        "confirm",
        "cat >/dev/null; echo '{\"confirmed\": true}'",
    );

    let onboarding = root.join("onboarding");
    std::fs::create_dir_all(&onboarding).expect("mkdir");
    let def = json!({"id": "onboarding", "triggers": [{"event": "user/signed.up"}],
    "steps": {
        "welcome": {"path": "file://./steps/ok"},
        "thank": {"path": "file://./steps/ok", "after": [{"step": "welcome",
            "async": {"event": "user/activated", "match": "async.user.id == event.user.id", "ttl": "1h"}}]}
    }});
    std::fs::write(onboarding.join("weir.json"), def.to_string()).expect("write");
    script(&onboarding, "ok", "cat >/dev/null; echo '{\"ok\": true}'");
}

/// Sends one event; its id.
async fn send(base: &str, event: Value) -> String {
    common::send_events(base, "key", &event).await.remove(0)
}

/// The runs of `event_id`, once there are `count` of them in `status` (waiting up to 60 s).
async fn runs_of(base: &str, event_id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs: Vec<Value> = reqwest::get(format!("{base}/v1/runs?limit=1000"))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if let Some(run) = runs
            .into_iter()
            .find(|r| r["event_id"] == event_id && r["status"] == status)
        {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "no {status} run of event {event_id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where screenshots go: the test's target directory, and `WEIR_SCREENSHOTS_TO` when set.
fn screenshot_paths(name: &str) -> Vec<PathBuf> {
    let mut paths = vec![
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("dashboard")
            .join(name),
    ];
    if let Ok(dir) = std::env::var("WEIR_SCREENSHOTS_TO") {
        // Relative to the workspace (tests run in `cli/`).
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        paths.push(workspace.join(dir).join(name));
    }
    paths
}

async fn screenshot(browser: &Browser, name: &str) {
    for path in screenshot_paths(name) {
        browser.screenshot(&path).await;
    }
}

/// The `data-status` of step `step` in the drawn DAG, once it is `want` (20 s at most).
async fn step_becomes(browser: &Browser, step: &str, want: &str) {
    let script = format!(
        "const n = document.querySelector('svg.dag [data-step=\"{step}\"]'); return n && n.dataset.status === '{want}' ? n.dataset.status : null"
    );
    browser
        .wait_for(&format!("step {step} drawn as {want}"), &script)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_runs_steps_events_and_users_in_a_real_browser() {
    let Some(browser) = Browser::start(1280, 800).await else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    write_functions(tmp.path());
    let (engine, _handle) =
        common::engine_configured(tmp.path(), "memory://", "memory://", common::fast_config())
            .await;
    let base = common::serve_api(engine.clone(), Keys::Any, Keys::Any).await;

    let completed = send(
        &base,
        json!({"name": "shop/ordered", "data": {"n": 1}, "user": {"id": "ada"}}),
    )
    .await;
    let failed = send(
        &base,
        json!({"name": "shop/ordered", "data": {"fail": true}, "user": {"id": "bob"}}),
    )
    .await;
    let slow = send(
        &base,
        json!({"name": "shop/ordered", "data": {"slow": true}, "user": {"id": "ada"}}),
    )
    .await;
    let to_cancel = send(
        &base,
        json!({"name": "shop/ordered", "data": {"slow": true}, "user": {"id": "cy"}}),
    )
    .await;
    let marked_up = send(
        &base,
        json!({"name": "shop/ordered", "data": {"note": XSS}, "user": {"id": XSS}}),
    )
    .await;
    let waiting = send(
        &base,
        json!({"name": "user/signed.up", "data": {}, "user": {"id": "ada"}}),
    )
    .await;
    let completed_run = runs_of(&base, &completed, "completed").await;
    let failed_run = runs_of(&base, &failed, "failed").await;
    let slow_run = runs_of(&base, &slow, "running").await;
    let cancelled_run = runs_of(&base, &to_cancel, "running").await;
    let marked_up_run = runs_of(&base, &marked_up, "completed").await;
    let waiting_run = runs_of(&base, &waiting, "waiting").await;
    let cancelled = reqwest::Client::new()
        .post(format!(
            "{base}/v1/runs/{}/cancel",
            cancelled_run["id"].as_str().expect("id")
        ))
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancelled.status().as_u16(), 200);
    let id = |run: &Value| run["id"].as_str().expect("id").to_string();

    // A failed run: its DAG, each step in its state.
    browser
        .goto(&format!("{base}/runs/{}", id(&failed_run)))
        .await;
    step_becomes(&browser, "refund", "failed").await;
    for (step, status) in [
        ("charge", "completed"),
        ("email", "completed"),
        ("audit", "skipped"),
        ("confirm", "skipped"),
    ] {
        step_becomes(&browser, step, status).await;
    }
    let edges = browser
        .execute(
            "return document.querySelectorAll('svg.dag path.edge').length",
            json!([]),
        )
        .await;
    assert_eq!(edges, json!(5), "one path per edge of shop");
    // A step's output, error and log on click.
    browser.click("svg.dag [data-step=\"charge\"]").await;
    let output = browser
        .text("#step-panel [data-step=\"charge\"] [data-part=\"output\"]")
        .await;
    assert!(output.contains("\"charged\": 4200"), "{output}");
    browser.click("svg.dag [data-step=\"refund\"]").await;
    let log = browser
        .text("#step-panel [data-step=\"refund\"] [data-part=\"log\"]")
        .await;
    assert!(log.contains("card declined"), "{log}");
    screenshot(&browser, "run-detail.png").await;

    // Running, cancelled, waiting and completed runs, each drawn in its state.
    browser
        .goto(&format!("{base}/runs/{}", id(&slow_run)))
        .await;
    step_becomes(&browser, "email", "running").await;
    step_becomes(&browser, "charge", "completed").await;
    browser
        .goto(&format!("{base}/runs/{}", id(&cancelled_run)))
        .await;
    step_becomes(&browser, "email", "cancelled").await;
    browser
        .goto(&format!("{base}/runs/{}", id(&waiting_run)))
        .await;
    step_becomes(&browser, "welcome", "completed").await;
    step_becomes(&browser, "thank", "pending").await;
    let waiting_edge = browser
        .execute(
            "return document.querySelector('svg.dag path.edge.k-async') !== null",
            json!([]),
        )
        .await;
    assert_eq!(waiting_edge, json!(true), "the async edge is drawn as one");
    browser
        .goto(&format!("{base}/runs/{}", id(&completed_run)))
        .await;
    step_becomes(&browser, "confirm", "completed").await;

    // The runs list, its counts per status and its filters.
    browser.goto(&format!("{base}/runs")).await;
    browser
        .wait_for(
            "six runs listed",
            "return document.querySelectorAll('#runs-list tr[data-run]').length === 6 || null",
        )
        .await;
    let counts = browser
        .wait_for(
            "the counts",
            "const c = document.getElementById('run-counts').textContent; return c.includes('failed') ? c : null",
        )
        .await;
    let counts = counts.as_str().expect("text");
    for part in [
        "running or waiting 2",
        "completed 2",
        "failed 1",
        "cancelled 1",
    ] {
        assert!(counts.contains(part), "{part} in {counts}");
    }
    screenshot(&browser, "runs.png").await;
    // Followed inside the page (no reload): a run's link, then back to the list.
    browser
        .click(&format!(
            "#runs-list tr[data-run=\"{}\"] a",
            id(&failed_run)
        ))
        .await;
    step_becomes(&browser, "refund", "failed").await;
    browser
        .execute("history.back(); return true", json!([]))
        .await;
    browser
        .wait_for(
            "the list again",
            "return location.pathname === '/runs' && document.querySelectorAll('#runs-list tr[data-run]').length === 6 || null",
        )
        .await;
    browser.goto(&format!("{base}/runs?status=failed")).await;
    let failed_rows = browser
        .wait_for(
            "only the failed run listed",
            "const rows = [...document.querySelectorAll('#runs-list tr[data-run]')]; return rows.length === 1 ? rows[0].dataset.run : null",
        )
        .await;
    assert_eq!(failed_rows, json!(id(&failed_run)));
    browser.goto(&format!("{base}/runs?user=ada")).await;
    let ada = browser
        .wait_for(
            "ada's runs",
            "const rows = [...document.querySelectorAll('#runs-list tr[data-run]')]; return rows.length === 3 ? rows.map(r => r.dataset.run).sort() : null",
        )
        .await;
    let mut want = vec![id(&completed_run), id(&slow_run), id(&waiting_run)];
    want.sort();
    assert_eq!(ada, json!(want));
    // Chosen in the form: the address follows, so the view can be shared.
    browser.goto(&format!("{base}/runs")).await;
    browser.find("#runs-list tr[data-run]").await;
    browser
        .execute(
            "const s = document.getElementById('f-status'); s.value = 'cancelled'; s.dispatchEvent(new Event('change')); return true",
            json!([]),
        )
        .await;
    browser
        .wait_for(
            "the cancelled run, by the form",
            "const rows = [...document.querySelectorAll('#runs-list tr[data-run]')]; return rows.length === 1 && rows[0].dataset.status === 'cancelled' && location.search === '?status=cancelled' || null",
        )
        .await;

    // Producer-set markup is text: in the step log, the event page and the user page.
    browser
        .goto(&format!("{base}/runs/{}", id(&marked_up_run)))
        .await;
    step_becomes(&browser, "email", "completed").await;
    browser.click("svg.dag [data-step=\"email\"]").await;
    let log = browser
        .text("#step-panel [data-step=\"email\"] [data-part=\"log\"]")
        .await;
    assert!(log.contains("<script>window.__xss=2</script>"), "{log}");
    assert_eq!(no_markup_in_main(&browser).await, json!(0));
    browser.goto(&format!("{base}/events/{marked_up}")).await;
    browser
        .wait_for(
            "the event's run",
            "return document.querySelector('#event-runs tr[data-run]') !== null || null",
        )
        .await;
    let shown = browser.text("main").await;
    assert!(shown.contains("<img src=x onerror="), "{shown}");
    assert_eq!(no_markup_in_main(&browser).await, json!(0));
    browser
        .goto(&format!("{base}/users/{}", common::url_encoded(XSS)))
        .await;
    browser
        .wait_for(
            "the marked-up user's timeline",
            "return document.querySelector('#user-timeline [data-run]') !== null || null",
        )
        .await;
    let title = browser.text("h1").await;
    assert!(title.contains(XSS), "{title}");
    let ran = browser
        .execute(
            "return [window.__xss === undefined, document.querySelectorAll('main script, main img').length]",
            json!([]),
        )
        .await;
    assert_eq!(
        ran,
        json!([true, 0]),
        "no producer markup ran or became an element"
    );

    // A user's timeline: their events, each with the runs it started.
    browser.goto(&format!("{base}/users/ada")).await;
    let listed = browser
        .wait_for(
            "ada's three events",
            "const e = document.querySelectorAll('#user-timeline [data-event]'); return e.length === 3 ? document.querySelectorAll('#user-timeline [data-run]').length : null",
        )
        .await;
    assert_eq!(listed, json!(3), "each of ada's events started one run");
    screenshot(&browser, "user.png").await;

    // A function: its triggers and DAG.
    browser.goto(&format!("{base}/functions/shop")).await;
    let nodes = browser
        .wait_for(
            "shop's DAG",
            "const n = document.querySelectorAll('svg.dag [data-step]'); return n.length || null",
        )
        .await;
    assert_eq!(nodes, json!(5));
    screenshot(&browser, "function.png").await;

    // A test event sent from the form starts a run.
    browser.goto(&format!("{base}/events")).await;
    browser.find("#events-list tr[data-event]").await;
    browser.type_into("#s-name", "shop/ordered").await;
    browser.type_into("#s-data", "{\"from_form\": 7}").await;
    browser.type_into("#s-user", "{\"id\": \"dee\"}").await;
    browser.click("#s-send").await;
    let sent = browser
        .wait_for(
            "the sent event's id",
            "const a = document.querySelector('#s-result a'); return a ? a.textContent : null",
        )
        .await;
    let sent = sent.as_str().expect("id").to_string();
    let from_form = runs_of(&base, &sent, "completed").await;
    assert_eq!(from_form["user"], "dee");
    screenshot(&browser, "events.png").await;
    // Not JSON: said so, nothing sent.
    let stored_before = stored_events(&base).await;
    browser.type_into("#s-data", "{nope").await;
    browser.click("#s-send").await;
    let said = browser
        .wait_for(
            "the JSON error",
            "const p = document.querySelector('#s-result .error'); return p ? p.textContent : null",
        )
        .await;
    assert!(said.as_str().expect("text").contains("Not JSON"), "{said}");
    assert_eq!(
        stored_events(&base).await,
        stored_before,
        "nothing was sent"
    );

    // At a phone's width the run page still fits: only the DAG scrolls, inside its box.
    browser.resize(390, 844).await;
    browser
        .goto(&format!("{base}/runs/{}", id(&failed_run)))
        .await;
    step_becomes(&browser, "refund", "failed").await;
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            json!([]),
        )
        .await;
    assert_eq!(overflow, json!(0), "the page is no wider than the phone");
    screenshot(&browser, "run-detail-phone.png").await;
}

/// The dashboard of a server with API keys asks for the key once, keeps it in the tab's
/// session storage (never in the address), and shows the runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_the_api_key_once() {
    let Some(browser) = Browser::start(1280, 800).await else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    write_functions(tmp.path());
    let (engine, _handle) =
        common::engine_configured(tmp.path(), "memory://", "memory://", common::fast_config())
            .await;
    let keys = Keys::Only(std::sync::Arc::new(["secret-key".to_string()].into()));
    let base = common::serve_api(engine.clone(), Keys::Any, keys).await;
    let event = send(
        &base,
        json!({"name": "shop/ordered", "data": {}, "user": {"id": "ada"}}),
    )
    .await;

    browser.goto(&format!("{base}/runs")).await;
    browser
        .wait_for(
            "the key dialog",
            "return document.getElementById('key-dialog').open || null",
        )
        .await;
    // Escape does not dismiss it (or it opens again at once): the page needs a key.
    browser.press("#key-input", "\u{E00C}").await;
    browser
        .wait_for(
            "the dialog, open after Escape",
            "return new Promise(r => setTimeout(() => r(document.getElementById('key-dialog').open || null), 200))",
        )
        .await;
    browser.type_into("#key-input", "wrong-key").await;
    browser.click("#key-form button").await;
    browser
        .wait_for(
            "the refusal",
            "const d = document.getElementById('key-dialog'); return d.open && document.getElementById('key-error').textContent.includes('refused') || null",
        )
        .await;
    browser.type_into("#key-input", "secret-key").await;
    browser.click("#key-form button").await;
    browser
        .wait_for(
            "the run, listed with the key",
            "return [...document.querySelectorAll('#runs-list tr[data-run]')].some(r => r.textContent.includes('shop')) && !document.getElementById('key-dialog').open || null",
        )
        .await;
    let kept = browser
        .execute(
            "return [sessionStorage.getItem('weir.apiKey'), location.href.includes('secret')]",
            json!([]),
        )
        .await;
    assert_eq!(kept, json!(["secret-key", false]));
    // Another view: no second prompt.
    browser.goto(&format!("{base}/events/{event}")).await;
    browser
        .wait_for(
            "the event, without a prompt",
            "return document.querySelector('#event-runs tr[data-run]') !== null && !document.getElementById('key-dialog').open || null",
        )
        .await;
}

/// How many `<script>` and `<img>` elements the view holds (the dashboard makes none: any
/// would come from a producer's markup).
async fn no_markup_in_main(browser: &Browser) -> Value {
    browser
        .execute(
            "return document.querySelectorAll('main script, main img').length",
            json!([]),
        )
        .await
}

/// How many events the server stores.
async fn stored_events(base: &str) -> usize {
    let events: Vec<Value> = reqwest::get(format!("{base}/v1/events?limit=1000"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    events.len()
}
