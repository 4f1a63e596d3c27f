//! The real Node client (npm `faktory-worker` 4) against weir, with a password (the Node
//! client hashes it `i` times, protocol v2): a handled job runs as a weir run; a PUSHB of
//! jobs for the client's own worker answers the refused one by its jid; the worker (two at
//! once, with BEATs) acknowledges each job once and FAILs the flaky one.
//!
//! Needs Node and the package (`WEIR_TEST_FAKTORY_NODE_PATH`: a `node_modules` folder holding
//! `faktory-worker`; scripts/test.sh installs it).

mod common;

use serde_json::{Value, json};
use weir_core::testkit::{service_url, unique};

/// argv: url, password, handled jid, log file. Pushes, works the queue `nq` until three jobs
/// were handled, prints what it saw as JSON.
const SCRIPT: &str = r#"
const faktory = require("faktory-worker");
const fs = require("fs");
const [url, password, jid, log] = process.argv.slice(1);
(async () => {
  const client = new faktory.Client({ url, password });
  const pushed = await client.push({ jobtype: "send_email", args: [5], jid });
  const rejected = await client.pushBulk([
    { jobtype: "record", args: [1], queue: "nq" },
    { jobtype: "record", args: [2], queue: "nq" },
    { jobtype: "flaky", args: [3], queue: "nq", retry: 3 },
    { jobtype: "record", args: [4], queue: "nq", jid: "short" },
  ]);
  const seen = [];
  faktory.register("record", async (n) => { seen.push(n); fs.appendFileSync(log, `record ${n}\n`); });
  faktory.register("flaky", async (n) => { fs.appendFileSync(log, `flaky ${n}\n`); throw new Error("flaky says no"); });
  const worker = await faktory.work({ url, password, queues: ["nq"], concurrency: 2 });
  const deadline = Date.now() + 20000;
  while (fs.existsSync(log) ? fs.readFileSync(log, "utf8").split("\n").length < 4 : true) {
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  // The worker's FAIL is sent on its own: wait for it to land in the retries.
  let info = await client.info();
  while (info.faktory.tasks.Retries.size < 1 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    info = await client.info();
  }
  await worker.stop();
  await client.close();
  console.log(JSON.stringify({ pushed, rejected, seen: seen.sort(), info }));
})().catch((e) => { console.log(JSON.stringify({ error: String(e) })); process.exit(1); });
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_client_pushes_and_its_worker_works_the_jobs() {
    let Some(node_path) = service_url("WEIR_TEST_FAKTORY_NODE_PATH") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    common::mailer(dir.path());
    let (engine, handle) = common::engine(dir.path(), &["mailer"]).await;
    let running = common::run_adapter(&engine, Some("n0de pass"), "").await;
    let url = format!("tcp://{}", running.address());
    let jid = unique("node-jid");
    let log = dir.path().join("node.log");
    let stdout = common::node(
        &node_path,
        SCRIPT,
        &[url.as_str(), "n0de pass", &jid, &log.to_string_lossy()],
    )
    .await;
    let seen: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(seen["pushed"], jid.as_str());
    assert_eq!(
        seen["rejected"]["short"]["reason"], "jobs must have a reasonable jid parameter",
        "{seen}"
    );
    assert_eq!(
        seen["rejected"].as_object().map(|r| r.len()),
        Some(1),
        "{seen}"
    );
    assert_eq!(seen["seen"], json!([1, 2]), "each record job once");
    assert_eq!(
        seen["info"]["faktory"]["tasks"]["Retries"]["size"], 1,
        "{seen}"
    );
    assert_eq!(seen["info"]["faktory"]["total_failures"], 1, "{seen}");

    let runs = common::ended_runs_of(&engine, &jid).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].steps["send"].output, Some(json!({"to": 5})));

    running.stop().await;
    handle.shutdown().await;
}
