//! Test tools: synthetic states and logs from a seed, and the soak test that runs every
//! command against them.

pub mod generate;
pub mod propagation;
pub mod stress;
