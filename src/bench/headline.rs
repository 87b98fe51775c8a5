//! The two ratios the design is judged by, each measured in rounds that
//! alternate the baseline with the pyclave run it is compared with. This
//! host's speed drifts by tens of percent within minutes: figures measured
//! minutes apart compare the host's phases as much as the designs.
//!
//! - cold: a cold `python -c` per job (what script runners do) against a
//!   trivial job on a warm pool, p50 over p50;
//! - floor: pyclave's trivial closed-loop throughput against the
//!   fork+exit+wait rate of a pandas zygote, the floor of this design.

use std::path::Path;

use serde::Serialize;

use super::{LevelResult, WARM_PACE, baseline, measure, progress, run_level, workloads};

/// One round: the baseline's figure, pyclave's, and their ratio.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Round {
    pub baseline: f64,
    pub pyclave: f64,
    pub ratio: f64,
}

/// A ratio over alternating rounds: each figure's median, and the spread
/// of the per-round ratios.
#[derive(Debug, Serialize)]
pub struct Alternated {
    pub baseline: f64,
    pub pyclave: f64,
    pub ratio: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
    pub rounds: Vec<Round>,
}

impl Alternated {
    fn of(rounds: Vec<Round>) -> Self {
        let of = |figure: fn(&Round) -> f64| measure::median(rounds.iter().map(figure).collect());
        let ratios = || rounds.iter().map(|round| round.ratio);
        Self {
            baseline: of(|round| round.baseline),
            pyclave: of(|round| round.pyclave),
            ratio: of(|round| round.ratio),
            ratio_min: ratios().fold(f64::INFINITY, f64::min),
            ratio_max: ratios().fold(0.0, f64::max),
            rounds,
        }
    }
}

/// What the rounds run against.
pub struct Setup<'a> {
    pub socket: &'a Path,
    pub python: &'a Path,
    /// `baselines.py`.
    pub script: &'a Path,
    /// The trivial workload's code, for the cold baseline.
    pub trivial_code: &'a Path,
    /// pyclave's native library, for the fork floor.
    pub native_library: &'a str,
    pub rounds: usize,
    /// 1 for `--quick`, 5 otherwise.
    pub scale: usize,
}

/// Cold `python -c` p50 (ms) against the warm pool's p50 (ms), one job at
/// a time, paced as in the warm-pool latency run.
pub async fn cold_vs_warm(setup: &Setup<'_>) -> Result<Alternated, Box<dyn std::error::Error>> {
    let mut rounds = Vec::new();
    for round in 1..=setup.rounds {
        progress(&format!("cold python -c vs warm pool, round {round}/{}", setup.rounds));
        let cold = baseline(setup.python, setup.script, "cold", setup.trivial_code, "", 3)?;
        let warm =
            succeeded(run_level(setup.socket, &workloads::TRIVIAL, None, 1, 20 * setup.scale, Some(WARM_PACE)).await?)?;
        let (cold_ms, warm_ms) = (cold.p50_us as f64 / 1e3, warm.latency.p50_us.max(1) as f64 / 1e3);
        rounds.push(Round { baseline: cold_ms, pyclave: warm_ms, ratio: cold_ms / warm_ms });
    }
    Ok(Alternated::of(rounds))
}

/// The fork floor (forks/s, from the p50 of sequential fork+exit+wait)
/// against pyclave's trivial jobs/s with `callers` closed-loop callers;
/// the ratio is pyclave's share of the floor.
pub async fn floor_vs_throughput(setup: &Setup<'_>, callers: usize) -> Result<Alternated, Box<dyn std::error::Error>> {
    let mut rounds = Vec::new();
    for round in 1..=setup.rounds {
        progress(&format!("fork floor vs trivial throughput x{callers}, round {round}/{}", setup.rounds));
        let floor =
            baseline(setup.python, setup.script, "forkrate", Path::new("-"), setup.native_library, 100 * setup.scale)?;
        let ours =
            succeeded(run_level(setup.socket, &workloads::TRIVIAL, None, callers, 200 * setup.scale, None).await?)?;
        let floor_rate = 1e6 / floor.p50_us.max(1) as f64;
        rounds.push(Round {
            baseline: floor_rate,
            pyclave: ours.jobs_per_second,
            ratio: ours.jobs_per_second / floor_rate,
        });
    }
    Ok(Alternated::of(rounds))
}

/// `level`, unless some of its jobs failed (a ratio over failures means nothing).
fn succeeded(level: LevelResult) -> Result<LevelResult, Box<dyn std::error::Error>> {
    match level.failed {
        0 => Ok(level),
        failed => Err(format!("{failed} of {} trivial jobs failed in a headline round", level.jobs).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_medians_with_the_spread() {
        let round = |ratio: f64| Round { baseline: ratio * 10.0, pyclave: 10.0, ratio };
        let alternated = Alternated::of(vec![round(3.0), round(1.0), round(2.0)]);
        assert_eq!((alternated.ratio, alternated.ratio_min, alternated.ratio_max), (2.0, 1.0, 3.0));
        assert_eq!((alternated.baseline, alternated.pyclave), (20.0, 10.0));
    }
}
