//! Allocates (and touches) the number of MiB given on stdin, then prints `{"allocated_mib":N}`.
fn main() {
    let mib: usize = weir_wasm_test_modules::stdin_text().parse().unwrap_or(1024);
    let mut blocks = Vec::new();
    for i in 0..mib {
        blocks.push(vec![(i % 251) as u8 + 1; 1024 * 1024]);
    }
    let total: usize = blocks.iter().map(|b| b[b.len() - 1] as usize).sum();
    std::hint::black_box(total);
    println!("{{\"allocated_mib\":{}}}", blocks.len());
}
