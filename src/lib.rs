//! pyclave: run untrusted Python (pandas transforms and scripts) fast, each
//! job in a fresh process forked from a pre-warmed zygote.
//!
//! How a job flows through the modules:
//!
//! - [`server`] accepts a caller on the Unix socket; [`channel`] frames its
//!   protobuf messages ([`proto`]) and carries the input table's fd.
//! - [`job`] validates the request into a `JobSpec` ([`scripts`] resolves
//!   script names, [`config`] gives the limits) or rejects it.
//! - [`pool`] queues it and hands it to an idle [`worker`], which was forked
//!   earlier by the [`zygote`] (whose Python files are [`runtime_files`]) into
//!   its own [`cgroup`] (measured and killed as a [`job_tree`]), with
//!   [`capture`] pipes for stdout and stderr, and confined itself as the
//!   [`sandbox`] plan says before reporting ready (a rootless supervisor
//!   first made itself root of its own namespaces, `sandbox::rootless`; its
//!   name on the host is its [`instance`]).
//! - The worker runs it and reports; the supervisor kills what is left,
//!   learns the exit status from the [`reaper`], validates the output table
//!   ([`output_table`], [`arrow_check`]) and builds the [`outcome`].
//! - [`client`] is the Rust side of the socket, used by the CLI; [`bench`]
//!   measures the whole path against the alternatives.

pub mod arrow_check;
pub mod bench;
pub mod capture;
pub mod cgroup;
pub mod channel;
pub mod cli;
pub mod client;
pub mod config;
pub mod instance;
pub mod job;
pub mod job_tree;
pub mod outcome;
pub mod output_table;
pub mod pool;
pub mod proto;
pub mod reaper;
pub mod runtime_files;
pub mod sandbox;
pub mod scripts;
pub mod server;
pub mod worker;
pub mod zygote;
