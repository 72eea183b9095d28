//! What a page is besides its bytes: metadata, and the state hash that names a set of pages.

use serde::Serialize;

/// Where the GPU work should keep a page. Stored as metadata; the CPU replay ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Residency {
    /// Host memory.
    #[default]
    Host,
    /// Dedicated device memory.
    Device,
    /// CUDA unified (managed) memory.
    Unified,
}

impl Residency {
    /// The byte stored on disk.
    pub fn to_byte(self) -> u8 {
        match self {
            Residency::Host => 0,
            Residency::Device => 1,
            Residency::Unified => 2,
        }
    }
    /// Parses the byte stored on disk.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Residency::Host),
            1 => Some(Residency::Device),
            2 => Some(Residency::Unified),
            _ => None,
        }
    }
    /// Lower-case name, as printed and as accepted on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Residency::Host => "host",
            Residency::Device => "device",
            Residency::Unified => "unified",
        }
    }
}

/// Element type and shape of a page that holds a tensor (kept from safetensors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    /// The safetensors dtype name, e.g. `F32`, `BF16`.
    pub dtype: String,
    /// Dimensions, outermost first. Empty for a scalar.
    pub shape: Vec<u64>,
}

/// A page's metadata: everything but its id, length, epoch and bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct PageMeta {
    /// Optional name (a tensor name, for imported files). Never empty when present.
    pub name: Option<String>,
    /// Optional dtype and shape.
    pub tensor: Option<TensorInfo>,
    /// Residency hint.
    pub residency: Residency,
}

/// The identity of a state: BLAKE3 over every page's id, length, epoch and CRC32C.
///
/// Two states with the same pages (same ids, lengths, epochs and bytes, up to CRC32C
/// collisions) have the same hash, whatever file they are stored in. Names, dtypes and other
/// metadata are not part of it. FORMAT.md, "State hash", gives the exact bytes hashed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StateHash(pub [u8; 32]);

impl StateHash {
    /// Computes the hash from `(id, len, epoch, crc32c)` of every page, in increasing id order.
    pub fn compute(pages: impl ExactSizeIterator<Item = (u64, u64, u64, u32)>) -> StateHash {
        let mut h = blake3::Hasher::new();
        h.update(b"mmsb state v1\0\0\0");
        h.update(&(pages.len() as u64).to_le_bytes());
        for (id, len, epoch, crc) in pages {
            h.update(&id.to_le_bytes());
            h.update(&len.to_le_bytes());
            h.update(&epoch.to_le_bytes());
            h.update(&crc.to_le_bytes());
        }
        StateHash(*h.finalize().as_bytes())
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Display for StateHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for StateHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateHash({})", self.to_hex())
    }
}

impl Serialize for StateHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_hash_depends_on_every_field_and_on_order_free_identity() {
        let a = StateHash::compute([(1u64, 10u64, 0u64, 7u32), (2, 5, 3, 9)].into_iter());
        assert_eq!(
            a,
            StateHash::compute([(1u64, 10u64, 0u64, 7u32), (2, 5, 3, 9)].into_iter())
        );
        for changed in [
            [(1u64, 10u64, 0u64, 7u32), (3, 5, 3, 9)],
            [(1, 11, 0, 7), (2, 5, 3, 9)],
            [(1, 10, 1, 7), (2, 5, 3, 9)],
            [(1, 10, 0, 8), (2, 5, 3, 9)],
        ] {
            assert_ne!(a, StateHash::compute(changed.into_iter()));
        }
        assert_ne!(a, StateHash::compute([(1u64, 10u64, 0u64, 7u32)].into_iter()));
    }

    #[test]
    fn residency_bytes_round_trip_and_unknown_bytes_are_refused() {
        for r in [Residency::Host, Residency::Device, Residency::Unified] {
            assert_eq!(Residency::from_byte(r.to_byte()), Some(r));
        }
        assert_eq!(Residency::from_byte(3), None);
    }
}
