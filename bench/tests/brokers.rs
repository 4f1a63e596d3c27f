//! `weir-bench brokers`: every message published is acked, with deliveries handled one at a
//! time or concurrently (`--handlers`). The figures are not checked here (timing belongs to the
//! benchmark); that the bench completes and says how it ran is.

use std::process::Command;

fn bench_brokers(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir-bench"))
        .args(["brokers", "--broker", "memory://"])
        .args(args)
        .output()
        .expect("weir-bench brokers");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_message_is_acked_with_one_or_many_handlers() {
    for handlers in ["1", "16"] {
        let (code, stdout, stderr) = bench_brokers(&[
            "--messages",
            "3000",
            "--handlers",
            handlers,
            "--timeout-secs",
            "60",
        ]);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("{handlers} handler(s) each")),
            "{stdout}"
        );
        let row = stdout
            .lines()
            .find(|l| l.starts_with("memory://"))
            .unwrap_or_else(|| panic!("no memory row: {stdout}"));
        assert!(!row.contains("only"), "not every message was acked: {row}");
    }
}

#[test]
fn zero_handlers_is_refused() {
    let (code, stdout, stderr) = bench_brokers(&["--messages", "10", "--handlers", "0"]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("--handlers"), "{stderr}");
}
