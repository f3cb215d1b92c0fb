//! A layer over SQLite's own file system layer (its "unix" VFS) that keeps
//! damage from being read as data, and writes each commit to the
//! write-ahead log in one system call.
//!
//! **Page checksums.** A database created by Folio reserves the last
//! [`RESERVED_BYTES`] of every page (SQLite's "reserved bytes", set before
//! the first page is written; `reserve_checksum_bytes`). Every page written
//! to the database file gets the XXH3 checksum of the rest of the page
//! there, and every whole page read from it is checked against it: a
//! damaged page (a flipped bit, a torn or zeroed sector, a page of another
//! file) is the error `SQLITE_IOERR_DATA`, never content. Whether a file's
//! pages carry checksums is what its first page says (its reserved bytes,
//! read when the file opens and whenever the first page is read or
//! written), so a file of an older layout opens as before until it is
//! converted, and every file Folio writes through this layer, a backup too,
//! gets them. Pages in the log are
//! checked with SQLite's own frame checksums, which chain every frame to the
//! one before (SQLite checks them only when it recovers a log): a read of a
//! committed frame's page reads the previous frame's checksum and the
//! frame's header with it, in the same system call, and is refused when the
//! chain does not hold. Frames this connection appended to a transaction
//! not yet committed are not checked (SQLite may rewrite them in place and
//! fix the chain at COMMIT). Memory-mapped reads are off for checked files
//! (a mapped page could not be checked).
//!
//! **One write per commit.** SQLite writes a frame of the log in two calls,
//! its 24-byte header and then the page, so a group commit of N pages makes
//! 2N `pwrite` calls: in `folio bench update` that was 28 % of the writer
//! thread's time, most of it the kernel's fixed cost per call. Here the log
//! file gathers the frames of a transaction in memory while they arrive in
//! order, and writes them at once when the commit frame (the one whose
//! header carries the database size) is complete: still inside SQLite's own
//! write call, whose result reports any failure. Nothing becomes visible
//! earlier: SQLite publishes new frames to readers only after that call
//! returned. Any other use of the log file (a read, a sync, a size query, a
//! truncate, a write elsewhere, closing it) first writes what is gathered,
//! so SQLite never observes the difference. Only appended frames are
//! gathered; every other write goes straight through.
//!
//! With the feature `fault-injection`, the files' writes and syncs fail when
//! a test arms them (`faults.rs`).
//!
//! One of three modules with `unsafe` code (with `memory.rs`, and
//! `checkpoint.rs` lowering its thread's priority): SQLite's file layer is a
//! C interface of function pointers.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name connections pass to SQLite to use this layer.
pub(crate) const NAME: &str = "folio";
const NAME_C: &CStr = c"folio";

/// The bytes reserved at the end of every page for its checksum.
pub(crate) const RESERVED_BYTES: u8 = 8;

/// The size of the log's header.
const LOG_HEADER: usize = 32;

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

/// Makes the database of `connection` reserve [`RESERVED_BYTES`] at the end
/// of each page: at once for a database with no page written yet, at the
/// next `VACUUM` for another (SQLite's `SQLITE_FCNTL_RESERVE_BYTES`).
pub(crate) fn reserve_checksum_bytes(connection: &rusqlite::Connection) -> rusqlite::Result<()> {
    let mut reserved = c_int::from(RESERVED_BYTES);
    // SAFETY: the handle is open for as long as `connection` is borrowed;
    // the file control reads and writes one int through the pointer.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            connection.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_RESERVE_BYTES,
            (&raw mut reserved).cast(),
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None))
    }
}

/// The first bytes of every SQLite database file.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Whether `header` (the first 100 bytes or more of a database file) says
/// the file's pages reserve [`RESERVED_BYTES`] for their checksum: `None`
/// when it is no database header.
fn header_reserves_checksum(header: &[u8]) -> Option<bool> {
    (header.len() >= 100 && header[..16] == *MAGIC).then(|| header[20] == RESERVED_BYTES)
}

/// Whether the database file `inner`, as it is now, reserves room for
/// checksums (no: an empty file, whose first page will say).
///
/// # Safety
/// `inner` is an open file.
unsafe fn reserves_checksum(inner: *mut ffi::sqlite3_file) -> bool {
    let mut header = [0u8; 100];
    // SAFETY: `header` has room for 100 bytes.
    let rc = unsafe { read_inner(inner, header.as_mut_ptr().cast(), 100, 0) };
    rc == ffi::SQLITE_OK && header_reserves_checksum(&header) == Some(true)
}

/// The checksum of a page: XXH3 of everything but its last
/// [`RESERVED_BYTES`], little-endian.
fn page_checksum(page: &[u8]) -> [u8; 8] {
    let body = page.len() - usize::from(RESERVED_BYTES);
    xxhash_rust::xxh3::xxh3_64(&page[..body]).to_le_bytes()
}

/// Whether `page` holds its own checksum.
pub(crate) fn page_is_intact(page: &[u8]) -> bool {
    let body = page.len() - usize::from(RESERVED_BYTES);
    page[body..] == page_checksum(page)
}

/// Whether a read or write of `amount` bytes is one whole page.
fn is_page(amount: c_int) -> bool {
    (512..=65536).contains(&amount) && amount.count_ones() == 1
}

/// SQLite's checksum of the write-ahead log (its file format): over 32-bit
/// words taken in pairs, big-endian words when `big_endian`, continuing
/// from `(s1, s2)`. `data` is a multiple of 8 bytes.
fn log_checksum(big_endian: bool, data: &[u8], (mut s1, mut s2): (u32, u32)) -> (u32, u32) {
    let word = |bytes: &[u8]| {
        let bytes = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        }
    };
    for pair in data.chunks_exact(8) {
        s1 = s1.wrapping_add(word(&pair[..4])).wrapping_add(s2);
        s2 = s2.wrapping_add(word(&pair[4..])).wrapping_add(s1);
    }
    (s1, s2)
}

/// Two big-endian 32-bit numbers, as the log stores checksums.
fn stored_checksum(bytes: &[u8]) -> (u32, u32) {
    let number =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    (number(0), number(4))
}

/// Where SQLite's own file starts in the memory given to `open`: behind
/// the largest of the files this layer wraps.
const fn inner_offset() -> usize {
    let log = std::mem::size_of::<LogFile>();
    let database = std::mem::size_of::<DatabaseFile>();
    let wrapper = if log > database { log } else { database };
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
        let wrapped = flags & (ffi::SQLITE_OPEN_WAL | ffi::SQLITE_OPEN_MAIN_DB) != 0;
        if !wrapped || name.is_null() {
            // Not a log or a database file: SQLite's own file, in place.
            return inner_open(inner_vfs, name, file, flags, out_flags);
        }
        // SQLite's own file, opened in the memory behind this layer's.
        let inner = file
            .cast::<u8>()
            .add(inner_offset())
            .cast::<ffi::sqlite3_file>();
        let rc = inner_open(inner_vfs, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            (*file).pMethods = std::ptr::null();
            return rc;
        }
        #[cfg(feature = "fault-injection")]
        let name = CStr::from_ptr(name);
        if flags & ffi::SQLITE_OPEN_WAL != 0 {
            file.cast::<LogFile>().write(LogFile {
                base: ffi::sqlite3_file {
                    pMethods: &LOG_METHODS,
                },
                inner,
                gathered: Vec::new(),
                offset: 0,
                commit_pending: false,
                appended_to: 0,
                uncommitted_from: i64::MAX,
                big_endian: None,
                #[cfg(feature = "fault-injection")]
                faults: crate::faults::for_log_named(name),
            });
        } else {
            file.cast::<DatabaseFile>().write(DatabaseFile {
                base: ffi::sqlite3_file {
                    pMethods: &DATABASE_METHODS,
                },
                inner,
                checksums: reserves_checksum(inner),
                #[cfg(feature = "fault-injection")]
                faults: crate::faults::for_database_named(name),
            });
        }
        ffi::SQLITE_OK
    }
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

/// Reads `amount` bytes at `offset` through SQLite's own file `inner`.
///
/// # Safety
/// `inner` is open and `data` has room for `amount` bytes.
unsafe fn read_inner(
    inner: *mut ffi::sqlite3_file,
    data: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: guaranteed by the caller.
    unsafe {
        match methods(inner).xRead {
            Some(read) => read(inner, data, amount, offset),
            None => ffi::SQLITE_IOERR_READ,
        }
    }
}

// ---- the log ---------------------------------------------------------------

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
    /// Where the frames this connection appended since its last commit
    /// frame begin (`i64::MAX`: none): reads from there are not checked.
    uncommitted_from: i64,
    /// Whether the log's checksums take big-endian words (its header's
    /// magic number), once read.
    big_endian: Option<bool>,
    /// Failures injected into this log's writes (`faults.rs`).
    #[cfg(feature = "fault-injection")]
    faults: Option<std::sync::Arc<crate::faults::IoFaults>>,
}

/// The log file behind a `sqlite3_file` this layer opened.
///
/// # Safety
/// `file` must have been opened by `open` as a log file and not closed.
unsafe fn log<'a>(file: *mut ffi::sqlite3_file) -> &'a mut LogFile {
    // SAFETY: guaranteed by the caller.
    unsafe { &mut *file.cast::<LogFile>() }
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
        let rc = unsafe { write(self.inner, bytes.as_ptr().cast(), amount, offset) };
        #[cfg(feature = "fault-injection")]
        if let (Some(faults), ffi::SQLITE_OK) = (&self.faults, rc) {
            faults.record_log_write(bytes, offset);
        }
        rc
    }

    /// The file offset just past what is gathered.
    fn end(&self) -> i64 {
        self.offset + i64::try_from(self.gathered.len()).unwrap_or(i64::MAX)
    }

    /// Reads the page of a committed frame at `offset` into `data`, checking
    /// the frame's checksum: one read from the checksum before it (the
    /// previous frame's, or the log header's) to the page's end.
    ///
    /// # Safety
    /// `data` has room for `amount` bytes.
    unsafe fn read_checked(&mut self, data: *mut c_void, amount: c_int, offset: i64) -> c_int {
        let page = usize::try_from(amount).unwrap_or(0);
        let frame = i64::try_from(FRAME_HEADER + page).unwrap_or(i64::MAX);
        let header_at = offset - FRAME_HEADER as i64;
        // The cumulative checksum before this frame: the previous frame's
        // (the last 8 bytes of its header) or the log header's.
        let from = if header_at == LOG_HEADER as i64 {
            (LOG_HEADER - 8) as i64
        } else {
            header_at - frame + 16
        };
        let span = usize::try_from(offset + i64::from(amount) - from).unwrap_or(0);
        let big_endian = match self.big_endian {
            Some(big_endian) => big_endian,
            None => {
                let mut magic = [0u8; 4];
                // SAFETY: `magic` has room for 4 bytes.
                let rc = unsafe { read_inner(self.inner, magic.as_mut_ptr().cast(), 4, 0) };
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                let big_endian = u32::from_be_bytes(magic) & 1 == 1;
                self.big_endian = Some(big_endian);
                big_endian
            }
        };
        READ_BUFFER.with_borrow_mut(|buffer| {
            buffer.resize(span, 0);
            let Ok(span_amount) = c_int::try_from(span) else {
                return ffi::SQLITE_IOERR_READ;
            };
            // SAFETY: `buffer` has room for `span` bytes.
            let rc =
                unsafe { read_inner(self.inner, buffer.as_mut_ptr().cast(), span_amount, from) };
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            let previous = stored_checksum(&buffer[..8]);
            let header = &buffer[span - page - FRAME_HEADER..span - page];
            let body = &buffer[span - page..];
            let computed = log_checksum(
                big_endian,
                body,
                log_checksum(big_endian, &header[..8], previous),
            );
            // SAFETY: `data` has room for `amount` bytes (the caller's).
            unsafe { std::ptr::copy_nonoverlapping(body.as_ptr(), data.cast::<u8>(), page) };
            if computed == stored_checksum(&header[16..24]) {
                ffi::SQLITE_OK
            } else {
                ffi::SQLITE_IOERR_DATA
            }
        })
    }
}

thread_local! {
    /// A reusable buffer for checked reads of the log.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// A reusable buffer for pages written with their checksum.
    static WRITE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
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
    if bytes.len() == FRAME_HEADER && offset >= LOG_HEADER as i64 {
        if bytes[4..8] == [0; 4] {
            // A frame of a transaction this connection writes.
            log.uncommitted_from = log.uncommitted_from.min(offset);
        } else {
            // The commit frame: its transaction is the log's from now on
            // (SQLite fixed the checksums of frames it rewrote before it).
            log.uncommitted_from = i64::MAX;
        }
    }
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
            log.uncommitted_from = i64::MAX;
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

unsafe extern "C" fn log_read(
    file: *mut ffi::sqlite3_file,
    data: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls this only on files `open` made logs, with room
    // for `amount` bytes at `data`.
    unsafe {
        let log = log(file);
        let rc = log.flush();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        // The page of a frame: a whole page where frame pages start.
        let first_page = (LOG_HEADER + FRAME_HEADER) as i64;
        let committed_frame_page = is_page(amount)
            && offset >= first_page
            && (offset - first_page) % (FRAME_HEADER as i64 + i64::from(amount)) == 0
            && offset < log.uncommitted_from;
        if committed_frame_page {
            log.read_checked(data, amount, offset)
        } else {
            read_inner(log.inner, data, amount, offset)
        }
    }
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

unsafe extern "C" fn log_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite calls this only on files `open` made logs.
    unsafe {
        let log = log(file);
        let rc = log.flush();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        #[cfg(feature = "fault-injection")]
        let began = log.faults.as_ref().map(|faults| faults.log_sync_begins());
        let rc = match methods(log.inner).xSync {
            Some(sync) => sync(log.inner, flags),
            None => ffi::SQLITE_IOERR_FSYNC,
        };
        #[cfg(feature = "fault-injection")]
        if let (Some(faults), Some(began), ffi::SQLITE_OK) = (&log.faults, began, rc) {
            faults.log_synced(began);
        }
        rc
    }
}

unsafe extern "C" fn log_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: SQLite calls this only on files `open` made logs.
    unsafe {
        let log = log(file);
        let rc = log.flush();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let rc = match methods(log.inner).xTruncate {
            Some(truncate) => truncate(log.inner, size),
            None => ffi::SQLITE_IOERR_TRUNCATE,
        };
        #[cfg(feature = "fault-injection")]
        if let (Some(faults), ffi::SQLITE_OK) = (&log.faults, rc) {
            faults.record_log_truncate(size);
        }
        rc
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

flushing!(log_file_size => xFileSize(size: *mut i64));
flushing!(log_lock => xLock(level: c_int));
flushing!(log_unlock => xUnlock(level: c_int));
flushing!(log_check_reserved_lock => xCheckReservedLock(out: *mut c_int));
flushing!(log_file_control => xFileControl(op: c_int, arg: *mut c_void));
flushing!(log_shm_map => xShmMap(page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void));
flushing!(log_shm_lock => xShmLock(offset: c_int, n: c_int, flags: c_int));
flushing!(log_shm_unmap => xShmUnmap(delete: c_int));

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
            & !ffi::SQLITE_IOCAP_SUBPAGE_READ
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

/// No memory-mapped reads of the log: every read of a page is checked.
unsafe extern "C" fn no_fetch(
    _file: *mut ffi::sqlite3_file,
    _offset: i64,
    _amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite passes a pointer to store the mapping in.
    unsafe { *out = std::ptr::null_mut() };
    ffi::SQLITE_OK
}

unsafe extern "C" fn no_unfetch(
    _file: *mut ffi::sqlite3_file,
    _offset: i64,
    _page: *mut c_void,
) -> c_int {
    ffi::SQLITE_OK
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
    xFetch: Some(no_fetch),
    xUnfetch: Some(no_unfetch),
};

// ---- the database file -----------------------------------------------------

/// A database file: SQLite's own file, its pages checksummed when its
/// first page says they reserve the room (`RESERVED_BYTES`).
#[repr(C)]
struct DatabaseFile {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// Whether pages carry checksums: what the file's first page said when
    /// it was opened, or last read or written.
    checksums: bool,
    /// Failures injected into this file's writes and syncs (`faults.rs`).
    #[cfg(feature = "fault-injection")]
    faults: Option<std::sync::Arc<crate::faults::IoFaults>>,
}

/// # Safety
/// `file` was opened by `open` as a database file and is not closed.
unsafe fn database<'a>(file: *mut ffi::sqlite3_file) -> &'a DatabaseFile {
    // SAFETY: guaranteed by the caller.
    unsafe { &*file.cast::<DatabaseFile>() }
}

/// # Safety
/// As [`database`]; SQLite calls a file's methods one at a time.
unsafe fn database_mut<'a>(file: *mut ffi::sqlite3_file) -> &'a mut DatabaseFile {
    // SAFETY: guaranteed by the caller.
    unsafe { &mut *file.cast::<DatabaseFile>() }
}

unsafe extern "C" fn database_read(
    file: *mut ffi::sqlite3_file,
    data: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls this on files `open` wrapped, with room for
    // `amount` bytes at `data`.
    unsafe {
        let database = database_mut(file);
        let rc = read_inner(database.inner, data, amount, offset);
        let bytes =
            std::slice::from_raw_parts(data.cast::<u8>(), usize::try_from(amount).unwrap_or(0));
        if rc == ffi::SQLITE_OK
            && offset == 0
            && let Some(reserves) = header_reserves_checksum(bytes)
        {
            database.checksums = reserves;
        }
        if rc == ffi::SQLITE_OK && database.checksums && is_page(amount) {
            let page = bytes;
            if !page_is_intact(page) {
                return ffi::SQLITE_IOERR_DATA;
            }
        }
        rc
    }
}

unsafe extern "C" fn database_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls this on files `open` wrapped, with `amount`
    // readable bytes at `data`.
    unsafe {
        let database = database_mut(file);
        let Some(write) = methods(database.inner).xWrite else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let bytes =
            std::slice::from_raw_parts(data.cast::<u8>(), usize::try_from(amount).unwrap_or(0));
        if offset == 0
            && let Some(reserves) = header_reserves_checksum(bytes)
        {
            // The first page says whether pages carry checksums (a new
            // database, or one being copied into checksummed pages).
            database.checksums = reserves;
        }
        if database.checksums && is_page(amount) {
            // The page with its checksum, in a copy: SQLite's buffer is its own.
            return WRITE_BUFFER.with_borrow_mut(|page| {
                page.clear();
                page.extend_from_slice(bytes);
                let body = page.len() - usize::from(RESERVED_BYTES);
                let checksum = page_checksum(page);
                page[body..].copy_from_slice(&checksum);
                database.write_through(write, page, amount, offset)
            });
        }
        database.write_through(write, bytes, amount, offset)
    }
}

impl DatabaseFile {
    /// Writes `bytes` at `offset` through SQLite's own `write`, unless a
    /// test armed a failure (`faults.rs`).
    ///
    /// # Safety
    /// `write` is the inner file's, which is open; `bytes` holds `amount` bytes.
    unsafe fn write_through(
        &self,
        write: Write,
        bytes: &[u8],
        amount: c_int,
        offset: i64,
    ) -> c_int {
        #[cfg(feature = "fault-injection")]
        if let Some(torn) = self.faults.as_ref().and_then(|f| f.take_database_write()) {
            // SAFETY: guaranteed by the caller.
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
        // SAFETY: guaranteed by the caller.
        let rc = unsafe { write(self.inner, bytes.as_ptr().cast(), amount, offset) };
        #[cfg(feature = "fault-injection")]
        if let (Some(faults), ffi::SQLITE_OK) = (&self.faults, rc) {
            faults.record_database_write(bytes, offset);
        }
        rc
    }
}

unsafe extern "C" fn database_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite calls this on files `open` wrapped.
    unsafe {
        let database = database(file);
        #[cfg(feature = "fault-injection")]
        let began = match &database.faults {
            Some(faults) if faults.take_database_sync() => return ffi::SQLITE_IOERR_FSYNC,
            Some(faults) => Some(faults.database_sync_begins()),
            None => None,
        };
        let rc = methods(database.inner)
            .xSync
            .map_or(ffi::SQLITE_IOERR_FSYNC, |sync| sync(database.inner, flags));
        #[cfg(feature = "fault-injection")]
        if let (Some(faults), Some(began), ffi::SQLITE_OK) = (&database.faults, began, rc) {
            faults.database_synced(began);
        }
        rc
    }
}

unsafe extern "C" fn database_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: SQLite calls this on files `open` wrapped.
    unsafe {
        let database = database(file);
        let rc = methods(database.inner)
            .xTruncate
            .map_or(ffi::SQLITE_IOERR_TRUNCATE, |truncate| {
                truncate(database.inner, size)
            });
        #[cfg(feature = "fault-injection")]
        if let (Some(faults), ffi::SQLITE_OK) = (&database.faults, rc) {
            faults.record_database_truncate(size);
        }
        rc
    }
}

unsafe extern "C" fn database_close(file: *mut ffi::sqlite3_file) -> c_int {
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

unsafe extern "C" fn database_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls this on files `open` wrapped.
    unsafe {
        let database = database(file);
        let characteristics = methods(database.inner)
            .xDeviceCharacteristics
            .map_or(0, |method| method(database.inner));
        // Whole pages only, so that every page read can be checked.
        characteristics & !ffi::SQLITE_IOCAP_SUBPAGE_READ
    }
}

unsafe extern "C" fn database_fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls this on files `open` wrapped.
    unsafe {
        let database = database(file);
        if database.checksums {
            // A mapped page could not be checked: SQLite reads it instead.
            *out = std::ptr::null_mut();
            return ffi::SQLITE_OK;
        }
        match methods(database.inner).xFetch {
            Some(fetch) => fetch(database.inner, offset, amount, out),
            None => {
                *out = std::ptr::null_mut();
                ffi::SQLITE_OK
            }
        }
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

forward!(database_file_size => xFileSize(size: *mut i64) -> c_int, ffi::SQLITE_IOERR_FSTAT);
forward!(database_lock => xLock(level: c_int) -> c_int, ffi::SQLITE_IOERR_LOCK);
forward!(database_unlock => xUnlock(level: c_int) -> c_int, ffi::SQLITE_IOERR_UNLOCK);
forward!(database_check_reserved_lock => xCheckReservedLock(out: *mut c_int) -> c_int, ffi::SQLITE_IOERR_CHECKRESERVEDLOCK);
forward!(database_file_control => xFileControl(op: c_int, arg: *mut c_void) -> c_int, ffi::SQLITE_NOTFOUND);
forward!(database_sector_size => xSectorSize() -> c_int, 0);
forward!(database_shm_map => xShmMap(page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int, ffi::SQLITE_IOERR_SHMMAP);
forward!(database_shm_lock => xShmLock(offset: c_int, n: c_int, flags: c_int) -> c_int, ffi::SQLITE_IOERR_SHMLOCK);
forward!(database_shm_barrier => xShmBarrier() -> (), ());
forward!(database_shm_unmap => xShmUnmap(delete: c_int) -> c_int, ffi::SQLITE_OK);
forward!(database_unfetch => xUnfetch(offset: i64, page: *mut c_void) -> c_int, ffi::SQLITE_OK);

static DATABASE_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(database_close),
    xRead: Some(database_read),
    xWrite: Some(database_write),
    xTruncate: Some(database_truncate),
    xSync: Some(database_sync),
    xFileSize: Some(database_file_size),
    xLock: Some(database_lock),
    xUnlock: Some(database_unlock),
    xCheckReservedLock: Some(database_check_reserved_lock),
    xFileControl: Some(database_file_control),
    xSectorSize: Some(database_sector_size),
    xDeviceCharacteristics: Some(database_device_characteristics),
    xShmMap: Some(database_shm_map),
    xShmLock: Some(database_shm_lock),
    xShmBarrier: Some(database_shm_barrier),
    xShmUnmap: Some(database_shm_unmap),
    xFetch: Some(database_fetch),
    xUnfetch: Some(database_unfetch),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_holds_its_checksum_and_any_damage_breaks_it() {
        let mut page: Vec<u8> = (0..2048u32).map(|n| (n * 31 % 251) as u8).collect();
        let body = page.len() - 8;
        let checksum = page_checksum(&page);
        page[body..].copy_from_slice(&checksum);
        assert!(page_is_intact(&page));
        for at in [0, 1, 100, 1000, body - 1, body, page.len() - 1] {
            let mut damaged = page.clone();
            damaged[at] ^= 0x10;
            assert!(!page_is_intact(&damaged), "a flipped bit at {at}");
        }
        assert!(!page_is_intact(&vec![0; 2048]), "a zeroed page is damage");
    }

    #[test]
    fn the_log_checksum_is_sqlites() {
        // The frame checksum SQLite stores is this one: checked against a
        // log SQLite wrote, frame by frame.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sqlite");
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .unwrap();
        connection
            .execute_batch(
                "PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (v); \
                 INSERT INTO t VALUES (randomblob(3000)); INSERT INTO t VALUES (randomblob(100));",
            )
            .unwrap();
        let log = std::fs::read(dir.path().join("log.sqlite-wal")).unwrap();
        let page = u32::from_be_bytes([log[8], log[9], log[10], log[11]]) as usize;
        let big_endian = u32::from_be_bytes([log[0], log[1], log[2], log[3]]) & 1 == 1;
        let mut running = stored_checksum(&log[24..32]);
        assert_eq!(
            log_checksum(big_endian, &log[..24], (0, 0)),
            running,
            "the header's"
        );
        let mut frames = 0;
        for frame in log[LOG_HEADER..].chunks_exact(FRAME_HEADER + page) {
            running = log_checksum(
                big_endian,
                &frame[FRAME_HEADER..],
                log_checksum(big_endian, &frame[..8], running),
            );
            assert_eq!(running, stored_checksum(&frame[16..24]), "frame {frames}");
            frames += 1;
        }
        assert!(frames >= 3, "{frames} frames");
    }
}
