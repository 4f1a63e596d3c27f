//! Every fuzz target runs briefly (2 s each; `scripts/fuzz.sh` runs them for minutes) and finds
//! nothing; and the fuzzer itself finds a planted bug.

use std::time::Duration;

#[test]
fn every_target_runs_clean_for_a_while() {
    let mut failures = Vec::new();
    for t in weir_fuzz::targets::ALL {
        let report = weir_fuzz::fuzz(t, Duration::from_secs(2), 0x5eed);
        assert!(
            report.inputs > 100,
            "{}: only {} inputs",
            t.name,
            report.inputs
        );
        for (message, input) in report.findings {
            failures.push(format!(
                "{}: {message}\n  input: {:?}",
                t.name,
                String::from_utf8_lossy(&input[..input.len().min(300)])
            ));
        }
    }
    assert!(failures.is_empty(), "findings:\n{}", failures.join("\n"));
}

/// A target with a bug a mutation reaches (a panic on a key the seeds lack): the fuzzer must
/// find it, or it finds nothing in the real targets either.
#[test]
fn the_fuzzer_finds_a_planted_bug() {
    fn planted(data: &[u8]) {
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(data) {
            assert!(!map.contains_key("ttl"), "planted bug");
        }
    }
    let target = weir_fuzz::Target {
        name: "planted",
        about: "a bug on purpose",
        seeds: &[r#"{"name": "a", "data": {"n": 1}}"#],
        json: true,
        run: planted,
    };
    let report = weir_fuzz::fuzz(&target, Duration::from_secs(5), 7);
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(report.findings[0].0, "planted bug");
}
