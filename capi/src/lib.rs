//! mmsb's C ABI: `include/mmsb.h` declares these functions; each is a thin call into the
//! library (`ops::verify`, `format::checkpoint`, `replay::run_on_cpu`, `ops::sync`). A call
//! returns the command line's exit code (0, 1 bad data, 2 bad request or environment) and
//! leaves its message for `mmsb_last_error`. Panics never cross the boundary: one is caught
//! and reported as an error of kind 2.

// The C names, as the header spells them.
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::PathBuf;

use mmsb::Error;
use mmsb::format::checkpoint::Checkpoint;
use mmsb::ops::sync::{HeldPage, SeqRange, SyncLog};
use mmsb::replay::{ReplayLimit, ReplayOptions, State};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: String) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Runs `f`, turning its error or panic into a return code and the thread's last error.
fn call(f: impl FnOnce() -> mmsb::Result<()>) -> c_int {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_error(String::new());
            0
        }
        Ok(Err(e)) => {
            let code = if e.is_data_error() { 1 } else { 2 };
            set_error(e.to_string());
            code
        }
        Err(_) => {
            set_error("internal error: mmsb panicked (please report it)".into());
            2
        }
    }
}

fn invalid(why: &str) -> Error {
    Error::Invalid(why.into())
}

/// A C string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives for `'a`.
unsafe fn text<'a>(p: *const c_char, what: &str) -> mmsb::Result<&'a str> {
    if p.is_null() {
        return Err(invalid(&format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, and NUL-terminated per the caller's contract (the header's).
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| invalid(&format!("{what} is not UTF-8")))
}

/// An array argument of `n` items.
///
/// # Safety
/// `p` points to `n` initialized items that live for `'a` (it may be NULL when `n` is 0).
unsafe fn items<'a, T>(p: *const T, n: usize, what: &str) -> mmsb::Result<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(invalid(&format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, `n` items per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Paths from an array of C strings.
///
/// # Safety
/// As for [`items`] and [`text`].
unsafe fn paths(p: *const *const c_char, n: usize, what: &str) -> mmsb::Result<Vec<PathBuf>> {
    // SAFETY: the caller's contract.
    let list = unsafe { items(p, n, what)? };
    // SAFETY: each entry is a NUL-terminated string, per the caller's contract.
    list.iter()
        .map(|&s| unsafe { text(s, what) }.map(PathBuf::from))
        .collect()
}

/// The message of the last failed call on this thread ("" when none failed).
#[unsafe(no_mangle)]
pub extern "C" fn mmsb_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// `mmsb verify` on `paths`; see mmsb.h.
///
/// # Safety
/// `paths` holds `n_paths` NUL-terminated strings; `ok` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmsb_verify(paths_given: *const *const c_char, n_paths: usize, ok: *mut c_int) -> c_int {
    call(|| {
        // SAFETY: the caller's contract.
        let list = unsafe { paths(paths_given, n_paths, "paths")? };
        let report = mmsb::ops::verify::verify(&list, None, false)?;
        if ok.is_null() {
            return Err(invalid("ok is NULL"));
        }
        // SAFETY: non-NULL and writable per the caller's contract.
        unsafe { *ok = c_int::from(report.ok) };
        if !report.ok {
            let problems: Vec<String> = report.problems.iter().map(|p| p.message.clone()).collect();
            set_error(problems.join("\n"));
            return Ok(());
        }
        Ok(())
    })
}

/// An opened checkpoint, with its names, dtypes and shapes as C data for `mmsb_page`.
pub struct mmsb_checkpoint {
    checkpoint: Checkpoint,
    names: Vec<Option<CString>>,
    dtypes: Vec<Option<CString>>,
}

/// Opens a checkpoint; see mmsb.h.
///
/// # Safety
/// `path` is a NUL-terminated string; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmsb_checkpoint_open(path: *const c_char, out: *mut *mut mmsb_checkpoint) -> c_int {
    call(|| {
        // SAFETY: the caller's contract.
        let path = unsafe { text(path, "path")? };
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let checkpoint = Checkpoint::open(path.as_ref())?;
        let c = |s: Option<&str>| s.and_then(|s| CString::new(s).ok());
        let pages = checkpoint.pages();
        let names = pages.iter().map(|p| c(p.meta.name.as_deref())).collect();
        let dtypes = pages
            .iter()
            .map(|p| c(p.meta.tensor.as_ref().map(|t| t.dtype.as_str())))
            .collect();
        let opened = Box::new(mmsb_checkpoint {
            checkpoint,
            names,
            dtypes,
        });
        // SAFETY: non-NULL and writable per the caller's contract.
        unsafe { *out = Box::into_raw(opened) };
        Ok(())
    })
}

/// Closes a checkpoint opened by `mmsb_checkpoint_open` (NULL is ignored).
///
/// # Safety
/// `checkpoint` came from `mmsb_checkpoint_open` and is not used after.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmsb_checkpoint_close(checkpoint: *mut mmsb_checkpoint) {
    if !checkpoint.is_null() {
        // SAFETY: made by Box::into_raw in mmsb_checkpoint_open, closed once per the contract.
        drop(unsafe { Box::from_raw(checkpoint) });
    }
}

/// The number of pages (0 for NULL).
///
/// # Safety
/// `checkpoint` is NULL or an open checkpoint.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmsb_checkpoint_page_count(checkpoint: *const mmsb_checkpoint) -> u64 {
    // SAFETY: NULL or an open checkpoint per the contract.
    unsafe { checkpoint.as_ref() }.map_or(0, |c| c.checkpoint.pages().len() as u64)
}

/// One page of a checkpoint's table; see mmsb.h.
#[repr(C)]
pub struct mmsb_page {
    id: u64,
    len: u64,
    epoch: u64,
    crc32c: u32,
    name: *const c_char,
    dtype: *const c_char,
    shape: *const u64,
    ndim: usize,
}

/// One page of the table; see mmsb.h.
///
/// # Safety
/// `checkpoint` is an open checkpoint; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmsb_checkpoint_page(
    checkpoint: *const mmsb_checkpoint,
    index: u64,
    out: *mut mmsb_page,
) -> c_int {
    call(|| {
        // SAFETY: NULL or an open checkpoint per the contract.
        let c = unsafe { checkpoint.as_ref() }.ok_or_else(|| invalid("checkpoint is NULL"))?;
        let i = usize::try_from(index).map_err(|_| invalid("index out of range"))?;
        let p = c
            .checkpoint
            .pages()
            .get(i)
            .ok_or_else(|| invalid("index out of range"))?;
        let shape = p.meta.tensor.as_ref().map_or(&[][..], |t| &t.shape[..]);
        let page = mmsb_page {
            id: p.id,
            len: p.len,
            epoch: p.epoch,
            crc32c: p.crc32c,
            name: c.names[i].as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            dtype: c.dtypes[i].as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            shape: shape.as_ptr(),
            ndim: shape.len(),
        };
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: non-NULL and writable per the contract.
        unsafe { *out = page };
        Ok(())
    })
}

/// The state hash as 64 hex digits and a NUL; see mmsb.h.
///
/// # Safety
/// `checkpoint` is an open checkpoint; `out` has room for 65 bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmsb_checkpoint_state_hash(checkpoint: *const mmsb_checkpoint, out: *mut c_char) -> c_int {
    call(|| {
        // SAFETY: NULL or an open checkpoint per the contract.
        let c = unsafe { checkpoint.as_ref() }.ok_or_else(|| invalid("checkpoint is NULL"))?;
        let hex = CString::new(c.checkpoint.state_hash().to_hex()).map_err(|e| invalid(&e.to_string()))?;
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let bytes = hex.as_bytes_with_nul();
        // SAFETY: `out` has room for 65 bytes per the contract; the hex is 64 digits and a NUL.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), out, bytes.len().min(65)) };
        Ok(())
    })
}

/// A tensor the caller holds; see mmsb.h.
#[repr(C)]
pub struct mmsb_tensor {
    name: *const c_char,
    dtype: *const c_char,
    shape: *const u64,
    ndim: usize,
    data: *mut c_void,
    len: u64,
}

/// A tensor's description, read from its C struct.
///
/// # Safety
/// The struct's strings are NUL-terminated and `shape` holds `ndim` items.
unsafe fn describe(t: &mmsb_tensor) -> mmsb::Result<HeldPage> {
    // SAFETY: the caller's contract, field by field.
    let name = unsafe { text(t.name, "tensor name")? }.to_owned();
    let dtype = if t.dtype.is_null() {
        None
    } else {
        // SAFETY: as above.
        Some(unsafe { text(t.dtype, "tensor dtype")? }.to_owned())
    };
    let shape = match dtype {
        // SAFETY: as above.
        Some(_) => unsafe { items(t.shape, t.ndim, "tensor shape")? }.to_vec(),
        None => Vec::new(),
    };
    Ok(HeldPage {
        name,
        dtype,
        shape,
        len: t.len,
    })
}

fn limit(to_seq: u64) -> Option<u64> {
    (to_seq != u64::MAX).then_some(to_seq)
}

/// Replays onto the caller's buffers; see mmsb.h.
///
/// # Safety
/// Strings NUL-terminated; `logs` holds `n_logs` of them; `tensors` holds `n_tensors` tensors,
/// each `data` a writable buffer of `len` bytes (in device `ordinal`'s memory when `ordinal` >=
/// 0), no two overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmsb_replay(
    checkpoint: *const c_char,
    logs: *const *const c_char,
    n_logs: usize,
    to_seq: u64,
    ordinal: c_int,
    tensors: *const mmsb_tensor,
    n_tensors: usize,
) -> c_int {
    call(|| {
        // SAFETY: the caller's contract.
        let (checkpoint, logs, tensors) = unsafe {
            (
                text(checkpoint, "checkpoint")?,
                paths(logs, n_logs, "logs")?,
                items(tensors, n_tensors, "tensors")?,
            )
        };
        // SAFETY: the caller's contract.
        let held: Vec<HeldPage> = tensors
            .iter()
            .map(|t| unsafe { describe(t) })
            .collect::<mmsb::Result<_>>()?;
        let gpu = match ordinal {
            n if n < 0 => None,
            n => Some(mmsb::gpu::Gpu::open(n as usize, mmsb::gpu::KernelCompile::WhenNeeded)?),
        };
        let options = ReplayOptions {
            limit: ReplayLimit {
                to_seq: limit(to_seq),
                to_epoch: None,
            },
            ..Default::default()
        };
        let mut visit = |state: &State<'_>| -> mmsb::Result<()> {
            for (h, t) in held.iter().zip(tensors) {
                let page = state
                    .pages()
                    .find(|(_, p)| p.meta.name.as_deref() == Some(h.name.as_str()))
                    .map(|(_, p)| p)
                    .ok_or_else(|| invalid(&format!("tensor {:?}: no page of that name", h.name)))?;
                let meta = page.meta.tensor.as_ref();
                if page.data().len() as u64 != h.len
                    || (h.dtype.is_some()
                        && (meta.map(|m| &m.dtype) != h.dtype.as_ref() || meta.map(|m| &m.shape) != Some(&h.shape)))
                {
                    return Err(invalid(&format!(
                        "tensor {:?}: {} bytes given for a page of {} bytes, or its dtype or shape differs",
                        h.name,
                        h.len,
                        page.data().len()
                    )));
                }
                match &gpu {
                    Some(g) => mmsb::gpu::driver::copy_h2d_sync(&g.stream, t.data as u64, page.data())?,
                    None if !page.data().is_empty() => {
                        // SAFETY: `data` is a writable host buffer of `len` bytes (checked equal to
                        // the page's) per the caller's contract.
                        let dst = unsafe { std::slice::from_raw_parts_mut(t.data.cast::<u8>(), page.data().len()) };
                        dst.copy_from_slice(page.data());
                    }
                    None => {}
                }
            }
            Ok(())
        };
        mmsb::replay::run_on_cpu(checkpoint.as_ref(), &logs, &options, &mut visit)?;
        Ok(())
    })
}

/// Applies a sync log's records in place; see mmsb.h.
///
/// # Safety
/// As for `mmsb_replay`; `last_seq` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmsb_sync_apply(
    log: *const c_char,
    from_seq: u64,
    to_seq: u64,
    ordinal: c_int,
    tensors: *const mmsb_tensor,
    n_tensors: usize,
    last_seq: *mut u64,
) -> c_int {
    call(|| {
        // SAFETY: the caller's contract.
        let (log, tensors) = unsafe { (text(log, "log")?, items(tensors, n_tensors, "tensors")?) };
        // SAFETY: the caller's contract.
        let held: Vec<HeldPage> = tensors
            .iter()
            .map(|t| unsafe { describe(t) })
            .collect::<mmsb::Result<_>>()?;
        let buffers: Vec<(&str, usize, usize)> = held
            .iter()
            .zip(tensors)
            .map(|(h, t)| (h.name.as_str(), t.data as usize, t.len as usize))
            .collect();
        mmsb::ops::sync::refuse_shared_memory(&buffers)?;
        let range = SeqRange {
            from: (from_seq != 0).then_some(from_seq),
            to: limit(to_seq),
        };
        let paths = [PathBuf::from(log)];
        let report = if ordinal >= 0 {
            let gpu = std::sync::Arc::new(mmsb::gpu::Gpu::open(
                ordinal as usize,
                mmsb::gpu::KernelCompile::WhileStarting,
            )?);
            let ptrs: Vec<u64> = tensors.iter().map(|t| t.data as u64).collect();
            // SAFETY: each tensor's `data` is `len` bytes of device memory of device `ordinal`,
            // writable, its own (checked above), with no work queued on it, per the contract.
            unsafe { mmsb::ops::sync::apply_to_device(&gpu, &paths, &held, &ptrs, range)? }
        } else {
            let sync = SyncLog::open_at(&paths, range.from)?;
            let pages = tensors
                .iter()
                .map(|t| -> &mut [u8] {
                    if t.len == 0 {
                        return &mut [];
                    }
                    // SAFETY: a writable host buffer of `len` bytes, overlapping no other
                    // (checked above), per the contract.
                    unsafe { std::slice::from_raw_parts_mut(t.data.cast::<u8>(), t.len as usize) }
                })
                .collect();
            mmsb::ops::sync::apply_to_host(&sync, &held, pages, range)?
        };
        if !last_seq.is_null() {
            // SAFETY: non-NULL and writable per the contract.
            unsafe { *last_seq = report.last_seq.unwrap_or(0) };
        }
        Ok(())
    })
}
