//! Settings every micro-benchmark shares: quick enough that `cargo bench`
//! finishes in well under two minutes on two cores.

use std::time::Duration;

use criterion::Criterion;

pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}
