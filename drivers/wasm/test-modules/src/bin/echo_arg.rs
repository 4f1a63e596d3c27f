//! EchoArg: the first argument to stdout.
fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    weir_wasm_test_modules::out(arg.as_bytes());
}
