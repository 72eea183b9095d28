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
        MmsbError::WrongBase { path, .. } => ("wrong_base", Some(path.clone()), None, None),
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

fn paths(list: Vec<String>) -> Vec<PathBuf> {
    list.into_iter().map(PathBuf::from).collect()
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
    let report = py
        .detach(|| mmsb::ops::verify::verify(&paths, None, rederive))
        .map_err(|e| to_py(py, e))?;
    serde_json::to_string(&report).map_err(|e| Error::new_err(e.to_string()))
}

/// Replays `checkpoint` plus `logs` on the CPU (every page's CRC32C and every record checked)
/// and returns `(report_json, pages)`, `pages` a list of `(id, name, dtype, shape, bytearray)`
/// in id order (`name`, `dtype` and `shape` None where the page has none).
#[pyfunction]
#[pyo3(signature = (checkpoint, logs, to_seq=None, pages=None))]
fn load_cpu<'py>(
    py: Python<'py>,
    checkpoint: String,
    logs: Vec<String>,
    to_seq: Option<u64>,
    pages: Option<Vec<String>>,
) -> PyResult<Bound<'py, PyTuple>> {
    let selector = match pages {
        Some(p) => PageSelector::parse(&p).map_err(|e| to_py(py, e))?,
        None => PageSelector::default(),
    };
    let options = ReplayOptions {
        limit: ReplayLimit { to_seq, to_epoch: None },
        pages: selector,
        ..Default::default()
    };
    let out = PyList::empty(py);
    let mut visit = |state: &mmsb::replay::State<'_>| -> mmsb::Result<()> {
        for (id, page) in state.pages() {
            let (dtype, shape) = match &page.meta.tensor {
                Some(t) => (Some(t.dtype.clone()), Some(t.shape.clone())),
                None => (None, None),
            };
            let bytes = PyByteArray::new(py, page.data());
            let item = (id, page.meta.name.clone(), dtype, shape, bytes);
            out.append(item).map_err(|e| mmsb::Error::Invalid(e.to_string()))?;
        }
        Ok(())
    };
    let report =
        mmsb::replay::run_on_cpu(checkpoint.as_ref(), &paths(logs), &options, &mut visit).map_err(|e| to_py(py, e))?;
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
    let pages = tensor_pages(specs, 0).map_err(|e| to_py(py, e))?;
    let mut w =
        CheckpointWriter::create(path.as_ref(), pages, metadata.unwrap_or_default()).map_err(|e| to_py(py, e))?;
    for (name, _, _, len, source) in &tensors {
        let bytes = source.call_method0("tobytes")?;
        let bytes = bytes.cast::<PyBytes>()?.as_bytes();
        if bytes.len() as u64 != *len {
            return Err(Error::new_err(format!(
                "{name}: {} bytes given for a tensor of {len}",
                bytes.len()
            )));
        }
        w.write(bytes).map_err(|e| to_py(py, e))?;
    }
    let hash = w.finish().map_err(|e| to_py(py, e))?;
    Ok(hash.to_hex())
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
    let selector = match pages {
        Some(p) => PageSelector::parse(&p).map_err(|e| to_py(py, e))?,
        None => PageSelector::default(),
    };
    let options = ReplayOptions {
        device: Device::Cuda(ordinal),
        limit: ReplayLimit { to_seq, to_epoch: None },
        pages: selector,
        verify,
        ..Default::default()
    };
    let logs = paths(logs);
    let replayed = py
        .detach(|| mmsb::replay::run(checkpoint.as_ref(), &logs, &options))
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
    m.add_function(wrap_pyfunction!(load_cpu, m)?)?;
    m.add_function(wrap_pyfunction!(save, m)?)?;
    m.add_function(wrap_pyfunction!(load_cuda, m)?)?;
    m.add_class::<DeviceTensor>()?;
    Ok(())
}
