//! The step's `runtime` object (`type: "wasm"`): its keys, parsed and validated.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Keys a wasm step's `runtime` object may hold.
pub(crate) const KNOWN_KEYS: &[&str] = &["type", "memory", "fuel", "dirs", "env"];

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
/// The smallest `runtime.memory` accepted: one wasm page.
const MIN_MEMORY: u64 = 64 * KIB;

/// What a step's `runtime` object asks of the driver.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepConfig {
    /// Most bytes of linear memory the instance may have (`runtime.memory`).
    pub memory: u64,
    /// Fuel the instance may burn (`runtime.fuel`), unlimited when `None`.
    pub fuel: Option<u64>,
    /// Host directories the guest may open (`runtime.dirs`).
    pub dirs: Vec<DirGrant>,
    /// Which of the function's `.env` variables the guest sees (`runtime.env`).
    pub env: EnvGrant,
}

/// One host directory granted to the guest.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DirGrant {
    /// The host directory as written (relative to the function directory unless absolute).
    pub host: PathBuf,
    /// Where the guest sees it (a WASI preopen name such as `/data`).
    pub guest: String,
    /// Whether the guest may create, write and delete files in it.
    pub writable: bool,
}

impl DirGrant {
    /// The host directory, resolved against the function directory.
    pub fn host_path(&self, function_dir: &Path) -> PathBuf {
        function_dir.join(&self.host)
    }
}

/// The function's `.env` variables the guest sees.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EnvGrant {
    /// None (the default).
    None,
    /// All of them (`"env": true`).
    All,
    /// These names only (`"env": ["API_URL"]`).
    Only(Vec<String>),
}

impl EnvGrant {
    /// Whether the variable `name` is granted.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            EnvGrant::None => false,
            EnvGrant::All => true,
            EnvGrant::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// Parses a step's `runtime` object; `max_memory` caps `memory`, `default_memory` is used
/// when it is absent. The message names the key and what to write instead.
pub(crate) fn parse(
    runtime: &Map<String, Value>,
    default_memory: u64,
    max_memory: u64,
) -> Result<StepConfig, String> {
    if let Some(key) = runtime.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `runtime.{key}` for a wasm step (known: {})",
            KNOWN_KEYS.join(", ")
        ));
    }
    let memory = match runtime.get("memory") {
        None | Some(Value::Null) => default_memory,
        Some(v) => parse_size(v).map_err(|m| format!("`runtime.memory` {m}"))?,
    };
    if memory < MIN_MEMORY {
        return Err(format!(
            "`runtime.memory` must be at least 64KiB (one wasm page), got {}",
            show_size(memory)
        ));
    }
    if memory > max_memory {
        return Err(format!(
            "`runtime.memory` of {} is over this driver's limit of {}",
            show_size(memory),
            show_size(max_memory)
        ));
    }
    let fuel = match runtime.get("fuel") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(f) if f > 0 => Some(f),
            _ => {
                return Err(format!(
                    "`runtime.fuel` must be a positive integer, got {n}"
                ));
            }
        },
        Some(v) => {
            return Err(format!(
                "`runtime.fuel` must be a positive integer, got {}",
                type_name(v)
            ));
        }
    };
    Ok(StepConfig {
        memory,
        fuel,
        dirs: parse_dirs(runtime.get("dirs"))?,
        env: parse_env(runtime.get("env"))?,
    })
}

/// `"dirs": {"data": "/data", "out": {"guest": "/out", "writable": true}}`.
fn parse_dirs(v: Option<&Value>) -> Result<Vec<DirGrant>, String> {
    const SHAPE: &str = r#"an object of host directory → guest path, like {"data": "/data"} or {"out": {"guest": "/out", "writable": true}}"#;
    let map = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(format!(
                "`runtime.dirs` must be {SHAPE}, got {}",
                type_name(other)
            ));
        }
    };
    let mut dirs = Vec::with_capacity(map.len());
    for (host, grant) in map {
        let (guest, writable) = match grant {
            Value::String(guest) => (guest.clone(), false),
            Value::Object(o) => {
                if let Some(k) = o
                    .keys()
                    .find(|k| !matches!(k.as_str(), "guest" | "writable"))
                {
                    return Err(format!(
                        "unknown key `{k}` in `runtime.dirs.{host}` (known: guest, writable)"
                    ));
                }
                let guest = match o.get("guest") {
                    Some(Value::String(g)) => g.clone(),
                    _ => {
                        return Err(format!(
                            "`runtime.dirs.{host}.guest` must be the guest path, like \"/data\""
                        ));
                    }
                };
                let writable = match o.get("writable") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(other) => {
                        return Err(format!(
                            "`runtime.dirs.{host}.writable` must be true or false, got {}",
                            type_name(other)
                        ));
                    }
                };
                (guest, writable)
            }
            other => {
                return Err(format!(
                    "`runtime.dirs.{host}` must be a guest path or {{\"guest\": …, \"writable\": …}}, got {}",
                    type_name(other)
                ));
            }
        };
        if host.is_empty() || guest.is_empty() {
            return Err(format!("`runtime.dirs` must be {SHAPE}: empty path"));
        }
        dirs.push(DirGrant {
            host: PathBuf::from(host),
            guest,
            writable,
        });
    }
    Ok(dirs)
}

/// `"env": true` (all of `.env`), `false` (none) or `["NAME", …]`.
fn parse_env(v: Option<&Value>) -> Result<EnvGrant, String> {
    const SHAPE: &str =
        r#"true (all of the function's .env), false, or a list of names like ["API_URL"]"#;
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(EnvGrant::None),
        Some(Value::Bool(true)) => Ok(EnvGrant::All),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(name) if !name.is_empty() => Ok(name.clone()),
                other => Err(format!(
                    "`runtime.env` must be {SHAPE}; {other} is not a variable name"
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(EnvGrant::Only),
        Some(other) => Err(format!(
            "`runtime.env` must be {SHAPE}, got {}",
            type_name(other)
        )),
    }
}

/// A size: a number of bytes, or text like `"64MiB"`, `"512 KiB"`, `"1G"` (binary units:
/// K/KB/KiB = 1024, M/MB/MiB = 1024², G/GB/GiB = 1024³).
pub(crate) fn parse_size(v: &Value) -> Result<u64, String> {
    const SHAPE: &str = r#"must be a size like "64MiB", "512KiB", "1GiB" or a number of bytes"#;
    let text = match v {
        Value::Number(n) => return n.as_u64().ok_or_else(|| format!("{SHAPE}, got {n}")),
        Value::String(s) => s.trim(),
        other => return Err(format!("{SHAPE}, got {}", type_name(other))),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{SHAPE}, got {text:?}"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB,
        _ => return Err(format!("{SHAPE}, got {text:?}")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{SHAPE}, got {text:?} (too large)"))
}

/// A size for people: `64 MiB`, `1536 KiB`, `100 bytes`.
pub(crate) fn show_size(bytes: u64) -> String {
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn runtime(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn parse_ok(v: Value) -> StepConfig {
        parse(&runtime(v), 64 * MIB, 4 * GIB).expect("valid runtime")
    }

    fn parse_err(v: Value) -> String {
        parse(&runtime(v), 64 * MIB, 4 * GIB).expect_err("invalid runtime")
    }

    #[test]
    fn defaults_grant_nothing() {
        let c = parse_ok(json!({"type": "wasm"}));
        assert_eq!(
            c,
            StepConfig {
                memory: 64 * MIB,
                fuel: None,
                dirs: vec![],
                env: EnvGrant::None
            }
        );
    }

    #[test]
    fn sizes_take_binary_units() {
        for (v, bytes) in [
            (json!("64MiB"), 64 * MIB),
            (json!("64 MiB"), 64 * MIB),
            (json!("64mb"), 64 * MIB),
            (json!("512K"), 512 * KIB),
            (json!("1GiB"), GIB),
            (json!(1_048_576), MIB),
            (json!("2097152"), 2 * MIB),
        ] {
            assert_eq!(parse_size(&v), Ok(bytes), "{v}");
        }
        for v in [
            json!("lots"),
            json!("64 TiB"),
            json!("-1"),
            json!(1.5),
            json!(true),
        ] {
            let err = parse_size(&v).expect_err("bad size");
            assert!(err.contains("\"64MiB\""), "{err}");
        }
        assert!(
            parse_size(&json!("99999999999999999999G"))
                .unwrap_err()
                .contains("64MiB")
        );
    }

    #[test]
    fn memory_is_bounded() {
        assert_eq!(
            parse_ok(json!({"type": "wasm", "memory": "128MiB"})).memory,
            128 * MIB
        );
        assert!(parse_err(json!({"memory": "8GiB"})).contains("over this driver's limit of 4 GiB"));
        assert!(parse_err(json!({"memory": 100})).contains("at least 64KiB"));
        assert!(parse_err(json!({"memory": "a lot"})).starts_with("`runtime.memory` must be"));
    }

    #[test]
    fn fuel_is_a_positive_integer() {
        assert_eq!(parse_ok(json!({"fuel": 1000})).fuel, Some(1000));
        for bad in [json!(0), json!(-5), json!(1.5), json!("1000")] {
            assert!(
                parse_err(json!({ "fuel": bad }))
                    .contains("`runtime.fuel` must be a positive integer"),
                "{bad}"
            );
        }
    }

    #[test]
    fn dirs_are_read_only_unless_writable() {
        let c = parse_ok(
            json!({"dirs": {"data": "/data", "out": {"guest": "/out", "writable": true}}}),
        );
        assert_eq!(
            c.dirs,
            vec![
                DirGrant {
                    host: "data".into(),
                    guest: "/data".into(),
                    writable: false
                },
                DirGrant {
                    host: "out".into(),
                    guest: "/out".into(),
                    writable: true
                },
            ]
        );
        assert_eq!(
            c.dirs[0].host_path(Path::new("/fn")),
            PathBuf::from("/fn/data")
        );
        assert!(parse_err(json!({"dirs": ["data:/data"]})).contains("must be an object"));
        assert!(parse_err(json!({"dirs": {"data": 3}})).contains("`runtime.dirs.data`"));
        assert!(
            parse_err(json!({"dirs": {"data": {"guest": "/d", "rw": true}}}))
                .contains("unknown key `rw`")
        );
        assert!(
            parse_err(json!({"dirs": {"data": {"writable": true}}})).contains(".guest` must be")
        );
        assert!(
            parse_err(json!({"dirs": {"data": {"guest": "/d", "writable": "yes"}}}))
                .contains("true or false")
        );
        assert!(parse_err(json!({"dirs": {"data": ""}})).contains("empty path"));
    }

    #[test]
    fn env_is_all_none_or_listed() {
        assert_eq!(parse_ok(json!({"env": true})).env, EnvGrant::All);
        assert_eq!(parse_ok(json!({"env": false})).env, EnvGrant::None);
        let only = parse_ok(json!({"env": ["A", "B"]})).env;
        assert_eq!(only, EnvGrant::Only(vec!["A".into(), "B".into()]));
        assert!(only.allows("A") && !only.allows("C"));
        assert!(!EnvGrant::None.allows("A") && EnvGrant::All.allows("A"));
        assert!(parse_err(json!({"env": "A"})).contains("`runtime.env` must be"));
        assert!(parse_err(json!({"env": [1]})).contains("not a variable name"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse_err(json!({"type": "wasm", "memroy": "64MiB"}));
        assert!(
            err.contains("`runtime.memroy`") && err.contains("known: type, memory"),
            "{err}"
        );
    }

    #[test]
    fn sizes_show_in_the_largest_whole_unit() {
        assert_eq!(show_size(64 * MIB), "64 MiB");
        assert_eq!(show_size(4 * GIB), "4 GiB");
        assert_eq!(show_size(1536 * KIB), "1536 KiB");
        assert_eq!(show_size(100), "100 bytes");
    }
}
