//! The `runtime` keys of a docker step: parsing and validation.

use serde_json::{Map, Value};

/// Runtime keys a docker step may set (besides `type`).
pub const RUNTIME_KEYS: &[&str] = &["image", "memory", "cpus", "network"];

/// Docker refuses memory limits below 6 MiB.
const MIN_MEMORY: u64 = 6 * 1024 * 1024;

/// A docker step's settings, parsed from its `runtime` object.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Settings {
    /// `runtime.image`: run this image as is instead of building one from the step's path.
    pub image: Option<String>,
    /// `runtime.memory` in bytes (swap is disabled: the container gets exactly this much).
    pub memory: Option<u64>,
    /// `runtime.cpus`: how many CPUs' worth of time the container may use.
    pub cpus: Option<f64>,
    /// `runtime.network`: `bridge` (Docker's default), `none`, `host` or a network's name.
    pub network: Option<String>,
}

impl Settings {
    /// Parses a step's `runtime` object; the message names the key and says what is wrong.
    pub fn parse(runtime: &Map<String, Value>) -> Result<Settings, String> {
        let mut settings = Settings::default();
        for (key, value) in runtime {
            match key.as_str() {
                "type" => {}
                "image" => settings.image = Some(non_empty_string(key, value)?),
                "memory" => settings.memory = Some(parse_memory(value)?),
                "cpus" => settings.cpus = Some(parse_cpus(value)?),
                "network" => settings.network = Some(non_empty_string(key, value)?),
                other => {
                    return Err(format!(
                        "unknown key `runtime.{other}` for a docker step (known keys: type, {})",
                        RUNTIME_KEYS.join(", ")
                    ));
                }
            }
        }
        Ok(settings)
    }

    /// `runtime.memory` for people: `64 MiB`.
    pub fn memory_display(&self) -> Option<String> {
        self.memory.map(format_bytes)
    }
}

fn non_empty_string(key: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Value::String(_) => Err(format!("`runtime.{key}` is empty")),
        other => Err(format!(
            "`runtime.{key}` must be a string, got {}",
            json_type(other)
        )),
    }
}

/// `"128m"`, `"128MiB"`, `"1g"`, `"512k"`, `"1.5GiB"` or a number of bytes. Units are binary, as
/// Docker's (`m` = `mb` = `mib` = 1024²).
fn parse_memory(value: &Value) -> Result<u64, String> {
    let bytes = match value {
        Value::Number(n) => n.as_u64().ok_or_else(|| {
            format!("`runtime.memory` must be a whole number of bytes or a size like \"128m\", got {n}")
        })?,
        Value::String(s) => parse_size(s).ok_or_else(|| {
            format!(
                "`runtime.memory` {s:?} is not a size: use a number with a unit like \"128m\", \"128MiB\" or \"1g\""
            )
        })?,
        other => {
            return Err(format!(
                "`runtime.memory` must be a size like \"128m\", got {}",
                json_type(other)
            ));
        }
    };
    if bytes < MIN_MEMORY {
        return Err(format!(
            "`runtime.memory` must be at least 6 MiB (Docker's minimum), got {}",
            format_bytes(bytes)
        ));
    }
    Ok(bytes)
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    let bytes = number * multiplier as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn parse_cpus(value: &Value) -> Result<f64, String> {
    let cpus = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match cpus {
        Some(c) if (0.01..=1024.0).contains(&c) => Ok(c),
        _ => Err(format!(
            "`runtime.cpus` must be a number of CPUs like 0.5 or 2 (at least 0.01), got {value}"
        )),
    }
}

/// Bytes for people: `64 MiB`, `1.5 GiB`, `100000 bytes`.
pub(crate) fn format_bytes(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    // Whole or one-decimal multiples only, so the figure is exact.
    let tenths = |unit: u64| bytes.checked_mul(10).is_some_and(|b| b % unit == 0);
    if bytes >= GIB && tenths(GIB) {
        format!("{} GiB", bytes as f64 / GIB as f64)
    } else if bytes >= MIB && tenths(MIB) {
        format!("{} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Settings, String> {
        Settings::parse(v.as_object().expect("object"))
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(parse_size("128m"), Some(128 << 20));
        assert_eq!(parse_size("128MiB"), Some(128 << 20));
        assert_eq!(parse_size("128 MB"), Some(128 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("7000000"), Some(7_000_000));
        assert_eq!(parse_size("12q"), None);
        assert_eq!(parse_size("m"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn all_keys_parse() {
        let s = parse(
            json!({"type": "docker", "image": "app:1", "memory": "64MiB",
                             "cpus": "0.5", "network": "none"}),
        )
        .expect("valid");
        assert_eq!(s.image.as_deref(), Some("app:1"));
        assert_eq!(s.memory, Some(64 << 20));
        assert_eq!(s.memory_display().as_deref(), Some("64 MiB"));
        assert_eq!(s.cpus, Some(0.5));
        assert_eq!(s.network.as_deref(), Some("none"));
        assert_eq!(
            parse(json!({"memory": 67108864, "cpus": 2})).map(|s| (s.memory, s.cpus)),
            Ok((Some(64 << 20), Some(2.0)))
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = parse(json!({"type": "docker", "mem": "64m"})).unwrap_err();
        assert!(err.contains("`runtime.mem`"), "{err}");
        assert!(err.contains("memory"), "{err}");
        let err = parse(json!({"memory": "lots"})).unwrap_err();
        assert!(
            err.contains("runtime.memory") && err.contains("lots"),
            "{err}"
        );
        let err = parse(json!({"memory": "1m"})).unwrap_err();
        assert!(err.contains("at least 6 MiB"), "{err}");
        let err = parse(json!({"cpus": "many"})).unwrap_err();
        assert!(err.contains("runtime.cpus"), "{err}");
        let err = parse(json!({"cpus": 0})).unwrap_err();
        assert!(err.contains("runtime.cpus"), "{err}");
        let err = parse(json!({"image": ""})).unwrap_err();
        assert!(err.contains("runtime.image"), "{err}");
        let err = parse(json!({"network": 1})).unwrap_err();
        assert!(
            err.contains("runtime.network") && err.contains("a number"),
            "{err}"
        );
    }

    #[test]
    fn bytes_format_for_people() {
        assert_eq!(format_bytes(64 << 20), "64 MiB");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_bytes(7_000_001), "7000001 bytes");
    }
}
