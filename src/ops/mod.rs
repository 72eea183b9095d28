//! What the commands do, above the replay: compaction, differences, verification, inspection,
//! safetensors import and export, derived pages (`derive`, `propagate`), weight sync, watching a
//! live log, and the choice of the smallest record that they share.

pub mod compact;
pub mod derive;
pub mod diff;
pub mod encoding;
pub mod inspect;
pub mod safetensors_io;
pub mod sync;
pub mod verify;
pub mod watch;
