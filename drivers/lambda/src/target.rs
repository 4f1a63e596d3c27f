//! A lambda step's `runtime` keys: which function it invokes, or how the driver deploys it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use weir_core::duration::parse_duration;

/// Runtime of functions deployed from a directory holding `bootstrap`, unless
/// `runtime.runtime` says otherwise: Lambda's OS-only runtime, which runs that executable.
pub const DEFAULT_RUNTIME: &str = "provided.al2023";
/// Handler of `provided.*` functions unless `runtime.handler` says otherwise.
pub const DEFAULT_HANDLER: &str = "bootstrap";
/// Runtime of functions deployed from a directory holding `lambda_function.py` (the AWS
/// console's layout), unless `runtime.runtime` says otherwise.
pub const PYTHON_RUNTIME: &str = "python3.12";
/// Runtime of functions deployed from a directory holding `index.mjs` or `index.js`.
pub const NODE_RUNTIME: &str = "nodejs20.x";

/// The runtime and handler a step directory's layout implies, as the AWS console and `sam`
/// make them: `bootstrap` (provided.al2023, `bootstrap`), `lambda_function.py` (python3.12,
/// `lambda_function.lambda_handler`), `index.mjs` or `index.js` (nodejs20.x, `index.handler`).
fn layout(dir: &Path) -> Option<(&'static str, &'static str)> {
    let has = |f: &str| dir.join(f).is_file();
    if has("bootstrap") {
        Some((DEFAULT_RUNTIME, DEFAULT_HANDLER))
    } else if has("lambda_function.py") {
        Some((PYTHON_RUNTIME, "lambda_function.lambda_handler"))
    } else if has("index.mjs") || has("index.js") {
        Some((NODE_RUNTIME, "index.handler"))
    } else {
        None
    }
}
/// Execution role of deployed functions unless the step or the driver config names another:
/// the role `weir-lambda` of the caller's account.
pub const DEFAULT_ROLE_NAME: &str = "weir-lambda";
/// Lambda timeout of deployed functions when neither `runtime.timeout` nor the step's timeout is
/// known: weir's default step timeout (5 minutes).
pub const DEFAULT_FUNCTION_TIMEOUT: Duration = weir_core::function::DEFAULT_STEP_TIMEOUT;

/// The `runtime` keys a lambda step may set.
const KEYS: &[&str] = &[
    "type",
    "function",
    "qualifier",
    "handler",
    "runtime",
    "role",
    "memory",
    "timeout",
];

/// The keys that only apply to a function the driver deploys.
const DEPLOY_KEYS: &[&str] = &["handler", "runtime", "role", "memory", "timeout"];

/// Lambda's longest function name (a name alone, not an ARN).
const MAX_NAME_LEN: usize = 64;

/// What a lambda step runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    /// An existing function (`runtime.function`).
    Existing(FunctionRef),
    /// A function deployed from the step's `path`.
    Deploy(DeploySettings),
}

/// An existing function: its name or ARN (without qualifier) and its version or alias.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FunctionRef {
    /// A name, partial ARN or ARN, as Lambda's `FunctionName` takes it.
    pub function: String,
    /// A version or alias (`Qualifier`).
    pub qualifier: Option<String>,
}

/// How a function deployed from a step's `path` is configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DeploySettings {
    /// Lambda runtime identifier; empty until [`deploy_dir`] infers it from the directory.
    pub runtime: String,
    /// Handler; empty until [`deploy_dir`] infers it from the directory.
    pub handler: String,
    /// Execution role (ARN or name); `None`: the driver's default.
    pub role: Option<String>,
    /// Memory in MB; `None`: Lambda's default (128 MB), and left as it is on updates.
    pub memory: Option<i32>,
    /// Lambda's own timeout, in seconds.
    pub timeout_secs: i32,
}

/// Parses a step's `runtime` object; the message names the key that is wrong. A deployed
/// function's Lambda timeout is `runtime.timeout`, else `step_timeout` (the step's timeout,
/// rounded up to whole seconds, at most Lambda's 900 s), else 5 minutes.
pub(crate) fn parse(
    runtime: &Map<String, Value>,
    step_timeout: Option<Duration>,
) -> Result<Target, String> {
    if let Some(unknown) = runtime.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `runtime.{unknown}` for a lambda step (known: {})",
            KEYS.join(", ")
        ));
    }
    let qualifier = string(runtime, "qualifier")?;
    if let Some(function) = string(runtime, "function")? {
        if let Some(key) = DEPLOY_KEYS.iter().find(|k| runtime.contains_key(**k)) {
            return Err(format!(
                "`runtime.{key}` only applies to a lambda step deployed from its `path`; \
                 a step with `runtime.function` invokes that function as it is (remove one of them)"
            ));
        }
        return parse_function_ref(function, qualifier).map(Target::Existing);
    }
    if qualifier.is_some() {
        return Err(
            "`runtime.qualifier` needs `runtime.function` (a deployed step is always invoked at $LATEST)"
                .into(),
        );
    }
    Ok(Target::Deploy(DeploySettings {
        runtime: string(runtime, "runtime")?.unwrap_or("").to_owned(),
        handler: string(runtime, "handler")?.unwrap_or("").to_owned(),
        role: string(runtime, "role")?.map(str::to_owned),
        memory: memory(runtime)?,
        timeout_secs: timeout(runtime, step_timeout)?,
    }))
}

/// The directory a deployed step is packaged from — `path` (relative to `dir`), which must be a
/// directory — and its settings with the runtime and handler its layout implies where the
/// step does not set them (see `layout`); a `provided.*` runtime needs `bootstrap`.
pub(crate) fn deploy_dir(
    settings: &DeploySettings,
    path: Option<&Path>,
    dir: &Path,
) -> Result<(PathBuf, DeploySettings), String> {
    let Some(path) = path else {
        return Err(
            "a lambda step needs `runtime.function` (an existing function) or a `path` to a directory to deploy"
                .into(),
        );
    };
    let full = dir.join(path);
    match std::fs::metadata(&full) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "a lambda step deploys a directory, but its path is a file: {} (put it in a directory, or set `runtime.function`)",
                full.display()
            ));
        }
        Err(_) => {
            return Err(format!(
                "the directory of a lambda step is not found: {}",
                full.display()
            ));
        }
    }
    let mut resolved = settings.clone();
    let implied = layout(&full);
    if resolved.runtime.is_empty() {
        let Some((runtime, _)) = implied else {
            return Err(format!(
                "a lambda step deploys its directory with the runtime its files imply: `bootstrap` \
                 (provided.al2023), `lambda_function.py` (python3.12) or `index.mjs` / `index.js` \
                 (nodejs20.x) at the top of {}, which has none of them (add one, or set \
                 `runtime.runtime` and `runtime.handler`, e.g. python3.12 and main.handler)",
                full.display()
            ));
        };
        resolved.runtime = runtime.to_owned();
    }
    if resolved.handler.is_empty() {
        resolved.handler = match implied {
            Some((runtime, handler)) if same_family(runtime, &resolved.runtime) => {
                handler.to_owned()
            }
            _ if resolved.runtime.starts_with("provided") => DEFAULT_HANDLER.to_owned(),
            _ => {
                return Err(format!(
                    "a {} function needs `runtime.handler` (e.g. main.handler): {} has no file \
                     that implies one",
                    resolved.runtime,
                    full.display()
                ));
            }
        };
    }
    if resolved.runtime.starts_with("provided") && !full.join("bootstrap").is_file() {
        return Err(format!(
            "a {} function runs the executable `bootstrap` at the top of its directory, and {} has none \
             (add it, or set `runtime.runtime` and `runtime.handler`, e.g. python3.12 and main.handler)",
            resolved.runtime,
            full.display()
        ));
    }
    Ok((full, resolved))
}

/// Whether two runtime identifiers are of one language (`python3.12` and `python3.11`).
fn same_family(a: &str, b: &str) -> bool {
    let family = |r: &str| {
        r.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == 'x')
            .to_owned()
    };
    family(a) == family(b)
}

/// The name of the function the driver deploys for a step: `<function-id>-<step-id>` when that
/// is a valid Lambda name (letters, digits, `-`, `_`, at most 64 characters); otherwise the
/// other characters become `-` and, when something had to change, the name is cut to 55
/// characters and gets `-` and 8 hex digits of a hash of the original appended.
pub fn deployed_function_name(function_id: &str, step_id: &str) -> String {
    let raw = format!("{function_id}-{step_id}");
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if raw.len() <= MAX_NAME_LEN && raw.chars().all(valid) {
        return raw;
    }
    let clean: String = raw
        .chars()
        .map(|c| if valid(c) { c } else { '-' })
        .take(MAX_NAME_LEN - 9)
        .collect();
    let hash = hex::encode(&Sha256::digest(raw.as_bytes())[..4]);
    format!("{clean}-{hash}")
}

/// Splits `name[:qualifier]`, `account:function:name[:qualifier]` or
/// `arn:partition:lambda:region:account:function:name[:qualifier]`.
fn parse_function_ref(raw: &str, qualifier_key: Option<&str>) -> Result<FunctionRef, String> {
    let parts: Vec<&str> = raw.split(':').collect();
    let base = if raw.starts_with("arn:") {
        if !(parts.len() == 7 || parts.len() == 8) || parts[2] != "lambda" || parts[5] != "function"
        {
            return Err(format!(
                "`runtime.function` {raw:?} is not a Lambda function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER])"
            ));
        }
        7
    } else if parts.len() >= 3 && parts[1] == "function" {
        if parts.len() > 4 {
            return Err(format!(
                "`runtime.function` {raw:?} is not a partial ARN (ACCOUNT:function:NAME[:QUALIFIER])"
            ));
        }
        3
    } else {
        if parts.len() > 2 {
            return Err(format!(
                "`runtime.function` {raw:?} is not a function name (NAME[:QUALIFIER]) or an ARN"
            ));
        }
        1
    };
    let name = parts[base - 1];
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "`runtime.function` {raw:?}: the function name {name:?} must be 1 to 64 letters, digits, `-` or `_`"
        ));
    }
    let in_name = parts.get(base).copied();
    let qualifier = match (in_name, qualifier_key) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!(
                "`runtime.function` {raw:?} names qualifier {a:?} but `runtime.qualifier` is {b:?} (keep one)"
            ));
        }
        (a, b) => a.or(b),
    };
    if let Some(q) = qualifier
        && (q.is_empty()
            || q.len() > 128
            || !q
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '$'))
    {
        return Err(format!(
            "the qualifier {q:?} of `runtime.function` must be a version ($LATEST, 1, 2, …) or an alias name"
        ));
    }
    Ok(FunctionRef {
        function: parts[..base].join(":"),
        qualifier: qualifier.map(str::to_owned),
    })
}

/// A string key: `None` when absent or null.
fn string<'a>(runtime: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match runtime.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.as_str())),
        Some(Value::String(_)) => Err(format!("`runtime.{key}` is empty")),
        Some(other) => Err(format!("`runtime.{key}` must be a string, not {other}")),
    }
}

/// `runtime.memory`: MB, 128 to 10240.
fn memory(runtime: &Map<String, Value>) -> Result<Option<i32>, String> {
    let Some(value) = runtime.get("memory").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match value.as_u64() {
        Some(mb @ 128..=10240) => Ok(Some(mb as i32)),
        _ => Err(format!(
            "`runtime.memory` must be a whole number of MB from 128 to 10240, not {value}"
        )),
    }
}

/// `runtime.timeout`: seconds (a number, or a duration such as "30s" or "5m"), 1 to 900; when
/// absent, the step's timeout in whole seconds (rounded up, clamped to 1..=900).
fn timeout(runtime: &Map<String, Value>, step_timeout: Option<Duration>) -> Result<i32, String> {
    let secs = match runtime.get("timeout") {
        None | Some(Value::Null) => {
            let step = step_timeout.unwrap_or(DEFAULT_FUNCTION_TIMEOUT);
            let secs = step.as_secs() + u64::from(step.subsec_nanos() > 0);
            return Ok(secs.clamp(1, 900) as i32);
        }
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            format!("`runtime.timeout` must be a whole number of seconds, not {n}")
        })?,
        Some(Value::String(s)) => {
            let d = parse_duration(s).map_err(|e| format!("`runtime.timeout`: {e}"))?;
            if d.subsec_nanos() != 0 {
                return Err(format!("`runtime.timeout` {s:?} must be whole seconds"));
            }
            d.as_secs()
        }
        Some(other) => {
            return Err(format!(
                "`runtime.timeout` must be seconds or a duration like \"30s\", not {other}"
            ));
        }
    };
    if !(1..=900).contains(&secs) {
        return Err(format!(
            "`runtime.timeout` is {secs} s; Lambda allows 1 s to 900 s (15 minutes)"
        ));
    }
    Ok(secs as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn runtime(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn existing(function: &str, qualifier: Option<&str>) -> Target {
        Target::Existing(FunctionRef {
            function: function.into(),
            qualifier: qualifier.map(str::to_owned),
        })
    }

    #[test]
    fn function_names_arns_and_qualifiers() {
        let arn = "arn:aws:lambda:eu-west-1:123456789012:function:send-sms";
        let cases = [
            (json!({"function": "send-sms"}), existing("send-sms", None)),
            (
                json!({"function": "send-sms:prod"}),
                existing("send-sms", Some("prod")),
            ),
            (
                json!({"function": "send-sms", "qualifier": "7"}),
                existing("send-sms", Some("7")),
            ),
            (
                json!({"function": "send-sms:$LATEST", "qualifier": "$LATEST"}),
                existing("send-sms", Some("$LATEST")),
            ),
            (json!({"function": arn}), existing(arn, None)),
            (
                json!({"function": format!("{arn}:live")}),
                existing(arn, Some("live")),
            ),
            (
                json!({"function": "123456789012:function:send-sms:3"}),
                existing("123456789012:function:send-sms", Some("3")),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse(&runtime(value.clone()), None),
                Ok(expected),
                "{value}"
            );
        }
    }

    #[test]
    fn bad_keys_are_named() {
        let cases = [
            (json!({"functon": "x"}), "unknown key `runtime.functon`"),
            (
                json!({"function": 3}),
                "`runtime.function` must be a string",
            ),
            (json!({"function": ""}), "`runtime.function` is empty"),
            (json!({"function": "a:b:c"}), "is not a function name"),
            (
                json!({"function": "arn:aws:s3:::bucket"}),
                "not a Lambda function ARN",
            ),
            (json!({"function": "bad name"}), "must be 1 to 64 letters"),
            (
                json!({"function": "f:prod", "qualifier": "dev"}),
                "keep one",
            ),
            (json!({"function": "f:pr od"}), "must be a version"),
            (
                json!({"function": "f", "handler": "x"}),
                "`runtime.handler` only applies",
            ),
            (json!({"qualifier": "prod"}), "needs `runtime.function`"),
            (json!({"memory": 64}), "128 to 10240"),
            (json!({"memory": "1GB"}), "128 to 10240"),
            (json!({"timeout": 901}), "1 s to 900 s"),
            (json!({"timeout": "1500ms"}), "whole seconds"),
            (json!({"timeout": "soon"}), "invalid duration"),
            (json!({"timeout": true}), "seconds or a duration"),
        ];
        for (value, message) in cases {
            let err = parse(&runtime(value.clone()), None).unwrap_err();
            assert!(err.contains(message), "{value}: {err}");
        }
    }

    #[test]
    fn deploy_defaults_and_settings() {
        let defaults = parse(&runtime(json!({"type": "lambda"})), None).unwrap();
        assert_eq!(
            defaults,
            Target::Deploy(DeploySettings {
                runtime: String::new(),
                handler: String::new(),
                role: None,
                memory: None,
                timeout_secs: 300,
            })
        );
        let custom = parse(
            &runtime(json!({"type": "lambda", "runtime": "python3.12",
            "handler": "main.handler", "role": "arn:aws:iam::123456789012:role/r",
            "memory": 512, "timeout": "2m"})),
            None,
        )
        .unwrap();
        assert_eq!(
            custom,
            Target::Deploy(DeploySettings {
                runtime: "python3.12".into(),
                handler: "main.handler".into(),
                role: Some("arn:aws:iam::123456789012:role/r".into()),
                memory: Some(512),
                timeout_secs: 120,
            })
        );
        let Target::Deploy(seconds) = parse(&runtime(json!({"timeout": 30})), None).unwrap() else {
            panic!("deploy")
        };
        assert_eq!(seconds.timeout_secs, 30);
    }

    /// Without `runtime.timeout` a deployed function gets the step's timeout, so Lambda stops
    /// it when weir gives up on the attempt; `runtime.timeout` still wins.
    #[test]
    fn the_lambda_timeout_follows_the_step_timeout() {
        let secs = |runtime_value: Value, step: Option<Duration>| match parse(
            &runtime(runtime_value),
            step,
        ) {
            Ok(Target::Deploy(s)) => s.timeout_secs,
            other => panic!("{other:?}"),
        };
        assert_eq!(secs(json!({}), Some(Duration::from_secs(45))), 45);
        assert_eq!(secs(json!({}), Some(Duration::from_millis(1500))), 2);
        assert_eq!(secs(json!({}), Some(Duration::from_millis(10))), 1);
        assert_eq!(secs(json!({}), Some(Duration::from_secs(3600))), 900);
        assert_eq!(secs(json!({}), None), 300);
        assert_eq!(
            secs(json!({"timeout": 30}), Some(Duration::from_secs(45))),
            30
        );
    }

    #[test]
    fn deploy_dirs_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let Target::Deploy(provided) = parse(&Map::new(), None).unwrap() else {
            panic!("deploy")
        };
        let err = deploy_dir(&provided, None, dir.path()).unwrap_err();
        assert!(err.contains("needs `runtime.function`"), "{err}");
        let err = deploy_dir(&provided, Some(Path::new("missing")), dir.path()).unwrap_err();
        assert!(
            err.contains("not found") && err.contains("missing"),
            "{err}"
        );
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let err = deploy_dir(&provided, Some(Path::new("file")), dir.path()).unwrap_err();
        assert!(err.contains("is a file"), "{err}");
        std::fs::create_dir(dir.path().join("step")).unwrap();
        let err = deploy_dir(&provided, Some(Path::new("step")), dir.path()).unwrap_err();
        assert!(err.contains("`bootstrap`"), "{err}");
        let python = DeploySettings {
            runtime: "python3.12".into(),
            handler: "main.handler".into(),
            ..provided.clone()
        };
        assert!(deploy_dir(&python, Some(Path::new("step")), dir.path()).is_ok());
        std::fs::write(dir.path().join("step/bootstrap"), "#!/bin/sh\n").unwrap();
        let (found, settings) = deploy_dir(&provided, Some(Path::new("step")), dir.path()).unwrap();
        assert_eq!(found, dir.path().join("step"));
        assert_eq!(
            (settings.runtime.as_str(), settings.handler.as_str()),
            (DEFAULT_RUNTIME, DEFAULT_HANDLER)
        );
    }

    /// A step directory as the AWS console or `sam` make it deploys with the runtime and
    /// handler its files imply; what the step sets wins.
    #[test]
    fn the_runtime_and_handler_follow_the_directory_layout() {
        let Target::Deploy(inferred) = parse(&Map::new(), None).unwrap() else {
            panic!("deploy")
        };
        for (file, runtime, handler) in [
            ("bootstrap", "provided.al2023", "bootstrap"),
            (
                "lambda_function.py",
                "python3.12",
                "lambda_function.lambda_handler",
            ),
            ("index.mjs", "nodejs20.x", "index.handler"),
            ("index.js", "nodejs20.x", "index.handler"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("step")).unwrap();
            std::fs::write(dir.path().join("step").join(file), "x").unwrap();
            let (_, s) = deploy_dir(&inferred, Some(Path::new("step")), dir.path()).unwrap();
            assert_eq!(
                (s.runtime.as_str(), s.handler.as_str()),
                (runtime, handler),
                "{file}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("step")).unwrap();
        std::fs::write(dir.path().join("step/lambda_function.py"), "x").unwrap();
        // Another Python keeps the console's handler; a handler set by the step wins.
        let older = DeploySettings {
            runtime: "python3.11".into(),
            ..inferred.clone()
        };
        let (_, s) = deploy_dir(&older, Some(Path::new("step")), dir.path()).unwrap();
        assert_eq!(
            (s.runtime.as_str(), s.handler.as_str()),
            ("python3.11", "lambda_function.lambda_handler")
        );
        let own = DeploySettings {
            handler: "app.main".into(),
            ..inferred.clone()
        };
        let (_, s) = deploy_dir(&own, Some(Path::new("step")), dir.path()).unwrap();
        assert_eq!(
            (s.runtime.as_str(), s.handler.as_str()),
            ("python3.12", "app.main")
        );
        // A runtime whose language the files do not imply needs its handler.
        let node = DeploySettings {
            runtime: "nodejs20.x".into(),
            ..inferred.clone()
        };
        let err = deploy_dir(&node, Some(Path::new("step")), dir.path()).unwrap_err();
        assert!(err.contains("needs `runtime.handler`"), "{err}");
        // No file that implies a runtime: the message lists the layouts.
        std::fs::remove_file(dir.path().join("step/lambda_function.py")).unwrap();
        let err = deploy_dir(&inferred, Some(Path::new("step")), dir.path()).unwrap_err();
        assert!(err.contains("`lambda_function.py` (python3.12)"), "{err}");
    }

    #[test]
    fn deployed_names_are_valid_lambda_names() {
        assert_eq!(deployed_function_name("signup", "step-1"), "signup-step-1");
        let dotted = deployed_function_name("my.fn", "step-1");
        assert!(dotted.starts_with("my-fn-step-1-"), "{dotted}");
        assert_ne!(dotted, deployed_function_name("my-fn", "step-1"));
        let long = deployed_function_name(&"f".repeat(60), "step-1");
        assert_eq!(long.len(), 64, "{long}");
        assert_ne!(long, deployed_function_name(&"f".repeat(60), "step-2"));
        for name in [dotted, long] {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            );
        }
    }
}
