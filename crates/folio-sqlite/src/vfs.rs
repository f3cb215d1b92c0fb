//! A thin layer over SQLite's own file system layer (its "unix" VFS) that
//! writes each commit to the write-ahead log in one system call.
//!
//! SQLite writes a frame of the log in two calls, its 24-byte header and
//! then the page, so a group commit of N pages makes 2N `pwrite` calls: in
//! `folio bench update` that was 28 % of the writer thread's time, most of
//! it the kernel's fixed cost per call. Here the log file gathers the
//! frames of a transaction in memory while they arrive in order, and writes
//! them at once when the commit frame (the one whose header carries the
//! database size) is complete: still inside SQLite's own write call, whose
//! result reports any failure. Nothing becomes visible earlier: SQLite
//! publishes new frames to readers only after that call returned.
//!
//! Any other use of the log file (a read, a sync, a size query, a truncate,
//! a write elsewhere, closing it) first writes what is gathered, so SQLite
//! never observes the difference. Only appended frames are gathered; every
//! other write goes straight through. Files other than the log are SQLite's
//! own, untouched, except in tests: with the feature `fault-injection`, the
//! log's writes and the database file's writes and syncs fail when a test
//! arms them (`faults.rs`, and the `faulty` module below).
//!
//! One of three modules with `unsafe` code (with `memory.rs`, and
//! `checkpoint.rs` lowering its thread's priority): SQLite's file
//! layer is a C interface of function pointers.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name connections pass to SQLite to use this layer.
pub(crate) const NAME: &str = "folio";
const NAME_C: &CStr = c"folio";

/// The size of a frame header in SQLite's write-ahead log.
const FRAME_HEADER: usize = 24;

/// The most SQLite's unix layer writes in one call (it masks the length
/// with `0x1ffff`): what is gathered never grows past it.
const MAX_WRITE: usize = 0x1ffff;

/// The underlying VFS, registered once per process.
struct Registered {
    /// SQLite's default VFS, which does the real work.
    inner: *mut ffi::sqlite3_vfs,
    /// Whether `NAME` is registered.
    ok: bool,
}

// SAFETY: the pointer names a VFS that SQLite keeps for the process's life
// and whose methods are thread-safe.
unsafe impl Send for Registered {}
unsafe impl Sync for Registered {}

static REGISTERED: OnceLock<Registered> = OnceLock::new();

/// Registers the layer with SQLite (once per process); `false` if SQLite
/// has no default VFS to build on, and then connections use SQLite's own.
pub(crate) fn register() -> bool {
    REGISTERED
        .get_or_init(|| {
            // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS or null.
            let inner = unsafe { ffi::sqlite3_vfs_find(std::ptr::null()) };
            if inner.is_null() {
                return Registered { inner, ok: false };
            }
            // SAFETY: `inner` is a valid VFS; the copy keeps its methods and
            // its pAppData, so every method but xOpen is SQLite's own.
            let mut vfs = unsafe { std::ptr::read(inner) };
            let inner_size = usize::try_from(vfs.szOsFile).unwrap_or(0);
            vfs.szOsFile = c_int::try_from(inner_offset() + inner_size).unwrap_or(c_int::MAX);
            vfs.pNext = std::ptr::null_mut();
            vfs.zName = NAME_C.as_ptr();
            vfs.xOpen = Some(open);
            let vfs = Box::leak(Box::new(vfs));
            // SAFETY: `vfs` lives for the rest of the process.
            let ok = unsafe { ffi::sqlite3_vfs_register(vfs, 0) } == ffi::SQLITE_OK;
            Registered { inner, ok }
        })
        .ok
}

/// A log file: SQLite's own file (`inner`, stored right behind this
/// struct in the memory SQLite gives `open`) and the frames gathered.
#[repr(C)]
struct LogFile {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    gathered: Vec<u8>,
    /// Where `gathered` goes in the file.
    offset: i64,
    /// The last write gathered was the header of a commit frame: its page
    /// completes the commit.
    commit_pending: bool,
    /// The end of the last frame appended since the log started over: a
    /// frame header below it rewrites a frame already written (SQLite
    /// rewrites headers alone when it recomputes checksums), and goes
    /// straight through.
    appended_to: i64,
    /// Failures injected into this log's writes (`faults.rs`).
    #[cfg(feature = "fault-injection")]
    faults: Option<std::sync::Arc<crate::faults::IoFaults>>,
}

/// Where SQLite's own file starts in the memory given to `open`: behind
/// the largest of the files this layer wraps.
const fn inner_offset() -> usize {
    let wrapper = std::mem::size_of::<LogFile>();
    #[cfg(feature = "fault-injection")]
    let wrapper = if faulty::SIZE > wrapper {
        faulty::SIZE
    } else {
        wrapper
    };
    wrapper.next_multiple_of(16)
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(registered) = REGISTERED.get() else {
        return ffi::SQLITE_ERROR;
    };
    let inner_vfs = registered.inner;
    // SAFETY: SQLite passes memory of szOsFile bytes for `file`; the
    // default VFS's xOpen is called with its own VFS pointer.
    unsafe {
        let Some(inner_open) = (*inner_vfs).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        // SQLite's own file, opened in the memory behind this layer's.
        let open_behind = || {
            let inner = file
                .cast::<u8>()
                .add(inner_offset())
                .cast::<ffi::sqlite3_file>();
            let rc = inner_open(inner_vfs, name, inner, flags, out_flags);
            if rc != ffi::SQLITE_OK {
                (*file).pMethods = std::ptr::null();
                return Err(rc);
            }
            Ok(inner)
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            #[cfg(feature = "fault-injection")]
            if flags & ffi::SQLITE_OPEN_MAIN_DB != 0
                && !name.is_null()
                && let Some(faults) = crate::faults::for_database_named(CStr::from_ptr(name))
            {
                return match open_behind() {
                    Ok(inner) => faulty::wrap(file, inner, faults),
                    Err(rc) => rc,
                };
            }
            // Not a log: SQLite's own file, in place.
            return inner_open(inner_vfs, name, file, flags, out_flags);
        }
        let inner = match open_behind() {
            Ok(inner) => inner,
            Err(rc) => return rc,
        };
        file.cast::<LogFile>().write(LogFile {
            base: ffi::sqlite3_file {
                pMethods: &LOG_METHODS,
            },
            inner,
            gathered: Vec::new(),
            offset: 0,
            commit_pending: false,
            appended_to: 0,
            #[cfg(feature = "fault-injection")]
            faults: (!name.is_null())
                .then(|| crate::faults::for_log_named(CStr::from_ptr(name)))
                .flatten(),
        });
        ffi::SQLITE_OK
    }
}

/// The log file behind a `sqlite3_file` this layer opened.
///
/// # Safety
/// `file` must have been opened by `open` as a log file and not closed.
unsafe fn log<'a>(file: *mut ffi::sqlite3_file) -> &'a mut LogFile {
    // SAFETY: guaranteed by the caller.
    unsafe { &mut *file.cast::<LogFile>() }
}

/// The methods of SQLite's own file `inner`, behind one of this layer's.
///
/// # Safety
/// `inner` must be an open file, open for as long as the methods are used.
unsafe fn methods<'a>(inner: *mut ffi::sqlite3_file) -> &'a ffi::sqlite3_io_methods {
    // SAFETY: an open file has its methods set.
    unsafe { &*(*inner).pMethods }
}

/// SQLite's own file's `xWrite`.
#[cfg(feature = "fault-injection")]
type Write = unsafe extern "C" fn(*mut ffi::sqlite3_file, *const c_void, c_int, i64) -> c_int;

/// Answers a write with the failure a test armed (`faults.rs`), after
/// writing the first half of its bytes through `write` when it is torn.
///
/// # Safety
/// As `write` itself: `inner` is open, with `amount` readable bytes at `data`.
#[cfg(feature = "fault-injection")]
unsafe fn fail_write(
    write: Write,
    inner: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
    torn: bool,
) -> c_int {
    if torn {
        // SAFETY: guaranteed by the caller, for a prefix of the bytes.
        unsafe { write(inner, data, amount / 2, offset) };
    }
    ffi::SQLITE_IOERR_WRITE
}

impl LogFile {
    /// Writes what is gathered; the error of that write, if any (the
    /// gathered frames are dropped then: SQLite treats them as unwritten).
    fn flush(&mut self) -> c_int {
        if self.gathered.is_empty() {
            return ffi::SQLITE_OK;
        }
        self.commit_pending = false;
        debug_assert!(self.gathered.len() <= MAX_WRITE);
        let Ok(amount) = c_int::try_from(self.gathered.len()) else {
            self.gathered.clear();
            return ffi::SQLITE_IOERR_WRITE;
        };
        let rc = self.write(&self.gathered, amount, self.offset);
        self.gathered.clear();
        rc
    }

    /// Writes `amount` bytes (the length of `bytes`) at `offset` through
    /// SQLite's own file; where the feature `fault-injection` is on, an
    /// armed failure (`faults.rs`) answers instead, after writing half of
    /// the bytes if the failure is a torn write.
    fn write(&self, bytes: &[u8], amount: c_int, offset: i64) -> c_int {
        // SAFETY: `inner` is open.
        let Some(write) = (unsafe { methods(self.inner).xWrite }) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        #[cfg(feature = "fault-injection")]
        if let Some(torn) = self.faults.as_ref().and_then(|f| f.take_log_write()) {
            // SAFETY: as below.
            return unsafe {
                fail_write(
                    write,
                    self.inner,
                    bytes.as_ptr().cast(),
                    amount,
                    offset,
                    torn,
                )
            };
        }
        // SAFETY: `inner` is open; `bytes` holds `amount` bytes and outlives
        // the call.
        unsafe { write(self.inner, bytes.as_ptr().cast(), amount, offset) }
    }

    /// The file offset just past what is gathered.
    fn end(&self) -> i64 {
        self.offset + i64::try_from(self.gathered.len()).unwrap_or(i64::MAX)
    }
}

unsafe extern "C" fn log_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls this only on files `open` made logs, with
    // `amount` readable bytes at `data`.
    let (log, bytes) = unsafe {
        (
            log(file),
            std::slice::from_raw_parts(data.cast::<u8>(), usize::try_from(amount).unwrap_or(0)),
        )
    };
    let appends = !log.gathered.is_empty()
        && offset == log.end()
        && log.gathered.len() + bytes.len() <= MAX_WRITE;
    if !appends {
        let rc = log.flush();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        if offset == 0 {
            // The log header: the log starts over.
            log.appended_to = 0;
        }
        if bytes.len() != FRAME_HEADER || offset < log.appended_to {
            // Not the start of a new frame (the log header, a page or a
            // header rewritten in place, a page that did not fit): straight
            // through.
            log.appended_to = log.appended_to.max(offset + i64::from(amount));
            return log.write(bytes, amount, offset);
        }
        log.offset = offset;
    }
    log.gathered.extend_from_slice(bytes);
    log.appended_to = log.appended_to.max(log.end());
    if bytes.len() == FRAME_HEADER && !log.commit_pending {
        // A new frame's header; bytes 4..8 hold the database size in pages
        // after the commit, zero unless this frame ends a transaction.
        log.commit_pending = bytes[4..8] != [0; 4];
        return ffi::SQLITE_OK;
    }
    if log.commit_pending {
        // The commit frame is complete.
        return log.flush();
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn log_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes each file once; the struct was written by `open`.
    unsafe {
        let log = log(file);
        let flushed = log.flush();
        let closed = match methods(log.inner).xClose {
            Some(close) => close(log.inner),
            None => ffi::SQLITE_OK,
        };
        std::ptr::drop_in_place(file.cast::<LogFile>());
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

/// Defines a method that writes what is gathered, then calls SQLite's own.
macro_rules! flushing {
    ($name:ident => $method:ident ( $($arg:ident : $ty:ty),* ) ) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: SQLite calls this only on files `open` made logs.
            unsafe {
                let log = log(file);
                let rc = log.flush();
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                match methods(log.inner).$method {
                    Some(method) => method(log.inner $(, $arg)*),
                    None => ffi::SQLITE_ERROR,
                }
            }
        }
    };
}

flushing!(log_read => xRead(data: *mut c_void, amount: c_int, offset: i64));
flushing!(log_truncate => xTruncate(size: i64));
flushing!(log_sync => xSync(flags: c_int));
flushing!(log_file_size => xFileSize(size: *mut i64));
flushing!(log_lock => xLock(level: c_int));
flushing!(log_unlock => xUnlock(level: c_int));
flushing!(log_check_reserved_lock => xCheckReservedLock(out: *mut c_int));
flushing!(log_file_control => xFileControl(op: c_int, arg: *mut c_void));
flushing!(log_shm_map => xShmMap(page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void));
flushing!(log_shm_lock => xShmLock(offset: c_int, n: c_int, flags: c_int));
flushing!(log_shm_unmap => xShmUnmap(delete: c_int));
flushing!(log_fetch => xFetch(offset: i64, amount: c_int, out: *mut *mut c_void));
flushing!(log_unfetch => xUnfetch(offset: i64, page: *mut c_void));

unsafe extern "C" fn log_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls this only on files `open` made logs.
    unsafe {
        let log = log(file);
        methods(log.inner)
            .xSectorSize
            .map_or(0, |method| method(log.inner))
    }
}

unsafe extern "C" fn log_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls this only on files `open` made logs.
    unsafe {
        let log = log(file);
        methods(log.inner)
            .xDeviceCharacteristics
            .map_or(0, |method| method(log.inner))
    }
}

unsafe extern "C" fn log_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite calls this only on files `open` made logs.
    unsafe {
        let log = log(file);
        if let Some(method) = methods(log.inner).xShmBarrier {
            method(log.inner);
        }
    }
}

static LOG_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(log_close),
    xRead: Some(log_read),
    xWrite: Some(log_write),
    xTruncate: Some(log_truncate),
    xSync: Some(log_sync),
    xFileSize: Some(log_file_size),
    xLock: Some(log_lock),
    xUnlock: Some(log_unlock),
    xCheckReservedLock: Some(log_check_reserved_lock),
    xFileControl: Some(log_file_control),
    xSectorSize: Some(log_sector_size),
    xDeviceCharacteristics: Some(log_device_characteristics),
    xShmMap: Some(log_shm_map),
    xShmLock: Some(log_shm_lock),
    xShmBarrier: Some(log_shm_barrier),
    xShmUnmap: Some(log_shm_unmap),
    xFetch: Some(log_fetch),
    xUnfetch: Some(log_unfetch),
};

/// The database file of a database opened with `SqliteOptions::io_faults`
/// (feature `fault-injection`): SQLite's own file, except that a write or a
/// sync fails when the test armed it (`faults.rs`). Only checkpoints write
/// the database file, so this is a checkpoint on a failing disk.
#[cfg(feature = "fault-injection")]
mod faulty {
    use std::ffi::{c_int, c_void};
    use std::sync::Arc;

    use rusqlite::ffi;

    use super::{fail_write, methods};
    use crate::faults::IoFaults;

    #[repr(C)]
    struct DatabaseFile {
        base: ffi::sqlite3_file,
        inner: *mut ffi::sqlite3_file,
        faults: Arc<IoFaults>,
    }

    /// The size of the wrapper, which SQLite's own file goes behind.
    pub(super) const SIZE: usize = std::mem::size_of::<DatabaseFile>();

    /// Makes `file` the wrapper of SQLite's own database file `inner`,
    /// opened behind it.
    ///
    /// # Safety
    /// As the VFS's `xOpen`: `file` points to `szOsFile` bytes, and `inner`
    /// is the open file at `inner_offset()` in them.
    pub(super) unsafe fn wrap(
        file: *mut ffi::sqlite3_file,
        inner: *mut ffi::sqlite3_file,
        faults: Arc<IoFaults>,
    ) -> c_int {
        // SAFETY: guaranteed by the caller; the wrapper fits in front of
        // `inner` (`inner_offset`).
        unsafe {
            file.cast::<DatabaseFile>().write(DatabaseFile {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                inner,
                faults,
            });
        }
        ffi::SQLITE_OK
    }

    /// # Safety
    /// `file` was opened by `open` and is not closed.
    unsafe fn database<'a>(file: *mut ffi::sqlite3_file) -> &'a DatabaseFile {
        // SAFETY: guaranteed by the caller.
        unsafe { &*file.cast::<DatabaseFile>() }
    }

    unsafe extern "C" fn write(
        file: *mut ffi::sqlite3_file,
        data: *const c_void,
        amount: c_int,
        offset: i64,
    ) -> c_int {
        // SAFETY: SQLite calls this on files `open` wrapped, with `amount`
        // readable bytes at `data`.
        unsafe {
            let database = database(file);
            let Some(write) = methods(database.inner).xWrite else {
                return ffi::SQLITE_IOERR_WRITE;
            };
            if let Some(torn) = database.faults.take_database_write() {
                return fail_write(write, database.inner, data, amount, offset, torn);
            }
            write(database.inner, data, amount, offset)
        }
    }

    unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
        // SAFETY: SQLite calls this on files `open` wrapped.
        unsafe {
            let database = database(file);
            if database.faults.take_database_sync() {
                return ffi::SQLITE_IOERR_FSYNC;
            }
            methods(database.inner)
                .xSync
                .map_or(ffi::SQLITE_IOERR_FSYNC, |sync| sync(database.inner, flags))
        }
    }

    unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
        // SAFETY: SQLite closes each file once; the struct was written by `open`.
        unsafe {
            let database = database(file);
            let rc = methods(database.inner)
                .xClose
                .map_or(ffi::SQLITE_OK, |close| close(database.inner));
            std::ptr::drop_in_place(file.cast::<DatabaseFile>());
            rc
        }
    }

    /// Defines a method that calls SQLite's own.
    macro_rules! forward {
        ($name:ident => $method:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty, $missing:expr) => {
            unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
                // SAFETY: SQLite calls this on files `open` wrapped.
                unsafe {
                    let database = database(file);
                    match methods(database.inner).$method {
                        Some(method) => method(database.inner $(, $arg)*),
                        None => $missing,
                    }
                }
            }
        };
    }

    forward!(read => xRead(data: *mut c_void, amount: c_int, offset: i64) -> c_int, ffi::SQLITE_IOERR_READ);
    forward!(truncate => xTruncate(size: i64) -> c_int, ffi::SQLITE_IOERR_TRUNCATE);
    forward!(file_size => xFileSize(size: *mut i64) -> c_int, ffi::SQLITE_IOERR_FSTAT);
    forward!(lock => xLock(level: c_int) -> c_int, ffi::SQLITE_IOERR_LOCK);
    forward!(unlock => xUnlock(level: c_int) -> c_int, ffi::SQLITE_IOERR_UNLOCK);
    forward!(check_reserved_lock => xCheckReservedLock(out: *mut c_int) -> c_int, ffi::SQLITE_IOERR_CHECKRESERVEDLOCK);
    forward!(file_control => xFileControl(op: c_int, arg: *mut c_void) -> c_int, ffi::SQLITE_NOTFOUND);
    forward!(sector_size => xSectorSize() -> c_int, 0);
    forward!(device_characteristics => xDeviceCharacteristics() -> c_int, 0);
    forward!(shm_map => xShmMap(page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int, ffi::SQLITE_IOERR_SHMMAP);
    forward!(shm_lock => xShmLock(offset: c_int, n: c_int, flags: c_int) -> c_int, ffi::SQLITE_IOERR_SHMLOCK);
    forward!(shm_barrier => xShmBarrier() -> (), ());
    forward!(shm_unmap => xShmUnmap(delete: c_int) -> c_int, ffi::SQLITE_OK);
    forward!(fetch => xFetch(offset: i64, amount: c_int, out: *mut *mut c_void) -> c_int, ffi::SQLITE_OK);
    forward!(unfetch => xUnfetch(offset: i64, page: *mut c_void) -> c_int, ffi::SQLITE_OK);

    static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
        iVersion: 3,
        xClose: Some(close),
        xRead: Some(read),
        xWrite: Some(write),
        xTruncate: Some(truncate),
        xSync: Some(sync),
        xFileSize: Some(file_size),
        xLock: Some(lock),
        xUnlock: Some(unlock),
        xCheckReservedLock: Some(check_reserved_lock),
        xFileControl: Some(file_control),
        xSectorSize: Some(sector_size),
        xDeviceCharacteristics: Some(device_characteristics),
        xShmMap: Some(shm_map),
        xShmLock: Some(shm_lock),
        xShmBarrier: Some(shm_barrier),
        xShmUnmap: Some(shm_unmap),
        xFetch: Some(fetch),
        xUnfetch: Some(unfetch),
    };
}
