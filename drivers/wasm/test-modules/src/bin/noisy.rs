//! 300 000 bytes of `a` then `END` on stderr, `{}` on stdout.
use std::io::Write;

fn main() {
    let mut stderr = std::io::stderr().lock();
    stderr
        .write_all(&vec![b'a'; 300_000])
        .expect("write stderr");
    stderr.write_all(b"END\n").expect("write stderr");
    println!("{{}}");
}
