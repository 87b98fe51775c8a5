//! Worker confinement, as the supervisor sees it: which layers the host
//! supports ([`probe`]), which the config requires, the [`Plan`] handed to
//! the zygote (the worker applies it right after fork, see
//! `worker/pyclave_worker/confine.py`), the uids workers run as ([`ids`]),
//! and how an unprivileged supervisor gets there ([`rootless`]).
//!
//! Start-up fails closed: a layer the host cannot provide stops the server
//! unless the config lowers it (`require_<layer> = false`); then every
//! outcome lists it in `disabled_layers`.

pub mod ids;
pub mod probe;
pub mod rootless;
pub mod seccomp;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::proto::worker::{Rlimit, SandboxPlan};

const MIB: u64 = 1024 * 1024;

/// One layer of defense, as named in configs, logs and outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// User, pid, mount, network, IPC, UTS and cgroup namespaces.
    Namespaces,
    /// A fresh read-only root with only Python and its libraries.
    MinimalRoot,
    /// A distinct unprivileged uid/gid, no capabilities, no_new_privs.
    UnprivilegedUser,
    /// The syscall allowlist.
    Seccomp,
    /// Per-job memory limit without swap, CPU accounting and OOM detection,
    /// through a cgroup (root, or a delegated cgroup when rootless).
    MemoryLimit,
    /// Per-job pids limit (cgroup); the rlimits are always applied.
    ResourceLimits,
}

impl Layer {
    pub const ALL: [Layer; 6] = [
        Layer::Namespaces,
        Layer::MinimalRoot,
        Layer::UnprivilegedUser,
        Layer::Seccomp,
        Layer::MemoryLimit,
        Layer::ResourceLimits,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Layer::Namespaces => "namespaces",
            Layer::MinimalRoot => "minimal_root",
            Layer::UnprivilegedUser => "unprivileged_user",
            Layer::Seccomp => "seccomp",
            Layer::MemoryLimit => "memory_limit",
            Layer::ResourceLimits => "resource_limits",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `[sandbox]` in the config. Every layer is required by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    pub require_namespaces: bool,
    pub require_minimal_root: bool,
    pub require_unprivileged_user: bool,
    pub require_seccomp: bool,
    pub require_memory_limit: bool,
    pub require_resource_limits: bool,
    /// Workers run as uid and gid `uid_base + slot`; slots are never shared
    /// by two live workers.
    pub uid_base: u32,
    /// Size cap of each job's private /tmp.
    pub tmp_size_bytes: u64,
    /// Processes and threads of a job (pids cgroup and RLIMIT_NPROC).
    pub max_processes: u64,
    pub max_open_files: u64,
    /// RLIMIT_FSIZE; also bounds the output table the worker writes.
    pub max_file_size_bytes: u64,
    pub stack_bytes: u64,
    /// More host paths bound read-only into every job's root (data, models).
    pub extra_read_only_paths: Vec<PathBuf>,
    /// Variables added to the jobs' environment (which is otherwise fixed).
    pub environment: BTreeMap<String, String>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            require_namespaces: true,
            require_minimal_root: true,
            require_unprivileged_user: true,
            require_seccomp: true,
            require_memory_limit: true,
            require_resource_limits: true,
            uid_base: 200_000,
            tmp_size_bytes: 64 * MIB,
            max_processes: 128,
            max_open_files: 256,
            max_file_size_bytes: 4096 * MIB,
            stack_bytes: 8 * MIB,
            extra_read_only_paths: Vec::new(),
            environment: BTreeMap::new(),
        }
    }
}

impl SandboxConfig {
    pub fn required(&self, layer: Layer) -> bool {
        match layer {
            Layer::Namespaces => self.require_namespaces,
            Layer::MinimalRoot => self.require_minimal_root,
            Layer::UnprivilegedUser => self.require_unprivileged_user,
            Layer::Seccomp => self.require_seccomp,
            Layer::MemoryLimit => self.require_memory_limit,
            Layer::ResourceLimits => self.require_resource_limits,
        }
    }
}

/// The environment of the zygote and of every job. Thread pools that would
/// start at import are kept off: the zygote must fork single-threaded.
pub const BASE_ENVIRONMENT: &[(&str, &str)] = &[
    ("LANG", "C.UTF-8"),
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("HOME", "/tmp"),
    ("TMPDIR", "/tmp"),
    ("OPENBLAS_NUM_THREADS", "1"),
    ("OMP_NUM_THREADS", "1"),
    ("MKL_NUM_THREADS", "1"),
    ("JE_ARROW_MALLOC_CONF", "background_thread:false"),
    // Arrow's buffers from glibc's malloc, not mimalloc: mimalloc keeps the
    // pages its warm-up used (~4 MiB here) dirty in a region of its own,
    // which every fork copies page-table entries for; glibc's small blocks
    // live in its heap (moved onto a file, worker/native/memory.c) and its
    // big ones are unmapped when freed. A job's process is new anyway:
    // there is no reuse across jobs for mimalloc to win.
    ("ARROW_DEFAULT_MEMORY_POOL", "system"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
];

/// Directories of shared libraries Python and its extensions load, bound
/// read-only (symlinks, as on merged-/usr systems, are recreated).
const LIBRARY_PATHS: &[&str] =
    &["/lib", "/lib64", "/lib32", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/usr/share/zoneinfo"];

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "confinement layer `{layer}` is required but unavailable on this host: {reason} \
         (set `[sandbox] require_{layer} = false` to run without it)"
    )]
    Unavailable { layer: Layer, reason: String },
    #[error("seccomp policy")]
    Seccomp(#[from] seccomp::SeccompError),
}

/// What every worker applies, and which layers are off.
#[derive(Debug, Clone)]
pub struct Plan {
    pub zygote_plan: SandboxPlan,
    pub disabled: Vec<Layer>,
    pub max_processes: u64,
}

impl Plan {
    /// Decides every layer from what the host supports and the config
    /// requires; fails when a required layer is unavailable.
    pub fn decide(
        config: &SandboxConfig,
        support: &probe::HostSupport,
        runtime: &crate::runtime_files::RuntimeDir,
    ) -> Result<Self, SandboxError> {
        let mut disabled = Vec::new();
        for layer in Layer::ALL {
            if let Err(reason) = support.get(layer) {
                if config.required(layer) {
                    return Err(SandboxError::Unavailable { layer, reason: reason.clone() });
                }
                tracing::warn!(%layer, %reason, "CONFINEMENT LOWERED: running jobs without this layer");
                disabled.push(layer);
            }
        }
        let on = |layer| !disabled.contains(&layer);
        let mut environment: BTreeMap<String, String> =
            BASE_ENVIRONMENT.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        environment.extend(config.environment.clone());
        let mut read_only_paths: Vec<String> = LIBRARY_PATHS.iter().map(|p| (*p).to_owned()).collect();
        read_only_paths.push(runtime.python_dir().display().to_string());
        read_only_paths.extend(config.extra_read_only_paths.iter().map(|p| p.display().to_string()));
        // Every host has rlimits: they apply even when the pids cgroup is off.
        let limit = |resource: i32, value: u64| Rlimit { resource: resource as u32, soft: value, hard: value };
        let rlimits = vec![
            limit(libc::RLIMIT_CORE as i32, 0),
            limit(libc::RLIMIT_FSIZE as i32, config.max_file_size_bytes),
            limit(libc::RLIMIT_NOFILE as i32, config.max_open_files),
            limit(libc::RLIMIT_NPROC as i32, config.max_processes),
            limit(libc::RLIMIT_STACK as i32, config.stack_bytes),
        ];
        let seccomp = if on(Layer::Seccomp) { Some(seccomp::compile()?) } else { None };
        let zygote_plan = SandboxPlan {
            namespaces: on(Layer::Namespaces),
            minimal_root: on(Layer::MinimalRoot),
            drop_privileges: on(Layer::UnprivilegedUser),
            seccomp_filters: seccomp.as_ref().map(|programs| vec![programs.worker.clone()]).unwrap_or_default(),
            zygote_seccomp_filter: seccomp.map(|programs| programs.zygote).unwrap_or_default(),
            read_only_paths,
            root_mount_point: runtime.root_mount_point().display().to_string(),
            tmp_size_bytes: config.tmp_size_bytes,
            rlimits,
            environment: environment.into_iter().collect(),
            native_library: runtime.native_library().display().to_string(),
        };
        Ok(Self { zygote_plan, disabled, max_processes: config.max_processes })
    }

    pub fn disabled_names(&self) -> Vec<String> {
        self.disabled.iter().map(|layer| layer.name().to_owned()).collect()
    }

    pub fn limits_processes(&self) -> bool {
        !self.disabled.contains(&Layer::ResourceLimits)
    }
}

#[cfg(test)]
mod tests {
    use super::probe::HostSupport;
    use super::*;

    fn host(missing: &[Layer]) -> HostSupport {
        HostSupport::described(
            Layer::ALL
                .iter()
                .map(|layer| (*layer, if missing.contains(layer) { Err("not here".to_owned()) } else { Ok(()) }))
                .collect(),
        )
    }

    fn decide(config: &SandboxConfig, host: &HostSupport) -> Result<Plan, SandboxError> {
        let parent = tempfile::tempdir().expect("tempdir");
        let runtime = crate::runtime_files::RuntimeDir::create(parent.path()).expect("runtime");
        Plan::decide(config, host, &runtime)
    }

    #[test]
    fn a_full_host_enforces_every_layer() {
        let plan = decide(&SandboxConfig::default(), &host(&[])).expect("starts");
        assert!(plan.disabled.is_empty());
        let zygote = &plan.zygote_plan;
        assert!(zygote.namespaces && zygote.minimal_root && zygote.drop_privileges);
        assert_eq!(zygote.seccomp_filters.len(), 1);
        assert!(!zygote.zygote_seccomp_filter.is_empty());
        assert_eq!(zygote.rlimits.len(), 5);
        assert_eq!(zygote.environment.get("HOME").map(String::as_str), Some("/tmp"));
        assert!(zygote.read_only_paths.iter().any(|path| path == "/usr/lib"));
    }

    #[test]
    fn a_missing_required_layer_fails_closed_and_says_how_to_lower_it() {
        let error = decide(&SandboxConfig::default(), &host(&[Layer::Seccomp])).expect_err("fails closed");
        let message = error.to_string();
        assert!(message.contains("`seccomp`") && message.contains("require_seccomp = false"), "{message}");
    }

    #[test]
    fn a_lowered_layer_is_skipped_and_reported() {
        let config =
            SandboxConfig { require_seccomp: false, require_resource_limits: false, ..SandboxConfig::default() };
        let plan = decide(&config, &host(&[Layer::Seccomp, Layer::ResourceLimits])).expect("starts lowered");
        assert_eq!(plan.disabled_names(), ["seccomp", "resource_limits"]);
        assert!(plan.zygote_plan.seccomp_filters.is_empty() && plan.zygote_plan.zygote_seccomp_filter.is_empty());
        assert_eq!(plan.zygote_plan.rlimits.len(), 5, "rlimits need no cgroup");
        assert!(!plan.limits_processes() && !plan.disabled.contains(&Layer::MemoryLimit));
        assert!(plan.zygote_plan.namespaces, "the other layers stay on");
    }

    #[test]
    fn lowering_a_layer_the_host_has_keeps_it_on() {
        let config = SandboxConfig { require_namespaces: false, ..SandboxConfig::default() };
        let plan = decide(&config, &host(&[])).expect("starts");
        assert!(plan.disabled.is_empty() && plan.zygote_plan.namespaces);
    }
}
