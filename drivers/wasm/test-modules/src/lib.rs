//! Helpers shared by the test step programs (each binary in `src/bin` is one `.wasm` module).

use std::io::{Read, Write};

/// All of stdin.
pub fn stdin() -> Vec<u8> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).expect("read stdin");
    buf
}

/// All of stdin as text, trimmed.
pub fn stdin_text() -> String {
    String::from_utf8_lossy(&stdin()).trim().to_string()
}

/// Writes `bytes` to stdout and flushes.
pub fn out(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes).expect("write stdout");
    stdout.flush().expect("flush stdout");
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
