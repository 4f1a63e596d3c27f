//! Panics: the guest aborts with an `unreachable` trap after printing the message on stderr.
fn main() {
    panic!("the step panicked on purpose");
}
