//! Phase timings, as every report gives them.

use std::time::Instant;

/// Milliseconds since `t`, with sub-millisecond precision.
pub fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
