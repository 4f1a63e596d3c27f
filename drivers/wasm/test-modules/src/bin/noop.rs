//! Does nothing: the benchmark's step.
fn main() {}
