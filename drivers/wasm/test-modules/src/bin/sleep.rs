//! Sleep: 30 seconds in the host (`poll_oneoff`), then prints `{"slept":true}`.
fn main() {
    std::thread::sleep(std::time::Duration::from_secs(30));
    println!("{{\"slept\":true}}");
}
