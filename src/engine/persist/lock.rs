//! One process per data directory: an exclusive `flock(2)` on `DIR/lock`, taken before the
//! journals are recovered and held for the life of the process (the kernel drops it when the
//! process exits, `kill -9` included, so there is never a stale lock to clean up).
//!
//! The holder writes its PID into the file, so a refused second instance can name it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "lock";

/// A held data-directory lock; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "data_dir {} is in use by another process{} (it holds {}): two instances must not share \
         journals; stop the other one or give this one another [server] data_dir",
        dir.display(),
        pid.map_or(String::new(), |p| format!(" (PID {p})")),
        path.display()
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// The holder's PID, as it wrote it into the file.
        pid: Option<u32>,
    },
    /// The directory or the lock file could not be created or locked.
    #[error(
        "cannot use data_dir {}: {what} {}: {source} (the directory must be writable by the user \
         sipfork runs as; tuning/install.sh creates /var/lib/sipfork for the user sipfork)",
        dir.display(),
        path.display()
    )]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// The path that failed.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Creates `dir` if needed and takes the exclusive lock on `dir/lock` without waiting.
pub fn lock_dir(dir: &Path) -> Result<DirLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let failed = |what: &'static str, at: &Path| {
        let (dir, path) = (dir.to_owned(), at.to_owned());
        move |source| LockError::Io {
            dir,
            path,
            what,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(failed("creating", dir))?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(failed("opening", &path))?;
    // SAFETY: flock on a file descriptor this function owns and keeps open; no pointers involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::WouldBlock {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Held {
                dir: dir.to_owned(),
                path,
                pid: text.trim().parse().ok(),
            });
        }
        return Err(failed("locking", &path)(error));
    }
    let write_pid = |file: &mut File| -> io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())
    };
    write_pid(&mut file).map_err(failed("writing the PID into", &path))?;
    Ok(DirLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sipfork-lock-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_with_the_holders_pid() {
        let dir = scratch("twice");
        let held = lock_dir(&dir.join("data")).expect("first lock (creates the directory)");
        let text = std::fs::read_to_string(held.path()).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        // flock locks belong to the open file, so a second open in this process conflicts too.
        let err = lock_dir(&dir.join("data")).unwrap_err();
        match &err {
            LockError::Held { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("expected Held, got {other}"),
        }
        let message = err.to_string();
        assert!(
            message.contains(&dir.join("data").display().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&format!("PID {}", std::process::id())),
            "{message}"
        );
        drop(held);
        lock_dir(&dir.join("data")).expect("free again once the holder is gone");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unusable_directory_is_named() {
        let dir = scratch("file");
        std::fs::create_dir_all(&dir).unwrap();
        let not_a_dir = dir.join("plain-file");
        std::fs::write(&not_a_dir, b"x").unwrap();
        let err = lock_dir(&not_a_dir).unwrap_err();
        assert!(matches!(err, LockError::Io { .. }), "{err}");
        assert!(
            err.to_string().contains(&not_a_dir.display().to_string()),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
