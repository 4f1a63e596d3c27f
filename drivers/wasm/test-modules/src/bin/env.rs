//! Prints the environment as a JSON object.
fn main() {
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    let body: Vec<String> = vars
        .iter()
        .map(|(k, v)| {
            format!(
                "{}:{}",
                weir_wasm_test_modules::json_string(k),
                weir_wasm_test_modules::json_string(v)
            )
        })
        .collect();
    println!("{{{}}}", body.join(","));
}
