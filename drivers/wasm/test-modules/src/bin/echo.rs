//! Echo: stdin to stdout, unchanged.
fn main() {
    weir_wasm_test_modules::out(&weir_wasm_test_modules::stdin());
}
