//! `mmsb._mmsb`: the native half of the Python package. Every function here is a thin call into
//! the library's front doors (`replay::run` and `replay::run_on_cpu`, `ops::inspect`,
//! `ops::verify`, `ops::safetensors_io::tensor_pages` with the checkpoint writer); reports cross
//! as the JSON documents the command line prints with `--json`, which the Python half turns into
//! objects. Errors become `mmsb.Error` (or `mmsb.CorruptionError` when the data is bad) carrying
//! the file, the byte offset and the kind.

use std::path::PathBuf;
use std::sync::Arc;

use dlpark::DlpackFlags;
use dlpark::ffi::{DLDataType, DLDataTypeCode, DLDevice, DLManagedTensor, DLManagedTensorVersioned};
use dlpark::metadata::Dynamic;
use dlpark::python::{DlpackExporter, ExportRequest, export_dlpack};

use mmsb::Error as MmsbError;
use mmsb::metrics::{Outcome, RunFiles, RunMetrics};
use mmsb::replay::{Device, ReplayLimit, ReplayOptions};
use mmsb::select::PageSelector;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyTuple};

create_exception!(
    mmsb,
    Error,
    PyException,
    "An mmsb call failed. `path` and `offset` name the file and byte where known, `kind` says \
     what failed, `exit_code` is the command line's (1: the data is bad, 2: the request or the \
     environment is)."
);
create_exception!(
    mmsb,
    CorruptionError,
    Error,
    "The data is bad: a file that is not valid mmsb, a log record that does not apply, or a log \
     written against another state."
);

/// The Python exception for a library error, with its attributes set.
fn to_py(py: Python<'_>, e: MmsbError) -> PyErr {
    let (kind, path, offset, seq) = match &e {
        MmsbError::Io { path, .. } => ("io", Some(path.clone()), None, None),
        MmsbError::Corrupt { path, offset, .. } => ("corrupt", Some(path.clone()), Some(*offset), None),
        MmsbError::DeltaRejected { path, offset, seq, .. } => {
            ("delta_rejected", Some(path.clone()), Some(*offset), Some(*seq))
        }
        MmsbError::WrongBase { path, .. } | MmsbError::HeldPagesNotBase { path, .. } => {
            ("wrong_base", Some(path.clone()), None, None)
        }
        MmsbError::Locked { path, .. } => ("locked", Some(path.clone()), None, None),
        MmsbError::OutputRefused { path, .. } => ("output_refused", Some(path.clone()), None, None),
        MmsbError::Gpu(_) => ("gpu", None, None, None),
        _ => ("invalid", None, None, None),
    };
    let data = e.is_data_error();
    let err = if data {
        CorruptionError::new_err(e.to_string())
    } else {
        Error::new_err(e.to_string())
    };
    let value = err.value(py);
    // Setting an attribute on a fresh exception object does not fail.
    let _ = value.setattr("kind", kind);
    let _ = value.setattr("path", path.map(|p| p.display().to_string()));
    let _ = value.setattr("offset", offset);
    let _ = value.setattr("seq", seq);
    let _ = value.setattr("exit_code", if data { 1u8 } else { 2 });
    err
}

/// The pages `pages` selects (ids, ranges, name globs, as `--pages` takes them); all without.
fn selector(py: Python<'_>, pages: Option<Vec<String>>) -> PyResult<PageSelector> {
    pages.map_or_else(
        || Ok(PageSelector::default()),
        |p| PageSelector::parse(&p).map_err(|e| to_py(py, e)),
    )
}

fn paths(list: Vec<String>) -> Vec<PathBuf> {
    list.into_iter().map(PathBuf::from).collect()
}

/// The files a load reads: the checkpoint and the logs.
fn reading(checkpoint: &str, logs: &[PathBuf]) -> RunFiles {
    RunFiles {
        read: std::iter::once(PathBuf::from(checkpoint))
            .chain(logs.iter().cloned())
            .collect(),
        ..Default::default()
    }
}

thread_local! {
    /// The figures of this thread's last measured call, for `last_metrics`.
    static LAST_METRICS: std::cell::RefCell<Option<RunMetrics>> = const { std::cell::RefCell::new(None) };
}

/// Runs `work` as one run of `command` over `files`, measured as the command line measures its
/// runs (`--metrics-file`): `work` adds what its report knows and says how it ended; an error
/// ends the run as the command line's exit code would. The figures become this thread's last
/// metrics (`last_metrics`), whether the call succeeded or not.
fn measured<T>(
    command: &str,
    files: RunFiles,
    work: impl FnOnce(&mut RunMetrics) -> mmsb::Result<(T, Outcome)>,
) -> mmsb::Result<T> {
    let mut m = RunMetrics::start(command, files);
    let result = work(&mut m);
    m.end(match &result {
        Ok((_, outcome)) => *outcome,
        Err(e) => Outcome::of_error(e),
    });
    LAST_METRICS.with(|last| *last.borrow_mut() = Some(m));
    result.map(|(t, _)| t)
}

/// The figures of this thread's last call into the library (`RunMetrics` as JSON), or None
/// before the first.
#[pyfunction]
fn last_metrics() -> PyResult<Option<String>> {
    LAST_METRICS
        .with(|last| last.borrow().as_ref().map(serde_json::to_string).transpose())
        .map_err(|e| Error::new_err(e.to_string()))
}

fn metrics_from(json: &str) -> PyResult<RunMetrics> {
    serde_json::from_str(json).map_err(|e| Error::new_err(format!("not mmsb metrics: {e}")))
}

/// The metrics `json` (as `last_metrics` gives them) in the Prometheus text format.
#[pyfunction]
fn metrics_text(json: &str) -> PyResult<String> {
    Ok(metrics_from(json)?.to_prometheus_text())
}

/// Writes the metrics `json` to `path` in the Prometheus text format, atomically (temporary
/// file, fsync, rename), as node_exporter's textfile collector expects.
#[pyfunction]
fn write_metrics(py: Python<'_>, path: String, json: &str) -> PyResult<()> {
    metrics_from(json)?
        .write_prometheus(path.as_ref())
        .map_err(|e| to_py(py, e))
}

/// `mmsb inspect --json CHECKPOINT`'s document: header, sections, metadata and page table.
#[pyfunction]
fn inspect_checkpoint(py: Python<'_>, path: String) -> PyResult<String> {
    let info =
        mmsb::ops::inspect::inspect_checkpoint(path.as_ref(), PageSelector::default()).map_err(|e| to_py(py, e))?;
    serde_json::to_string(&info).map_err(|e| Error::new_err(e.to_string()))
}

/// `mmsb verify --json PATHS`'s report (a report with problems is returned, not raised).
#[pyfunction]
#[pyo3(signature = (paths_given, rederive=false))]
fn verify(py: Python<'_>, paths_given: Vec<String>, rederive: bool) -> PyResult<String> {
    let paths = paths(paths_given);
    let files = RunFiles {
        read: paths.clone(),
        ..Default::default()
    };
    let report = py
        .detach(|| {
            measured("verify", files, |m| {
                let report = mmsb::ops::verify::verify(&paths, None, rederive)?;
                m.add(&report);
                let outcome = if report.ok { Outcome::Ok } else { Outcome::DataBad };
                Ok((report, outcome))
            })
        })
        .map_err(|e| to_py(py, e))?;
    serde_json::to_string(&report).map_err(|e| Error::new_err(e.to_string()))
}

/// A page's bytes in place in a private (copy-on-write) mapping of the checkpoint: numpy takes
/// them through `__array_interface__` (the array keeps this object, and so the mapping, alive),
/// writable, and a write changes this process's copy, never the file.
#[pyclass(frozen, module = "mmsb._mmsb")]
struct MappedBytes {
    map: Arc<mmsb::mmap::PrivateMap>,
    offset: usize,
    len: usize,
}

#[pymethods]
impl MappedBytes {
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let d = pyo3::types::PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("shape", (self.len,))?;
        d.set_item("typestr", "|u1")?;
        d.set_item("data", (self.map.address() + self.offset, false))?;
        Ok(d)
    }

    fn __len__(&self) -> usize {
        self.len
    }
}

/// Replays `checkpoint` plus `logs` on the CPU (every page's CRC32C and every record checked)
/// and returns `(report_json, pages)`, `pages` a list of `(id, name, dtype, shape, bytes)` in
/// id order (`name`, `dtype` and `shape` None where the page has none). `bytes` is a
/// `bytearray` (a copy), or with `alias` a `MappedBytes` for a page no record changed (where the
/// checkpoint can be mapped privately; a copy otherwise).
#[pyfunction]
#[pyo3(signature = (checkpoint, logs, to_seq=None, pages=None, alias=false))]
fn load_cpu<'py>(
    py: Python<'py>,
    checkpoint: String,
    logs: Vec<String>,
    to_seq: Option<u64>,
    pages: Option<Vec<String>>,
    alias: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    let selector = selector(py, pages)?;
    let options = ReplayOptions {
        limit: ReplayLimit { to_seq, to_epoch: None },
        pages: selector,
        ..Default::default()
    };
    let out = PyList::empty(py);
    let mut visit = |state: &mmsb::replay::State<'_>| -> mmsb::Result<()> {
        // The same file as the one read, mapped again privately: the offsets found in the
        // read-only mapping name the same bytes in it. Where that cannot be had (the file was
        // replaced since), pages are copied.
        let private = match state.mapping().filter(|_| alias) {
            Some(read) => mmsb::mmap::PrivateMap::of_same_file(checkpoint.as_ref(), read)
                .ok()
                .map(|p| (read, Arc::new(p))),
            None => None,
        };
        for (id, page) in state.pages() {
            let (dtype, shape) = match &page.meta.tensor {
                Some(t) => (Some(t.dtype.clone()), Some(t.shape.clone())),
                None => (None, None),
            };
            let bytes = match private.as_ref().filter(|_| page.is_mapped()) {
                Some((read, map)) => {
                    let mapped = MappedBytes {
                        map: map.clone(),
                        offset: page.data().as_ptr() as usize - read.bytes().as_ptr() as usize,
                        len: page.data().len(),
                    };
                    Bound::new(py, mapped)
                        .map_err(|e| mmsb::Error::Invalid(e.to_string()))?
                        .into_any()
                }
                None => PyByteArray::new(py, page.data()).into_any(),
            };
            let item = (id, page.meta.name.clone(), dtype, shape, bytes);
            out.append(item).map_err(|e| mmsb::Error::Invalid(e.to_string()))?;
        }
        Ok(())
    };
    let logs = paths(logs);
    let files = reading(&checkpoint, &logs);
    let report = measured("load", files, |m| {
        let report = mmsb::replay::run_on_cpu(checkpoint.as_ref(), &logs, &options, &mut visit)?;
        m.add(&report);
        Ok((report, Outcome::Ok))
    })
    .map_err(|e| to_py(py, e))?;
    let report = serde_json::to_string(&report).map_err(|e| Error::new_err(e.to_string()))?;
    PyTuple::new(py, [report.into_pyobject(py)?.into_any(), out.into_any()])
}

/// A tensor to save: name, safetensors dtype name, shape, bytes, and an object whose
/// `tobytes()` gives them.
type TensorSource<'py> = (String, String, Vec<u64>, u64, Bound<'py, PyAny>);

/// Writes a checkpoint of named tensors at `path`, atomically, and returns its state hash (hex).
/// Each tensor is `(name, dtype, shape, nbytes, source)`: `dtype` a safetensors dtype name and
/// `source` an object whose `tobytes()` gives the `nbytes` bytes, asked for one tensor at a
/// time while the file is written (so at most one tensor's bytes are copied at once).
#[pyfunction]
#[pyo3(signature = (path, tensors, metadata=None))]
fn save(
    py: Python<'_>,
    path: String,
    tensors: Vec<TensorSource<'_>>,
    metadata: Option<std::collections::BTreeMap<String, String>>,
) -> PyResult<String> {
    use mmsb::format::checkpoint::CheckpointWriter;
    use mmsb::ops::safetensors_io::{TensorSpec, tensor_pages};
    let specs = tensors
        .iter()
        .map(|(name, dtype, shape, len, _)| TensorSpec {
            name: name.clone(),
            dtype: dtype.clone(),
            shape: shape.clone(),
            len: *len,
        })
        .collect();
    let files = RunFiles {
        written: vec![PathBuf::from(&path)],
        ..Default::default()
    };
    // A Python error from a source's `tobytes()` ends the run too; it is raised as it was.
    let mut raised: Option<PyErr> = None;
    let written = measured("save", files, |m| {
        let pages = tensor_pages(specs, 0)?;
        let mut w = CheckpointWriter::create(path.as_ref(), pages, metadata.unwrap_or_default())?;
        for (name, _, _, len, source) in &tensors {
            let bytes = match source
                .call_method0("tobytes")
                .and_then(|b| Ok(b.cast_into::<PyBytes>()?))
            {
                Ok(b) => b,
                Err(e) => {
                    raised = Some(e);
                    return Err(MmsbError::Invalid(format!("{name}: its tobytes() failed")));
                }
            };
            let bytes = bytes.as_bytes();
            if bytes.len() as u64 != *len {
                return Err(MmsbError::Invalid(format!(
                    "{name}: {} bytes given for a tensor of {len}",
                    bytes.len()
                )));
            }
            w.write(bytes)?;
            m.pages += 1;
        }
        let hash = w.finish()?;
        m.state_hash = Some(hash.to_hex());
        Ok((hash, Outcome::Ok))
    });
    if let Some(e) = raised {
        return Err(e);
    }
    Ok(written.map_err(|e| to_py(py, e))?.to_hex())
}

/// The pages of one GPU replay, kept alive by every tensor that aliases them (each DLPack
/// export holds a reference): the device memory is freed when the last of them is.
struct DevicePages(mmsb::gpu::store::DevicePageStore);

/// A page in device memory, handed to torch (or any DLPack consumer) without a copy.
#[pyclass(frozen, module = "mmsb._mmsb")]
struct DeviceTensor {
    pages: Arc<DevicePages>,
    ptr: u64,
    shape: Vec<u64>,
    dtype: DLDataType,
    ordinal: i32,
}

/// The DLPack dtype of a safetensors dtype name.
fn dlpack_dtype(name: &str) -> Option<DLDataType> {
    Some(match name {
        "BOOL" => DLDataType::BOOL,
        "U8" => DLDataType::U8,
        "I8" => DLDataType::I8,
        "U16" => DLDataType::U16,
        "I16" => DLDataType::I16,
        "F16" => DLDataType::scalar(DLDataTypeCode::FLOAT, 16),
        "BF16" => DLDataType::scalar(DLDataTypeCode::BFLOAT, 16),
        "U32" => DLDataType::U32,
        "I32" => DLDataType::I32,
        "F32" => DLDataType::F32,
        "U64" => DLDataType::U64,
        "I64" => DLDataType::I64,
        "F64" => DLDataType::F64,
        "F8_E4M3" => DLDataType::F8E4M3FN,
        "F8_E5M2" => DLDataType::F8E5M2,
        _ => return None,
    })
}

impl DeviceTensor {
    fn managed<M: dlpark::ManagedTensorBase>(&self) -> PyResult<dlpark::Managed<M>> {
        let mut tensor = Dynamic::compact(self.shape.clone())
            .initialize_as::<M>(self.pages.clone())
            .map_err(|e| Error::new_err(e.to_string()))?;
        tensor
            .set_data(self.ptr as *mut std::ffi::c_void)
            .set_dtype(self.dtype)
            .set_device(DLDevice::cuda(self.ordinal));
        // SAFETY: `ptr` is the start of this page in the store's device memory, which holds
        // the page's bytes (its length is the dtype's size times the shape's product, checked
        // when the page was made a tensor) and stays allocated while the managed tensor holds
        // its reference to the store; the shape and compact strides were written by dlpark.
        Ok(unsafe { tensor.finish() })
    }
}

impl DlpackExporter for DeviceTensor {
    fn device(&self) -> DLDevice {
        DLDevice::cuda(self.ordinal)
    }

    fn flags(&self) -> DlpackFlags {
        DlpackFlags::empty()
    }

    fn prepare_export(&self, _py: Python<'_>, _request: &ExportRequest<'_>) -> PyResult<()> {
        // The replay synchronized its stream before the tensors were made: nothing is pending.
        Ok(())
    }

    fn export_legacy(&self, _py: Python<'_>) -> PyResult<dlpark::Managed<DLManagedTensor>> {
        self.managed()
    }

    fn export_versioned(&self, _py: Python<'_>) -> PyResult<dlpark::Managed<DLManagedTensorVersioned>> {
        self.managed()
    }
}

#[pymethods]
impl DeviceTensor {
    #[pyo3(signature = (*, stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__(
        &self,
        py: Python<'_>,
        stream: Option<Bound<'_, PyAny>>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<(u32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let request = ExportRequest::parse(stream.as_ref(), max_version, dl_device, copy)?;
        export_dlpack(self, py, request)
    }

    fn __dlpack_device__(&self) -> (u32, i32) {
        (DLDevice::cuda(self.ordinal).device_type.0, self.ordinal)
    }
}

/// Replays `checkpoint` plus `logs` on CUDA device `ordinal` (through the same front door as
/// `mmsb replay --device cuda:N`) and returns `(report_json, pages)`, `pages` a list of
/// `(id, name, dtype, shape, DeviceTensor)` in id order, each aliasing the device pages.
#[pyfunction]
#[pyo3(signature = (checkpoint, logs, ordinal, to_seq=None, pages=None, verify=false))]
fn load_cuda<'py>(
    py: Python<'py>,
    checkpoint: String,
    logs: Vec<String>,
    ordinal: usize,
    to_seq: Option<u64>,
    pages: Option<Vec<String>>,
    verify: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    let selector = selector(py, pages)?;
    let logs = paths(logs);
    let files = reading(&checkpoint, &logs);
    let replayed = py
        .detach(|| {
            measured("load", files, |m| {
                // The device stays open between calls (context, stream, kernels, pinned staging).
                let options = ReplayOptions {
                    device: Device::Cuda(ordinal),
                    limit: ReplayLimit { to_seq, to_epoch: None },
                    pages: selector,
                    verify,
                    opened: Some(gpu(ordinal)?),
                    ..Default::default()
                };
                let replayed = mmsb::replay::run(checkpoint.as_ref(), &logs, &options)?;
                m.add(&replayed.report);
                Ok((replayed, Outcome::Ok))
            })
        })
        .map_err(|e| to_py(py, e))?;
    let report = serde_json::to_string(&replayed.report).map_err(|e| Error::new_err(e.to_string()))?;
    let store = replayed
        .device_pages
        .into_iter()
        .next()
        .ok_or_else(|| Error::new_err("a replay on one device kept no device pages"))?;
    store.gpu().synchronize().map_err(|e| to_py(py, e))?;
    let pages = Arc::new(DevicePages(store));
    let out = PyList::empty(py);
    let ids: Vec<u64> = pages.0.page_ids().collect();
    for id in ids {
        let (_epoch, meta) = pages.0.page_info(id).expect("a listed page");
        let handle = pages.0.page(id).expect("a listed page");
        let len = handle.len();
        let (dtype, shape) = match &meta.tensor {
            Some(t) => (Some(t.dtype.clone()), t.shape.clone()),
            None => (None, vec![len]),
        };
        let dl = match &dtype {
            Some(d) => dlpack_dtype(d)
                .ok_or_else(|| Error::new_err(format!("page {id}: dtype {d} has no DLPack equivalent",)))?,
            None => DLDataType::U8,
        };
        let tensor = DeviceTensor {
            pages: pages.clone(),
            ptr: handle.device_ptr(),
            shape: shape.clone(),
            dtype: dl,
            ordinal: ordinal as i32,
        };
        let item = (id, meta.name.clone(), dtype, shape, len, tensor);
        out.append(item)?;
    }
    PyTuple::new(py, [report.into_pyobject(py)?.into_any(), out.into_any()])
}

/// The native module.
#[pymodule]
fn _mmsb(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("Error", m.py().get_type::<Error>())?;
    m.add("CorruptionError", m.py().get_type::<CorruptionError>())?;
    m.add_function(wrap_pyfunction!(inspect_checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(diff, m)?)?;
    m.add_function(wrap_pyfunction!(load_cpu, m)?)?;
    m.add_function(wrap_pyfunction!(save, m)?)?;
    m.add_function(wrap_pyfunction!(load_cuda, m)?)?;
    m.add_function(wrap_pyfunction!(crc32c_host, m)?)?;
    m.add_function(wrap_pyfunction!(crc32c_cuda, m)?)?;
    m.add_function(wrap_pyfunction!(sync_create, m)?)?;
    m.add_function(wrap_pyfunction!(sync_delta, m)?)?;
    m.add_function(wrap_pyfunction!(sync_delta_cuda, m)?)?;
    m.add_function(wrap_pyfunction!(sync_apply_host, m)?)?;
    m.add_function(wrap_pyfunction!(sync_apply_cuda, m)?)?;
    m.add_function(wrap_pyfunction!(last_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(metrics_text, m)?)?;
    m.add_function(wrap_pyfunction!(write_metrics, m)?)?;
    m.add_class::<DeviceTensor>()?;
    m.add_class::<MappedBytes>()?;
    Ok(())
}

/// A host buffer given by address and length: `(address, bytes)`, from numpy's
/// `array.ctypes.data` or torch's `tensor.data_ptr()`.
type HostBuffer = (usize, usize);

/// The bytes at a host buffer, for the length of this call.
///
/// Only the Python half of the package calls the native functions that take addresses, and it
/// passes the address and length of a C-contiguous numpy array or CPU tensor that it keeps
/// referenced until the call returns (writable where the call writes, and no two written
/// buffers overlapping: `refuse_overlaps` checks that).
fn host_bytes<'a>((addr, len): HostBuffer) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: per the contract above, `addr .. addr + len` is one live, initialized allocation
    // of the caller's (array bytes), not freed or resized during the call (the Python half holds
    // a reference), and nothing writes it while this call reads it.
    unsafe { std::slice::from_raw_parts(addr as *const u8, len) }
}

/// [`host_bytes`], writable: for the tensors an apply writes.
fn host_bytes_mut<'a>((addr, len): HostBuffer) -> &'a mut [u8] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: as for `host_bytes`, and the buffer is writable (the Python half refuses a
    // read-only array) and overlaps no other buffer of the call (`refuse_overlaps`), so this is
    // the only reference to its bytes while the call runs.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) }
}

/// A tensor as the sync functions take it: name, safetensors dtype name (None for bytes),
/// shape, and its bytes' host buffer.
type HeldTensor = (String, Option<String>, Vec<u64>, HostBuffer);

fn held_pages(tensors: &[HeldTensor]) -> Vec<mmsb::ops::sync::HeldPage> {
    tensors
        .iter()
        .map(|(name, dtype, shape, (_, len))| mmsb::ops::sync::HeldPage {
            name: name.clone(),
            dtype: dtype.clone(),
            shape: shape.clone(),
            len: *len as u64,
        })
        .collect()
}

/// Refuses written buffers that overlap (two names for one tensor's memory).
fn refuse_overlaps(tensors: &[HeldTensor]) -> mmsb::Result<()> {
    let spans: Vec<(&str, usize, usize)> = tensors
        .iter()
        .map(|(name, _, _, (addr, len))| (name.as_str(), *addr, *len))
        .collect();
    mmsb::ops::sync::refuse_shared_memory(&spans)
}

/// CRC32C of a host buffer (a tensor's bytes), computed in parallel.
#[pyfunction]
fn crc32c_host(py: Python<'_>, buffer: HostBuffer) -> u32 {
    let bytes = host_bytes(buffer);
    py.detach(|| mmsb::format::crc32c_parallel(bytes))
}

/// A base tensor for `sync_create`: name, dtype, shape, bytes, CRC32C.
type BaseTensor = (String, Option<String>, Vec<u64>, u64, u32);

/// Creates the sync log `log` against tensors `(name, dtype, shape, nbytes, crc32c)` (ids in
/// this order, epochs zero) and returns its base state hash (hex).
#[pyfunction]
fn sync_create(py: Python<'_>, log: String, tensors: Vec<BaseTensor>) -> PyResult<String> {
    let pages: Vec<(mmsb::ops::sync::HeldPage, u32)> = tensors
        .into_iter()
        .map(|(name, dtype, shape, len, crc)| {
            let page = mmsb::ops::sync::HeldPage {
                name,
                dtype,
                shape,
                len,
            };
            (page, crc)
        })
        .collect();
    let hash = py
        .detach(|| mmsb::ops::sync::create_log(log.as_ref(), &pages))
        .map_err(|e| to_py(py, e))?;
    Ok(hash.to_hex())
}

/// One tensor's changed windows for `sync_delta`: name, the windows' offsets and lengths, and
/// the host buffers holding their old and new bytes back to back.
type ChangedTensor = (String, Vec<u64>, Vec<u64>, HostBuffer, HostBuffer);

/// How a step is written: zstd where it saves a 32nd when `compress`, on disk at return when
/// `durable`.
fn step_options(compress: bool, durable: bool) -> mmsb::ops::sync::StepOptions {
    use mmsb::format::log::Compression;
    mmsb::ops::sync::StepOptions {
        compression: if compress { Compression::Auto } else { Compression::None },
        durable,
    }
}

/// Appends the difference of the windows' old and new bytes to the sync log `log` as one group
/// (written as [`step_options`] says) and returns the report (JSON).
#[pyfunction]
#[pyo3(signature = (log, tensors, compress=false, durable=true))]
fn sync_delta(
    py: Python<'_>,
    log: String,
    tensors: Vec<ChangedTensor>,
    compress: bool,
    durable: bool,
) -> PyResult<String> {
    let mut pages = Vec::with_capacity(tensors.len());
    for (name, offsets, lens, old, new) in &tensors {
        let (old, new): (&[u8], &[u8]) = (host_bytes(*old), host_bytes(*new));
        let total: u64 = lens.iter().sum();
        if offsets.len() != lens.len() || old.len() as u64 != total || new.len() as u64 != total {
            return Err(Error::new_err(format!("{name}: windows and buffers do not agree")));
        }
        let mut at = 0usize;
        let windows = offsets
            .iter()
            .zip(lens)
            .map(|(o, l)| {
                let w = (*o, &old[at..at + *l as usize], &new[at..at + *l as usize]);
                at += *l as usize;
                w
            })
            .collect();
        pages.push(mmsb::ops::sync::ChangedPage { name, windows });
    }
    let report = py
        .detach(|| {
            // The report counts what was appended: the log's other files are not listed.
            measured("delta", RunFiles::default(), |m| {
                let report = mmsb::ops::sync::append_delta(log.as_ref(), &pages, step_options(compress, durable))?;
                m.add(&report);
                m.device = Some("cpu".into());
                Ok((report, Outcome::Ok))
            })
        })
        .map_err(|e| to_py(py, e))?;
    serde_json::to_string(&report).map_err(|e| Error::new_err(e.to_string()))
}

/// Appends the difference between pairs of tensors in the memory of CUDA device `ordinal`,
/// each `(name, (old address, bytes), (new address, bytes))`, to the sync log `log` as one group:
/// compared on the device, only the windows that differ copied to the host; written as
/// [`step_options`] says. Returns the report (JSON).
#[pyfunction]
#[pyo3(signature = (log, pairs, ordinal, compress=false, durable=true))]
fn sync_delta_cuda(
    py: Python<'_>,
    log: String,
    pairs: Vec<(String, HostBuffer, HostBuffer)>,
    ordinal: usize,
    compress: bool,
    durable: bool,
) -> PyResult<String> {
    use mmsb::gpu::diff::{DeviceDiffer, DevicePair};
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    // One differ per device, kept with its pinned memory for the next step.
    static DIFFERS: OnceLock<Mutex<HashMap<usize, DeviceDiffer>>> = OnceLock::new();
    for (name, (_, a), (_, b)) in &pairs {
        if a != b {
            return Err(Error::new_err(format!("{name}: old has {a} bytes, new {b}")));
        }
    }
    let report = py
        .detach(|| {
            measured("delta", RunFiles::default(), |m| {
                let gpu = gpu(ordinal)?;
                let mut differs = DIFFERS
                    .get_or_init(Default::default)
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let differ = differs.entry(ordinal).or_insert_with(|| DeviceDiffer::new(gpu));
                let pages: Vec<(&str, DevicePair)> = pairs
                    .iter()
                    .map(|(name, (old, len), (new, _))| {
                        let pair = DevicePair {
                            old: *old as u64,
                            new: *new as u64,
                            len: *len as u64,
                        };
                        (name.as_str(), pair)
                    })
                    .collect();
                let step = step_options(compress, durable);
                // SAFETY: the Python half passes, for each pair, the data pointers and byte length
                // of two contiguous CUDA tensors on device `ordinal` that it keeps referenced until
                // this call returns, after synchronizing the device (no queued work writes them).
                let report = unsafe { mmsb::ops::sync::append_delta_from_device(log.as_ref(), differ, &pages, step) }?;
                m.add(&report);
                m.device = Some(format!("cuda:{ordinal}"));
                Ok((report, Outcome::Ok))
            })
        })
        .map_err(|e| to_py(py, e))?;
    serde_json::to_string(&report).map_err(|e| Error::new_err(e.to_string()))
}

/// Applies the sync log `log`'s records from `from_seq` to `to_seq` onto host tensors in place
/// and returns the report (JSON).
#[pyfunction]
#[pyo3(signature = (log, tensors, from_seq=None, to_seq=None))]
fn sync_apply_host(
    py: Python<'_>,
    log: Vec<String>,
    tensors: Vec<HeldTensor>,
    from_seq: Option<u64>,
    to_seq: Option<u64>,
) -> PyResult<String> {
    use mmsb::ops::sync::{SeqRange, SyncLog, apply_to_host};
    let held = held_pages(&tensors);
    let report = py
        .detach(|| {
            // The report counts the segments read: the log's others are not listed.
            measured("apply", RunFiles::default(), |m| {
                refuse_overlaps(&tensors)?;
                let sync = SyncLog::open_at(&paths(log), from_seq)?;
                let pages = tensors.iter().map(|t| host_bytes_mut(t.3)).collect();
                let range = SeqRange {
                    from: from_seq,
                    to: to_seq,
                };
                let report = apply_to_host(&sync, &held, pages, range)?;
                m.add(&report);
                m.device = Some("cpu".into());
                Ok((report, Outcome::Ok))
            })
        })
        .map_err(|e| to_py(py, e))?;
    serde_json::to_string(&report).map_err(|e| Error::new_err(e.to_string()))
}

/// The CUDA devices this process has opened for sync applies, kept for the next call (opening
/// one costs a context and a module load).
fn gpu(ordinal: usize) -> mmsb::Result<Arc<mmsb::gpu::Gpu>> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static OPENED: OnceLock<Mutex<HashMap<usize, Arc<mmsb::gpu::Gpu>>>> = OnceLock::new();
    let mut opened = OPENED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(g) = opened.get(&ordinal) {
        return Ok(g.clone());
    }
    let g = Arc::new(mmsb::gpu::Gpu::open(ordinal, mmsb::gpu::KernelCompile::WhileStarting)?);
    opened.insert(ordinal, g.clone());
    Ok(g)
}

/// Applies the sync log `log`'s records from `from_seq` to `to_seq` onto tensors in the memory
/// of CUDA device `ordinal`, in place, and returns the report (JSON). Each tensor's buffer is
/// `(device address, bytes)`.
#[pyfunction]
#[pyo3(signature = (log, tensors, ordinal, from_seq=None, to_seq=None))]
fn sync_apply_cuda(
    py: Python<'_>,
    log: Vec<String>,
    tensors: Vec<HeldTensor>,
    ordinal: usize,
    from_seq: Option<u64>,
    to_seq: Option<u64>,
) -> PyResult<String> {
    use mmsb::ops::sync::{SeqRange, apply_to_device};
    let held = held_pages(&tensors);
    let ptrs: Vec<u64> = tensors.iter().map(|t| t.3.0 as u64).collect();
    let report = py
        .detach(|| {
            measured("apply", RunFiles::default(), |m| {
                refuse_overlaps(&tensors)?;
                let gpu = gpu(ordinal)?;
                let range = SeqRange {
                    from: from_seq,
                    to: to_seq,
                };
                // SAFETY: the Python half passes, for each tensor, the data pointer and byte length
                // of a contiguous CUDA tensor on device `ordinal` that it keeps referenced until this
                // call returns, after synchronizing the device (no queued work touches it); no two
                // overlap (`refuse_overlaps`). The call synchronizes its own stream before returning.
                let report = unsafe { apply_to_device(&gpu, &paths(log), &held, &ptrs, range) }?;
                m.add(&report);
                m.device = Some(format!("cuda:{ordinal}"));
                Ok((report, Outcome::Ok))
            })
        })
        .map_err(|e| to_py(py, e))?;
    serde_json::to_string(&report).map_err(|e| Error::new_err(e.to_string()))
}

/// CRC32C of buffers in the memory of CUDA device `ordinal`, each `(device address, bytes)`,
/// computed on the device.
#[pyfunction]
fn crc32c_cuda(py: Python<'_>, buffers: Vec<HostBuffer>, ordinal: usize) -> PyResult<Vec<u32>> {
    use mmsb::format::checkpoint::PageEntry;
    use mmsb::gpu::store::{DevicePageStore, KnownCrcs};
    let entries: Vec<PageEntry> = buffers
        .iter()
        .enumerate()
        .map(|(i, (_, len))| PageEntry {
            id: i as u64,
            offset: 0,
            len: *len as u64,
            epoch: 0,
            crc32c: 0,
            meta: Default::default(),
        })
        .collect();
    py.detach(|| {
        let gpu = gpu(ordinal)?;
        let pages = entries.iter().zip(buffers.iter().map(|(addr, _)| *addr as u64));
        // SAFETY: the Python half passes the data pointer and byte length of contiguous CUDA
        // tensors on device `ordinal`, kept referenced until this call returns, after
        // synchronizing the device; the store only reads them (checksums), and is dropped here.
        let mut store = unsafe { DevicePageStore::over_device_memory(&gpu, Default::default(), pages) };
        let crcs = store.checksums(KnownCrcs::Recompute)?;
        Ok(crcs.into_iter().map(|(_, _, _, crc)| crc).collect())
    })
    .map_err(|e| to_py(py, e))
}

/// `mmsb diff --json A B`'s report: checkpoint `a` (plus `a_logs`, up to `a_to_seq`) against
/// `b` (plus `b_logs`, up to `b_to_seq`), listing up to `ranges` differing ranges per page.
#[pyfunction]
#[pyo3(signature = (a, b, a_logs=Vec::new(), b_logs=Vec::new(), a_to_seq=None, b_to_seq=None, ranges=10))]
#[allow(clippy::too_many_arguments)]
fn diff(
    py: Python<'_>,
    a: String,
    b: String,
    a_logs: Vec<String>,
    b_logs: Vec<String>,
    a_to_seq: Option<u64>,
    b_to_seq: Option<u64>,
    ranges: usize,
) -> PyResult<String> {
    use mmsb::ops::diff::OpenedSide;
    let (a_logs, b_logs) = (paths(a_logs), paths(b_logs));
    let files = RunFiles {
        read: [PathBuf::from(&a), PathBuf::from(&b)]
            .into_iter()
            .chain(a_logs.iter().cloned())
            .chain(b_logs.iter().cloned())
            .collect(),
        ..Default::default()
    };
    let report = py
        .detach(|| {
            measured("diff", files, |m| {
                let files_a = OpenedSide::open(a.as_ref(), &a_logs, a_to_seq)?;
                let files_b = OpenedSide::open(b.as_ref(), &b_logs, b_to_seq)?;
                let report = mmsb::ops::diff::diff(&files_a.side()?, &files_b.side()?, ranges)?;
                m.add(&report);
                // As `mmsb diff`: differences found end the run as exit code 1 does.
                let outcome = if report.identical {
                    Outcome::Ok
                } else {
                    Outcome::DataBad
                };
                Ok((report, outcome))
            })
        })
        .map_err(|e| to_py(py, e))?;
    serde_json::to_string(&report).map_err(|e| Error::new_err(e.to_string()))
}
