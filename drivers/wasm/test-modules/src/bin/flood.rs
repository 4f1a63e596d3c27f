//! Flood: 10 MiB on stdout, in 64 KiB writes.
use std::io::Write;

fn main() {
    let chunk = vec![b'w'; 64 * 1024];
    let mut stdout = std::io::stdout().lock();
    for _ in 0..160 {
        if stdout.write_all(&chunk).is_err() {
            std::process::exit(1);
        }
    }
}
