//! A small, real disk for tests of what a full disk does: a `tmpfs` of a
//! few MiB mounted on a temporary directory, so that writes fail with
//! `ENOSPC` where the kernel says so, not where a test pretends.
//!
//! Mounting needs root (CI runs as root). Elsewhere [`SmallDisk::mount`]
//! fails with what to do; with `FOLIO_SKIP_MOUNT_TESTS=1` it returns `None`
//! and the test is skipped, saying so.
//!
//! ```no_run
//! use folio_sqlite::testing::SmallDisk;
//!
//! if let Some(disk) = SmallDisk::mount(16 << 20) {
//!     std::fs::write(disk.path().join("filler"), vec![1u8; 8 << 20]).unwrap();
//!     assert!(disk.free_bytes() < 9 << 20);
//! }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted `tmpfs`, unmounted (and its directory removed) when dropped.
#[derive(Debug)]
pub struct SmallDisk {
    /// Holds the mount point.
    directory: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a `tmpfs` of `bytes` on a new temporary directory.
    ///
    /// # Panics
    ///
    /// When it cannot be mounted (not root), unless `FOLIO_SKIP_MOUNT_TESTS`
    /// is `1`: then `None`.
    pub fn mount(bytes: u64) -> Option<Self> {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(directory.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(SmallDisk { directory }),
            failed => {
                if std::env::var_os("FOLIO_SKIP_MOUNT_TESTS").is_some_and(|value| value == "1") {
                    eprintln!("skipped: mounting a small disk failed ({failed:?})");
                    return None;
                }
                panic!(
                    "this test mounts a small tmpfs to fill it, which needs root: run the tests \
                     as root, or set FOLIO_SKIP_MOUNT_TESTS=1 to skip it ({failed:?})"
                )
            }
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.directory.path()
    }

    /// A file on the disk.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// The bytes free on the disk.
    pub fn free_bytes(&self) -> u64 {
        let stats = rustix::fs::statvfs(self.path()).expect("statvfs");
        stats.f_bavail.saturating_mul(stats.f_frsize)
    }

    /// Writes a file of `bytes` (real blocks) on the disk.
    ///
    /// # Panics
    ///
    /// When it does not fit.
    pub fn fill(&self, name: &str, bytes: usize) -> PathBuf {
        let path = self.file(name);
        std::fs::write(&path, vec![0x5a; bytes]).expect("the filler fits");
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.directory.path())
            .status();
    }
}
