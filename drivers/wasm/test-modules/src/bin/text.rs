//! Text: prints a line that is not JSON.
fn main() {
    println!("hello weir");
}
