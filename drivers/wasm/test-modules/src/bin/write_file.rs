//! Stdin is `PATH\nCONTENT`: writes CONTENT to PATH and prints `{"written":true}`, or the
//! error on stderr with exit code 2.
fn main() {
    let input = String::from_utf8_lossy(&weir_wasm_test_modules::stdin()).into_owned();
    let (path, content) = input.split_once('\n').unwrap_or((input.as_str(), ""));
    match std::fs::write(path, content) {
        Ok(()) => println!("{{\"written\":true}}"),
        Err(e) => {
            eprintln!("cannot write {path}: {e}");
            std::process::exit(2);
        }
    }
}
