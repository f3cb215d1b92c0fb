//! SQLite's own allocations, moved to mimalloc (feature `mimalloc`).
//!
//! SQLite allocates through the C library's `malloc` whatever Rust's global
//! allocator is: for each statement (its cursors, the table that collects a
//! `RETURNING` clause, the JSONB a `jsonb()` call builds) and for each page it
//! reads. Under load glibc's allocator took 12 % of the writer thread's time
//! (`cargo bench`, `update/folio_32_sessions`), and SQLite's allocation
//! statistics take a global mutex per call. [`allocate_with_mimalloc`] hands
//! SQLite mimalloc instead and switches the statistics off.
//!
//! SQLite accepts this only before it is first used in the process, and not
//! while another thread starts it: so it is a call for `main`, before any
//! thread opens a database, as choosing a global allocator is.

#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};

use rusqlite::ffi;

unsafe extern "C" fn malloc(size: c_int) -> *mut c_void {
    // SAFETY: mimalloc's malloc takes any size.
    unsafe { libmimalloc_sys::mi_malloc(usize::try_from(size).unwrap_or(0)) }
}

unsafe extern "C" fn free(pointer: *mut c_void) {
    // SAFETY: SQLite frees only what `malloc`/`realloc` above returned.
    unsafe { libmimalloc_sys::mi_free(pointer) }
}

unsafe extern "C" fn realloc(pointer: *mut c_void, size: c_int) -> *mut c_void {
    // SAFETY: as for `free`.
    unsafe { libmimalloc_sys::mi_realloc(pointer, usize::try_from(size).unwrap_or(0)) }
}

unsafe extern "C" fn size(pointer: *mut c_void) -> c_int {
    // SAFETY: as for `free`.
    let size = unsafe { libmimalloc_sys::mi_usable_size(pointer) };
    c_int::try_from(size).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn roundup(size: c_int) -> c_int {
    // SAFETY: a pure function of its argument.
    let rounded = unsafe { libmimalloc_sys::mi_good_size(usize::try_from(size).unwrap_or(0)) };
    c_int::try_from(rounded).unwrap_or(size)
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn shutdown(_: *mut c_void) {}

/// Makes SQLite allocate with mimalloc and keep no allocation statistics.
/// Returns `false`, changing nothing, when SQLite was already in use.
///
/// Call it at the start of `main`, before any thread opens a database (the
/// `folio` binary and Folio's benchmarks do): SQLite's configuration must
/// not race its initialization.
///
/// ```
/// // In `main`, first thing:
/// folio_sqlite::allocate_with_mimalloc();
/// ```
pub fn allocate_with_mimalloc() -> bool {
    let methods = ffi::sqlite3_mem_methods {
        xMalloc: Some(malloc),
        xFree: Some(free),
        xRealloc: Some(realloc),
        xSize: Some(size),
        xRoundup: Some(roundup),
        xInit: Some(init),
        xShutdown: Some(shutdown),
        pAppData: std::ptr::null_mut(),
    };
    // SAFETY: SQLite copies the methods; before initialization these calls
    // only set its configuration, and after it they fail with SQLITE_MISUSE.
    unsafe {
        if ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &raw const methods) != ffi::SQLITE_OK {
            return false;
        }
        ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int);
    }
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn once_sqlite_is_in_use_the_allocator_stays() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        assert!(!super::allocate_with_mimalloc());
        let answer: i64 = connection
            .query_row("SELECT 6 * 7", [], |row| row.get(0))
            .unwrap();
        assert_eq!(answer, 42);
    }
}
