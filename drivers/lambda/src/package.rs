//! Zipping a step directory for Lambda, the same bytes every time for the same files.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use weir_core::{Error, ErrorKind, Result};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, System, ZipWriter};

/// Lambda's largest deployment package uploaded directly (`ZipFile`): 50 MB.
pub const MAX_ZIP_BYTES: usize = 50 * 1024 * 1024;
/// Lambda's largest unzipped deployment package: 250 MB.
pub const MAX_UNZIPPED_BYTES: u64 = 250 * 1024 * 1024;
/// How deep directories may nest (a guard against symlink loops).
const MAX_DEPTH: usize = 32;

/// A step directory zipped for Lambda.
///
/// Entries are the directory's files (symlinks followed) in byte order of their paths, with
/// `/` separators, the timestamp 1980-01-01 00:00, mode `0755` for files with an execute bit and
/// `0644` for the others, deflated. So the same files always give the same bytes, and the same
/// [`code_sha256`](Package::code_sha256), which is what Lambda reports as a function's
/// `CodeSha256`.
#[derive(Clone, PartialEq, Eq)]
pub struct Package {
    zip: Bytes,
    code_sha256: String,
}

impl Package {
    /// The zip file.
    pub fn zip(&self) -> &Bytes {
        &self.zip
    }

    /// Base64 of the SHA-256 of the zip file (Lambda's `CodeSha256`).
    pub fn code_sha256(&self) -> &str {
        &self.code_sha256
    }
}

impl std::fmt::Debug for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Package")
            .field("zip_bytes", &self.zip.len())
            .field("code_sha256", &self.code_sha256)
            .finish()
    }
}

/// Zips the files under `dir` (see [`Package`]).
///
/// Fails with [`ErrorKind::Config`] when `dir` has no files, a name is not UTF-8, directories
/// nest deeper than 32 levels, or the package is over Lambda's limits ([`MAX_ZIP_BYTES`]
/// zipped, [`MAX_UNZIPPED_BYTES`] unzipped), and with [`ErrorKind::NotFound`] when `dir` cannot
/// be read.
pub fn package_dir(dir: &Path) -> Result<Package> {
    let mut files = Vec::new();
    collect(dir, "", 0, &mut files)?;
    if files.is_empty() {
        return Err(config(format!(
            "nothing to deploy: the step directory {} has no files",
            dir.display()
        )));
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let unzipped: u64 = files.iter().map(|f| f.len).sum();
    if unzipped > MAX_UNZIPPED_BYTES {
        return Err(config(format!(
            "the step directory {} holds {unzipped} bytes, over Lambda's 250 MB limit for an unzipped package",
            dir.display()
        )));
    }
    let mut zip = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for file in &files {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .last_modified_time(DateTime::default())
            .system(System::Unix)
            .unix_permissions(file.mode);
        let content = std::fs::read(&file.path).map_err(|e| read_error(&file.path, e))?;
        zip.start_file(file.name.as_str(), options)
            .and_then(|()| zip.write_all(&content).map_err(Into::into))
            .map_err(|e| Error::internal("could not zip the step directory").with_source(e))?;
    }
    let zip = zip
        .finish()
        .map_err(|e| Error::internal("could not zip the step directory").with_source(e))?
        .into_inner();
    if zip.len() > MAX_ZIP_BYTES {
        return Err(config(format!(
            "the step directory {} zips to {} bytes, over Lambda's 50 MB limit for a direct upload \
             (deploy it through S3 yourself and set `runtime.function`)",
            dir.display(),
            zip.len()
        )));
    }
    let code_sha256 = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&zip));
    Ok(Package {
        zip: Bytes::from(zip),
        code_sha256,
    })
}

struct Entry {
    name: String,
    path: PathBuf,
    mode: u32,
    len: u64,
}

fn collect(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<Entry>) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(config(format!(
            "the step directory nests deeper than {MAX_DEPTH} levels (a symlink loop?): {}",
            dir.display()
        )));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| read_error(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| read_error(dir, e))?;
        let path = entry.path();
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(config(format!(
                "a file name in the step directory is not UTF-8: {}",
                path.display()
            )));
        };
        let name = format!("{prefix}{file_name}");
        // Follows symlinks: the package holds what they point to.
        let meta = std::fs::metadata(&path).map_err(|e| read_error(&path, e))?;
        if meta.is_dir() {
            collect(&path, &format!("{name}/"), depth + 1, out)?;
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let executable = meta.permissions().mode() & 0o111 != 0;
            out.push(Entry {
                name,
                path,
                mode: if executable { 0o755 } else { 0o644 },
                len: meta.len(),
            });
        }
    }
    Ok(())
}

fn config(message: String) -> Error {
    Error::new(ErrorKind::Config, message).permanent()
}

fn read_error(path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("could not read {} to deploy it", path.display()),
    )
    .permanent()
    .with_source(e)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write(dir: &Path, name: &str, content: &str, mode: u32) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn same_files_same_bytes_whatever_the_order_and_times() {
        let a = tempfile::tempdir().unwrap();
        write(a.path(), "bootstrap", "#!/bin/sh\necho hi\n", 0o700);
        write(a.path(), "lib/z.txt", "z", 0o600);
        write(a.path(), "lib/a.txt", "a", 0o644);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = tempfile::tempdir().unwrap();
        write(b.path(), "lib/a.txt", "a", 0o640);
        write(b.path(), "lib/z.txt", "z", 0o644);
        write(b.path(), "bootstrap", "#!/bin/sh\necho hi\n", 0o755);
        let (pa, pb) = (
            package_dir(a.path()).unwrap(),
            package_dir(b.path()).unwrap(),
        );
        assert_eq!(pa, pb);
        assert_eq!(pa.code_sha256().len(), 44, "{pa:?}");

        write(b.path(), "lib/z.txt", "changed", 0o644);
        assert_ne!(
            package_dir(b.path()).unwrap().code_sha256(),
            pa.code_sha256()
        );
    }

    #[test]
    fn entries_are_sorted_with_modes_and_fixed_times() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "bootstrap", "#!/bin/sh\n", 0o755);
        write(dir.path(), "b/data.json", "{}", 0o600);
        write(dir.path(), "a.txt", "text", 0o644);
        let package = package_dir(dir.path()).unwrap();
        let mut archive =
            zip::ZipArchive::new(std::io::Cursor::new(package.zip().to_vec())).unwrap();
        let mut seen = Vec::new();
        for i in 0..archive.len() {
            let mut file = archive.by_index(i).unwrap();
            let mut content = String::new();
            file.read_to_string(&mut content).unwrap();
            let time = file.last_modified().unwrap();
            assert_eq!((time.year(), time.month(), time.day()), (1980, 1, 1));
            seen.push((
                file.name().unwrap().into_owned(),
                file.unix_mode().unwrap() & 0o777,
                content,
            ));
        }
        assert_eq!(
            seen,
            [
                ("a.txt".to_owned(), 0o644, "text".to_owned()),
                ("b/data.json".to_owned(), 0o644, "{}".to_owned()),
                ("bootstrap".to_owned(), 0o755, "#!/bin/sh\n".to_owned()),
            ]
        );
    }

    #[test]
    fn empty_and_missing_directories_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let err = package_dir(&dir.path().join("empty")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("has no files"), "{err}");
        let err = package_dir(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn symlink_loops_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "bootstrap", "x", 0o755);
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
        let err = package_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("symlink loop"), "{err}");
    }
}
