//! weir's fuzzer, on stable Rust and without dependencies of its own: every parser of input
//! from outside (event bodies, function definitions, CEL expressions, durations, driver URLs,
//! the Celery and Faktory codecs) is fed inputs mutated from valid seeds for a time budget. A
//! panic, or a broken invariant the target asserts (an accepted event that does not survive
//! its own serialization), is a finding: the input is kept and reported.
//!
//! It is a mutational fuzzer without coverage feedback (that needs nightly's sanitizer
//! coverage): byte mutations (flips, insertions, deletions, repeats, splices, dictionary tokens)
//! and, for JSON inputs, tree mutations (a node replaced by another type, an extreme number, a
//! long or odd string, a copy of another node; keys dropped or added), so that most inputs
//! still parse as JSON and reach the validation behind the parser.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

pub mod mutate;
pub mod targets;

pub use mutate::Rng;

/// A fuzz target: a parser and what must hold of its answer.
pub struct Target {
    /// Its name (`weir-fuzz NAME`).
    pub name: &'static str,
    /// What it feeds.
    pub about: &'static str,
    /// Valid inputs to start from.
    pub seeds: &'static [&'static str],
    /// Whether inputs are JSON (tree mutations apply).
    pub json: bool,
    /// Runs one input; panics on a finding.
    pub run: fn(&[u8]),
}

/// What a fuzzing session found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Inputs tried.
    pub inputs: u64,
    /// Inputs that parsed as JSON (for JSON targets), a measure of how deep inputs reach.
    pub json_inputs: u64,
    /// Findings: the panic message and the input, the first of each message.
    pub findings: Vec<(String, Vec<u8>)>,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Fuzzes `target` for `budget` from the random seed `seed`.
pub fn fuzz(target: &Target, budget: Duration, seed: u64) -> Report {
    let mut rng = Rng::new(seed);
    let mut corpus: Vec<Vec<u8>> = target.seeds.iter().map(|s| s.as_bytes().to_vec()).collect();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut report = Report::default();
    let started = Instant::now();
    // Findings are collected, not printed as they happen: this thread's panics are quiet while
    // it fuzzes (other threads', and later ones, are printed as before).
    quiet_panics_here();
    let _quiet = Quiet::start();
    // Every seed first, as it is.
    let mut queue: Vec<Vec<u8>> = corpus.clone();
    while started.elapsed() < budget {
        let input = match queue.pop() {
            Some(seed) => seed,
            None => mutate::mutate(&mut rng, &corpus, target.json),
        };
        report.inputs += 1;
        let parses = target.json && serde_json::from_slice::<serde_json::Value>(&input).is_ok();
        if parses {
            report.json_inputs += 1;
        }
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (target.run)(&input))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned());
            if !report.findings.iter().any(|(m, _)| *m == message) {
                report.findings.push((message, input.clone()));
            }
        }
        // Some inputs join the corpus, for variety (no coverage to say which are new); for a
        // JSON target only JSON, so that tree mutations keep reaching past the parser.
        if corpus.len() < 512 && rng.below(100) == 0 && (parses || !target.json) {
            corpus.push(input);
        }
    }
    report.elapsed = started.elapsed();
    report
}

thread_local! {
    /// Whether this thread is fuzzing: its panics are findings, not to be printed.
    static FUZZING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs, once per process, a panic hook that is silent on a thread that is fuzzing and
/// otherwise does what the hook before it did.
fn quiet_panics_here() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !FUZZING.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Marks this thread as fuzzing until dropped (also when a panic unwinds past it).
struct Quiet;

impl Quiet {
    fn start() -> Quiet {
        FUZZING.with(|f| f.set(true));
        Quiet
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        FUZZING.with(|f| f.set(false));
    }
}

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    targets::ALL.iter().find(|t| t.name == name)
}
