//! `mmsb._mmsb`: the native half of the Python package. Every function here is a thin call into
//! the library's front doors (`replay::run_on_cpu`, `ops::inspect`, `ops::verify`); reports cross
//! as the JSON documents the command line prints with `--json`, which the Python half turns into
//! objects. Errors become `mmsb.Error` (or `mmsb.CorruptionError` when the data is bad) carrying
//! the file, the byte offset and the kind.

use std::path::PathBuf;

use mmsb::Error as MmsbError;
use mmsb::replay::{ReplayLimit, ReplayOptions};
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
    Ok(())
}
