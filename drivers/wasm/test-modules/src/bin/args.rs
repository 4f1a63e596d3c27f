//! Prints `{"argc":N,"argv0":"…","arg1_len":N,"stdin":N}`: how the input arrived.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let stdin = weir_wasm_test_modules::stdin().len();
    println!(
        "{{\"argc\":{},\"argv0\":{},\"arg1_len\":{},\"stdin\":{}}}",
        args.len(),
        weir_wasm_test_modules::json_string(args.first().map(String::as_str).unwrap_or("")),
        args.get(1).map_or(0, String::len),
        stdin
    );
}
