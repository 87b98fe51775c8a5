//! Server configuration: TOML with secure defaults, validated once at the edge.
//!
//! Every section and field is optional; unknown fields are errors. The
//! `[limits]` values are both the per-job defaults and the ceilings a job may
//! only lower.

use std::path::{Path, PathBuf};

use serde::Deserialize;

const MIB: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config")]
    Parse(#[from] toml::de::Error),
    #[error("{field} must be {rule}, got {value}")]
    OutOfRange { field: &'static str, rule: &'static str, value: u64 },
    #[error("scripts.dir {path} is not a directory")]
    ScriptsDir { path: PathBuf },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub pool: PoolConfig,
    pub limits: JobLimits,
    pub output: OutputLimits,
    pub scripts: ScriptsConfig,
    pub sandbox: crate::sandbox::SandboxConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Concurrent caller connections; more wait to be accepted.
    pub max_connections: usize,
    /// Jobs accepted but not yet on a worker; beyond this, `rejected: queue full`.
    pub max_queued_jobs: usize,
    /// Jobs in flight (queued or running) per connection.
    pub max_jobs_per_connection: usize,
    /// Largest request frame a caller may send.
    pub max_request_frame_bytes: usize,
    /// How long running jobs get to finish at shutdown before they are killed.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_queued_jobs: 1024,
            max_jobs_per_connection: 256,
            max_request_frame_bytes: (4 * MIB) as usize,
            shutdown_grace_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Warm workers kept forked and ready; 0 means two per CPU core (a
    /// worker's replacement takes ~6 ms to fork and confine: with one per
    /// core, short jobs wait for it and the cores idle).
    pub workers: usize,
    /// The interpreter the zygote runs (its site-packages must have pandas, pyarrow).
    pub python: PathBuf,
    /// How long a zygote may take to import pandas/pyarrow and report ready.
    pub zygote_start_timeout_ms: u64,
    /// The zygote's and every worker's niceness (0-19): jobs, and the forks
    /// that replace them, yield the CPU to the supervisor, which routes every
    /// job, and to the host's own services.
    pub nice: u8,
    /// When most recent jobs were transforms, new workers rehearse a small
    /// transform too before they report ready, or under load copy the
    /// pages a transform's path writes in one call: those copies are made
    /// off the job's path (a 1,000-row groupby answered ~2.4 ms sooner
    /// paced, ~15 % more of them per second under load), and the idle
    /// worker holds ~5.5 MiB more private memory. Off: workers warm up for
    /// the exec path only.
    pub warm_transforms: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            python: PathBuf::from("python3"),
            zygote_start_timeout_ms: 60_000,
            nice: 10,
            warm_transforms: true,
        }
    }
}

impl PoolConfig {
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 { self.workers } else { 2 * std::thread::available_parallelism().map_or(1, |n| n.get()) }
    }
}

/// Per-job limits: the server's defaults, which a job may lower but not raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobLimits {
    pub memory_limit_bytes: u64,
    pub wall_timeout_ms: u64,
    pub cpu_timeout_ms: u64,
    pub max_code_bytes: u64,
    pub max_params_bytes: u64,
    /// Each of stdout and stderr; the rest is dropped and flagged truncated.
    pub max_captured_output_bytes: u64,
    /// The JSON value an exec job returns.
    pub max_result_json_bytes: u64,
}

impl Default for JobLimits {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 1024 * MIB,
            wall_timeout_ms: 60_000,
            cpu_timeout_ms: 60_000,
            max_code_bytes: MIB,
            max_params_bytes: MIB,
            max_captured_output_bytes: MIB,
            max_result_json_bytes: 16 * MIB,
        }
    }
}

/// What a transform's output table may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputLimits {
    pub max_rows: u64,
    pub max_columns: u64,
    pub max_table_bytes: u64,
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self { max_rows: 100_000_000, max_columns: 10_000, max_table_bytes: 4096 * MIB }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptsConfig {
    /// Directory that `script_name` jobs are resolved in; none disables them.
    pub dir: Option<PathBuf>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let at_least = |field, value: u64, min: u64, rule| {
            if value < min { Err(ConfigError::OutOfRange { field, rule, value }) } else { Ok(()) }
        };
        at_least("server.max_connections", self.server.max_connections as u64, 1, "at least 1")?;
        at_least("server.max_queued_jobs", self.server.max_queued_jobs as u64, 1, "at least 1")?;
        at_least("server.max_jobs_per_connection", self.server.max_jobs_per_connection as u64, 1, "at least 1")?;
        at_least("server.max_request_frame_bytes", self.server.max_request_frame_bytes as u64, 1024, "at least 1024")?;
        at_least("limits.memory_limit_bytes", self.limits.memory_limit_bytes, 16 * MIB, "at least 16 MiB")?;
        at_least("limits.wall_timeout_ms", self.limits.wall_timeout_ms, 1, "at least 1")?;
        at_least("limits.cpu_timeout_ms", self.limits.cpu_timeout_ms, 1, "at least 1")?;
        at_least("limits.max_code_bytes", self.limits.max_code_bytes, 1, "at least 1")?;
        at_least("pool.zygote_start_timeout_ms", self.pool.zygote_start_timeout_ms, 1, "at least 1")?;
        at_least("sandbox.uid_base", u64::from(self.sandbox.uid_base), 1000, "at least 1000 (never a system uid)")?;
        at_least("sandbox.max_processes", self.sandbox.max_processes, 8, "at least 8")?;
        at_least("sandbox.max_open_files", self.sandbox.max_open_files, 64, "at least 64")?;
        at_least("sandbox.tmp_size_bytes", self.sandbox.tmp_size_bytes, MIB, "at least 1 MiB")?;
        let at_most = |field, value: u64, max: u64, rule| {
            if value > max { Err(ConfigError::OutOfRange { field, rule, value }) } else { Ok(()) }
        };
        at_most("pool.workers", self.pool.workers as u64, 1024, "at most 1024")?;
        at_most("pool.nice", u64::from(self.pool.nice), 19, "at most 19")?;
        if let Some(dir) = &self.scripts.dir
            && !dir.is_dir()
        {
            return Err(ConfigError::ScriptsDir { path: dir.clone() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_secure_defaults() {
        let config = Config::parse("").expect("defaults are valid");
        assert_eq!(config.limits, JobLimits::default());
        assert_eq!(config.limits.memory_limit_bytes, 1024 * MIB);
        assert!(config.scripts.dir.is_none(), "scripts are off unless a directory is configured");
        assert!(config.pool.worker_count() >= 1);
    }

    #[test]
    fn fields_override_defaults() {
        let config = Config::parse("[pool]\nworkers = 3\n[limits]\nwall_timeout_ms = 500\n[output]\nmax_rows = 10\n")
            .expect("valid");
        assert_eq!(config.pool.worker_count(), 3);
        assert_eq!(config.limits.wall_timeout_ms, 500);
        assert_eq!(config.limits.cpu_timeout_ms, JobLimits::default().cpu_timeout_ms);
        assert_eq!(config.output.max_rows, 10);
    }

    #[test]
    fn unknown_fields_and_sections_are_rejected() {
        assert!(matches!(Config::parse("[limits]\nmemory_limit = 5\n"), Err(ConfigError::Parse(_))));
        assert!(matches!(Config::parse("[sandbox_typo]\n"), Err(ConfigError::Parse(_))));
        assert!(matches!(Config::parse("[pool]\nworkers = \"two\"\n"), Err(ConfigError::Parse(_))));
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let error = Config::parse("[limits]\nmemory_limit_bytes = 1000\n").expect_err("too small");
        assert_eq!(error.to_string(), "limits.memory_limit_bytes must be at least 16 MiB, got 1000");
        assert!(Config::parse("[pool]\nworkers = 5000\n").is_err());
        assert!(Config::parse("[pool]\nnice = 20\n").is_err());
        assert!(Config::parse("[limits]\nwall_timeout_ms = 0\n").is_err());
    }

    #[test]
    fn scripts_dir_must_exist() {
        let error = Config::parse("[scripts]\ndir = \"/nonexistent/pyclave\"\n").expect_err("missing dir");
        assert!(matches!(error, ConfigError::ScriptsDir { .. }));
    }
}
