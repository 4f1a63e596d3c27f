//! ClientError: prints `{"status":422}` and exits 0.
fn main() {
    println!("{{\"status\":422}}");
}
