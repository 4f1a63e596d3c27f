//! Builds the test step programs of `test-modules/` to wasm32-wasip1, once per process, into
//! `<target>/wasm-test-modules` (a cargo project of its own: the normal build never compiles
//! them). Needs the target: `rustup target add wasm32-wasip1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of the test module `name` (`echo`, `sleep`, …), built on first use.
pub fn module(name: &str) -> PathBuf {
    let path = modules_dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "test module {name} was not built: {}",
        path.display()
    );
    path
}

/// The directory holding every built test module.
pub fn modules_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build)
}

fn build() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-modules/Cargo.toml");
    let target_dir = target_dir().join("wasm-test-modules");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--target", "wasm32-wasip1"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .output()
        .unwrap_or_else(|e| panic!("could not run cargo to build the wasm test modules: {e}"));
    assert!(
        output.status.success(),
        "building the wasm test modules failed ({}); is the target installed? \
         `rustup target add wasm32-wasip1`\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    target_dir.join("wasm32-wasip1").join("release")
}

/// The workspace's target directory: next to the running test or example binary.
fn target_dir() -> PathBuf {
    if let Some(tmp) = option_env!("CARGO_TARGET_TMPDIR") {
        return PathBuf::from(tmp);
    }
    // <target>/<profile>/{deps,examples}/<binary>
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .expect("the binary lives in <target>/<profile>/<kind>/")
}

/// A compilation cache directory shared by the tests that do not count cache hits (kept in
/// the target directory, so later runs skip compiling with a debug build of Cranelift).
pub fn shared_cache_dir() -> PathBuf {
    target_dir().join("wasm-test-modules").join("compile-cache")
}
