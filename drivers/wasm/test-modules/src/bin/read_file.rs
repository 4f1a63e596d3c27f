//! Prints the content of the file named on stdin as a JSON string, or the error on stderr
//! with exit code 2.
fn main() {
    let path = weir_wasm_test_modules::stdin_text();
    match std::fs::read_to_string(&path) {
        Ok(text) => println!(
            "{{\"content\":{}}}",
            weir_wasm_test_modules::json_string(&text)
        ),
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(2);
        }
    }
}
