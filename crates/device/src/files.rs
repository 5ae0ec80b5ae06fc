//! Crash-safe file writes: temp file, fsync, rename, fsync of the directory, so a power cut
//! leaves the old or the new file, never a torn one. Private files are created 0600.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The suffix of temp files; a leftover one is what a crash mid-write leaves behind.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

#[cfg(unix)]
fn open_options(private: bool) -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.mode(if private { 0o600 } else { 0o644 });
    options
}

#[cfg(not(unix))]
fn open_options(_private: bool) -> OpenOptions {
    OpenOptions::new()
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(TEMP_SUFFIX);
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` atomically; `private` makes the file 0600.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), Error> {
    let temp = temp_path(path);
    // A leftover temp file from a crash may have other permissions; start clean.
    match fs::remove_file(&temp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io("removing stale temp file", &temp)(e));
        }
        _ => {}
    }
    let mut file = open_options(private)
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(Error::io("creating", &temp))?;
    file.write_all(bytes).map_err(Error::io("writing", &temp))?;
    file.sync_all().map_err(Error::io("syncing", &temp))?;
    drop(file);
    fs::rename(&temp, path).map_err(Error::io("renaming into place", path))?;
    sync_dir(path)
}

/// Removes `path` durably; `Ok(false)` if it did not exist.
pub(crate) fn remove_durably(path: &Path) -> Result<bool, Error> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("removing", path)(e)),
    }
}

/// Writes a new file that must not exist yet (factory output: never overwrite a key).
pub(crate) fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), Error> {
    let mut file = open_options(private)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(Error::io("creating (refusing to overwrite)", path))?;
    file.write_all(bytes).map_err(Error::io("writing", path))?;
    file.sync_all().map_err(Error::io("syncing", path))?;
    sync_dir(path)
}

/// Fsyncs the directory holding `path`, so a rename or removal in it is durable.
fn sync_dir(path: &Path) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("syncing directory", dir))
}

/// Reads a whole file, with the path in the error.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(Error::io("reading", path))
}

/// Reads a private file the device itself wrote (a binding: a key and its chain), at most
/// `max_len` bytes. A symlink or anything but a regular file is refused, not followed: a
/// binding must not be served from outside the store. A file open to group or others is closed
/// to 0600 first, as the store directory is.
pub(crate) fn read_private(path: &Path, max_len: u64) -> Result<Vec<u8>, String> {
    let link = fs::symlink_metadata(path).map_err(|e| format!("inspecting: {e}"))?;
    if !link.file_type().is_file() {
        return Err("not a regular file (a symlink or a special file is never followed)".into());
    }
    let file = File::open(path).map_err(|e| format!("opening: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("inspecting: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // The file opened must be the one inspected: no swap between the two calls.
        if (meta.dev(), meta.ino()) != (link.dev(), link.ino()) {
            return Err("the file changed while it was opened".into());
        }
        if meta.mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.mode() & 0o777), "private file was open to others; setting 0600");
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("restricting to 0600: {e}"))?;
        }
    }
    if meta.len() > max_len {
        return Err(format!("{} bytes, over the limit of {max_len}", meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(max_len + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading: {e}"))?;
    if bytes.len() as u64 > max_len {
        return Err(format!("grew past the limit of {max_len} bytes while read"));
    }
    Ok(bytes)
}
