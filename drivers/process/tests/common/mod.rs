//! The conformance fixtures: a `#!/bin/sh` script per fixture, in a temporary function
//! directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use weir_core::testkit::driver::Fixture;

/// A temporary function directory holding a script per fixture, named after it (`Echo`, …).
pub fn fixtures() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for fixture in Fixture::ALL {
        let body = match fixture {
            Fixture::Echo => "exec cat",
            Fixture::EchoArg => "printf '%s' \"$1\"",
            Fixture::Text => "echo hello weir",
            Fixture::FailWithLog => "echo boom >&2\nexit 3",
            Fixture::Sleep => "sleep 30",
            Fixture::ClientError => "echo '{\"status\":422}'",
            Fixture::Flood => "yes weir | head -c 10485760",
        };
        script(dir.path(), &format!("{fixture:?}"), body);
    }
    dir
}

/// Writes an executable `#!/bin/sh` script `name` into the function directory `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create script dir");
    }
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
    path
}
