//! A function's `.env` file: environment variables given to its steps (process, Docker, WASM
//! when granted, Lambda's environment when weir deploys it).
//!
//! The format is the common subset of dotenv files: `KEY=value` per line, an optional `export `
//! before the key, blank lines and `#` comment lines ignored; a value may be wrapped in single
//! quotes (taken literally) or double quotes (`\n`, `\t`, `\"` and `\\` escapes); an unquoted
//! value ends at ` #` (a comment) and is trimmed. No `$VAR` expansion.

/// The name of the file in a function directory.
pub const DOTENV_FILE: &str = ".env";

/// Parses a `.env` text into `(key, value)` pairs, in file order; `Err((line, message))` on the
/// first malformed line (lines from 1).
pub fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut vars = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err((i + 1, "expected KEY=value".into()));
        };
        let key = key.trim();
        let valid_key = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err((
                i + 1,
                format!("{key:?} is not a variable name (letters, digits and _)"),
            ));
        }
        let value = parse_value(value.trim()).map_err(|m| (i + 1, m))?;
        vars.push((key.to_string(), value));
    }
    Ok(vars)
}

fn parse_value(v: &str) -> Result<String, String> {
    if let Some(rest) = v.strip_prefix('\'') {
        let Some(end) = rest.find('\'') else {
            return Err("unterminated single quote".into());
        };
        return Ok(rest[..end].to_string());
    }
    if let Some(rest) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Ok(out),
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(other) => out.push(other),
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Err("unterminated double quote".into());
    }
    let v = match v.find(" #") {
        Some(i) => &v[..i],
        None => v,
    };
    Ok(v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_common_forms() {
        let text = "# comment\n\nA=1\nexport B = two words # note\nC='lit $X \\n'\nD=\"x\\ny \\\"q\\\"\"\nE=\n";
        let vars = parse_dotenv(text).unwrap();
        let expect = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "lit $X \\n"),
            ("D", "x\ny \"q\""),
            ("E", ""),
        ];
        assert_eq!(vars.len(), expect.len());
        for ((k, v), (ek, ev)) in vars.iter().zip(expect) {
            assert_eq!((k.as_str(), v.as_str()), (ek, ev));
        }
    }

    #[test]
    fn malformed_lines_name_their_line() {
        assert_eq!(parse_dotenv("A=1\nnot a var\n").unwrap_err().0, 2);
        assert_eq!(parse_dotenv("1A=x").unwrap_err().0, 1);
        assert_eq!(parse_dotenv("A=\"open").unwrap_err().0, 1);
    }
}
