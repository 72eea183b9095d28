//! `import` and `export` between safetensors files and checkpoints. Each tensor is a page with
//! its name, dtype and shape; the file's `__metadata__` is the checkpoint's metadata section.
//! Parsing of safetensors files is the `safetensors` crate's, which validates a hostile header.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::Serialize;

use crate::error::{Corruption, Error, Result};
use crate::format::checkpoint::{Checkpoint, CheckpointWriter, PageSpec};
use crate::format::log::Log;
use crate::fsutil::AtomicFile;
use crate::mmap::ReadOnlyMap;
use crate::page::{PageMeta, StateHash, TensorInfo};
use crate::replay::{PageCheck, ReplayLimit, State};

/// What an import or export moved.
#[derive(Debug, Clone, Serialize)]
pub struct TensorFileSummary {
    /// Tensors (pages).
    pub tensors: u64,
    /// Tensor bytes.
    pub bytes: u64,
    /// State hash of the checkpoint written or exported.
    pub state_hash: StateHash,
}

fn dtype_name(d: Dtype) -> String {
    serde_json::to_value(d)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{d:?}"))
}

fn parse_dtype(name: &str) -> Option<Dtype> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

/// A tensor to be a page: its name, safetensors dtype name (`F32`, `BF16`, ...), shape and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name: not empty, not `__metadata__`.
    pub name: String,
    /// A safetensors dtype name.
    pub dtype: String,
    /// Dimensions, outermost first; empty for a scalar.
    pub shape: Vec<u64>,
    /// Bytes: the dtype's size times the shape's product.
    pub len: u64,
}

/// Checks that `dtype` is a safetensors dtype and that `len` bytes are what it and `shape`
/// make; `label` names the tensor in the error.
fn check_tensor(label: &str, dtype: &str, shape: &[u64], len: u64) -> Result<(Dtype, Vec<usize>)> {
    let parsed = parse_dtype(dtype)
        .ok_or_else(|| Error::Invalid(format!("{label}: dtype {dtype} is not a safetensors dtype")))?;
    let dims: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::Invalid(format!("{label}: dimension too large")))?;
    let bits = dims.iter().try_fold(parsed.bitsize(), |a, &d| a.checked_mul(d));
    if bits.map(|b| b.div_ceil(8) as u64) != Some(len) {
        return Err(Error::Invalid(format!(
            "{label}: {len} bytes do not match dtype {dtype} and shape {shape:?}"
        )));
    }
    Ok((parsed, dims))
}

/// The page specs of `tensors` as pages 0, 1, ... in order, at `epoch`, each checked: a name
/// that is not empty, not `__metadata__` and not repeated, and bytes that match its dtype and
/// shape. What [`import`] writes, and what a checkpoint made from named tensors needs.
pub fn tensor_pages(tensors: Vec<TensorSpec>, epoch: u64) -> Result<Vec<PageSpec>> {
    let mut seen = std::collections::HashSet::new();
    tensors
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            if t.name.is_empty() || t.name == "__metadata__" {
                return Err(Error::Invalid(format!(
                    "tensor {i}: the name {:?} cannot be a page's (empty, or safetensors' reserved __metadata__)",
                    t.name
                )));
            }
            if !seen.insert(t.name.clone()) {
                return Err(Error::Invalid(format!("two tensors are named {:?}", t.name)));
            }
            check_tensor(&t.name, &t.dtype, &t.shape, t.len)?;
            Ok(PageSpec {
                id: i as u64,
                len: t.len,
                epoch,
                meta: PageMeta {
                    name: Some(t.name),
                    tensor: Some(TensorInfo {
                        dtype: t.dtype,
                        shape: t.shape,
                    }),
                    ..Default::default()
                },
            })
        })
        .collect()
}

/// Imports a safetensors file as a checkpoint: tensor `i` in file order is page `i`, at `epoch`
/// (a training step, say: a log appended from this checkpoint then carries the step as its
/// records' epoch, and `replay --to-epoch` finds it). `progress`, when given, counts the bytes
/// written.
pub fn import(input: &Path, output: &Path, epoch: u64, progress: Option<Arc<AtomicU64>>) -> Result<TensorFileSummary> {
    crate::fsutil::refuse_output_naming_input(output, &[input])?;
    crate::fsutil::resolve_output(output)?;
    let map = ReadOnlyMap::open(input)?;
    let bytes = map.bytes();
    let (header_len, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| {
        // Length errors are about the first 8 bytes; the rest about the JSON header after them.
        let offset = match e {
            safetensors::SafeTensorError::HeaderTooSmall
            | safetensors::SafeTensorError::HeaderTooLarge
            | safetensors::SafeTensorError::InvalidHeaderLength => 0,
            _ => 8,
        };
        Error::Corrupt {
            path: input.to_owned(),
            offset,
            problem: Corruption::Safetensors(e.to_string()),
        }
    })?;
    let data_start = 8 + header_len;
    let names = metadata.offset_keys();
    let mut tensors = Vec::with_capacity(names.len());
    let mut slices = Vec::with_capacity(names.len());
    for name in &names {
        let info = metadata.info(name).expect("offset_keys lists known tensors");
        let (s, e) = info.data_offsets;
        // In bounds: read_metadata checked that the offsets tile the data exactly.
        slices.push(&bytes[data_start + s..data_start + e]);
        tensors.push(TensorSpec {
            name: name.clone(),
            dtype: dtype_name(info.dtype),
            shape: info.shape.iter().map(|&d| d as u64).collect(),
            len: (e - s) as u64,
        });
    }
    let specs = tensor_pages(tensors, epoch).map_err(|e| Error::Invalid(format!("{}: {e}", input.display())))?;
    let file_meta: BTreeMap<String, String> = metadata.metadata().clone().unwrap_or_default().into_iter().collect();
    let mut w = CheckpointWriter::create(output, specs, file_meta)?.with_progress(progress);
    for s in &slices {
        w.write(s)?;
    }
    let hash = w.finish()?;
    Ok(TensorFileSummary {
        tensors: slices.len() as u64,
        bytes: slices.iter().map(|s| s.len() as u64).sum(),
        state_hash: hash,
    })
}

struct PageView<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: &'a [u8],
    /// Counts bytes handed to the serializer, which asks for each tensor's data once, to write it.
    progress: Option<&'a AtomicU64>,
}

impl View for &PageView<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        if let Some(p) = self.progress {
            p.fetch_add(self.data.len() as u64, Ordering::Relaxed);
        }
        Cow::Borrowed(self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Exports a checkpoint, after replaying `logs` on it, as a safetensors file. Every page must
/// have a name and a dtype and shape that match its length. `progress`, when given, counts the
/// tensor bytes written.
pub fn export(
    checkpoint: &Path,
    logs: &[PathBuf],
    limit: ReplayLimit,
    output: &Path,
    progress: Option<Arc<AtomicU64>>,
) -> Result<TensorFileSummary> {
    let inputs: Vec<&Path> = std::iter::once(checkpoint)
        .chain(logs.iter().map(PathBuf::as_path))
        .collect();
    crate::fsutil::refuse_output_naming_input(output, &inputs)?;
    crate::fsutil::resolve_output(output)?;
    let ckpt = Checkpoint::open(checkpoint)?;
    let mut state = State::from_checkpoint(&ckpt, PageCheck::Check)?;
    if !logs.is_empty() {
        state.replay(&Log::open(logs)?, limit)?;
    }
    let mut views = Vec::new();
    let mut named: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for (id, page) in state.pages() {
        let name =
            page.meta.name.clone().ok_or_else(|| {
                Error::Invalid(format!("page {id} has no name, so it cannot be a safetensors tensor"))
            })?;
        if name == "__metadata__" {
            return Err(Error::Invalid(format!(
                "page {id} is named __metadata__, which safetensors reserves for the file's metadata; rename it to export"
            )));
        }
        if let Some(first) = named.insert(name.clone(), id) {
            return Err(Error::Invalid(format!(
                "pages {first} and {id} are both named {name:?}: a safetensors file holds one tensor per name"
            )));
        }
        let t = page
            .meta
            .tensor
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("page {id} ({name}) has no dtype and shape")))?;
        let (dtype, shape) = check_tensor(
            &format!("page {id} ({name})"),
            &t.dtype,
            &t.shape,
            page.data().len() as u64,
        )?;
        views.push((
            name,
            PageView {
                dtype,
                shape,
                data: page.data(),
                progress: progress.as_deref(),
            },
        ));
    }
    let metadata: std::collections::HashMap<String, String> = ckpt.head().metadata.clone().into_iter().collect();
    let summary = TensorFileSummary {
        tensors: views.len() as u64,
        bytes: views.iter().map(|(_, v)| v.data.len() as u64).sum(),
        state_hash: state.state_hash(),
    };
    let out = AtomicFile::create(output)?;
    safetensors::tensor::serialize_to_file(
        views.iter().map(|(n, v)| (n.as_str(), v)),
        if metadata.is_empty() { None } else { Some(metadata) },
        out.temp_path(),
    )
    .map_err(|e| Error::Invalid(format!("{}: cannot write safetensors: {e}", output.display())))?;
    out.commit()?;
    Ok(summary)
}

impl crate::metrics::Measured for TensorFileSummary {
    fn measure(&self, m: &mut crate::metrics::RunMetrics) {
        m.pages += self.tensors;
        m.state_hash = Some(self.state_hash.to_hex());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, dtype: &str, shape: &[u64], len: u64) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype: dtype.into(),
            shape: shape.to_vec(),
            len,
        }
    }

    #[test]
    fn tensor_pages_refuses_what_cannot_be_a_named_tensor_page() {
        let ok = tensor_pages(vec![spec("a", "F32", &[2, 3], 24), spec("b", "I8", &[], 1)], 7).unwrap();
        assert_eq!((ok[1].id, ok[1].epoch, ok[1].meta.name.as_deref()), (1, 7, Some("b")));
        let refused = |t: Vec<TensorSpec>| tensor_pages(t, 0).unwrap_err().to_string();
        assert!(refused(vec![spec("", "U8", &[1], 1)]).contains("cannot be a page's"));
        assert!(refused(vec![spec("__metadata__", "U8", &[1], 1)]).contains("cannot be a page's"));
        assert!(refused(vec![spec("a", "U8", &[1], 1), spec("a", "U8", &[1], 1)]).contains("two tensors"));
        assert!(refused(vec![spec("w", "F32", &[2], 7)]).contains("w: 7 bytes do not match dtype F32"));
        assert!(refused(vec![spec("w", "Q9", &[2], 2)]).contains("w: dtype Q9 is not a safetensors dtype"));
    }

    #[test]
    fn import_refuses_a_tensor_with_an_empty_name_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("empty-name.safetensors");
        let mut header = br#"{"":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#.to_vec();
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&header);
        file.extend_from_slice(b"ab");
        std::fs::write(&input, file).unwrap();
        let output = dir.path().join("out.ckpt");
        let e = import(&input, &output, 0, None).unwrap_err().to_string();
        assert!(
            e.contains("empty-name.safetensors") && e.contains("cannot be a page's"),
            "{e}"
        );
        assert!(!output.exists());
    }
}
