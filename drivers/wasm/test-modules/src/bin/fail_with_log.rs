//! FailWithLog: `boom` on stderr, exit code 3.
fn main() {
    eprintln!("boom");
    std::process::exit(3);
}
