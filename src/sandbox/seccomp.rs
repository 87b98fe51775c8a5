//! The seccomp policy: reviewed data (`seccomp.json`, one rule per syscall
//! with the reason it is there), compiled with seccompiler into the BPF
//! programs every worker installs.
//!
//! The policy is a stack of filters; the kernel runs them all and the most
//! severe answer wins (trap > errno > allow):
//!
//! - `allowlist`: every syscall a job may make; anything else traps (SIGSYS,
//!   reported with the syscall's name, then the worker dies). Foreign ABIs
//!   (i386) kill outright; x32 numbers match no rule and trap.
//! - `enosys`, `eperm`, `eafnosupport`: syscalls (or argument patterns) that
//!   are answered with an error instead: `clone3` so glibc falls back to
//!   `clone`, namespace flags on `clone`, identity changes, non-Unix sockets.

use std::collections::HashMap;

use seccompiler::{BpfProgram, TargetArch};

/// The policy as reviewed.
pub const POLICY_JSON: &str = include_str!("seccomp.json");
/// Installation order; the allowlist first.
const FILTER_ORDER: [&str; 4] = ["allowlist", "enosys", "eperm", "eafnosupport"];

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("the seccomp policy does not compile")]
    Compile(#[from] seccompiler::Error),
    #[error("the seccomp policy lacks the `{0}` filter")]
    MissingFilter(&'static str),
    #[error("this architecture has no seccomp policy")]
    UnsupportedArch,
}

/// The compiled filters, each as the bytes of a `struct sock_filter` array.
pub fn compile() -> Result<Vec<Vec<u8>>, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|_| SeccompError::UnsupportedArch)?;
    let mut programs: HashMap<String, BpfProgram> = seccompiler::compile_from_json(POLICY_JSON.as_bytes(), arch)?;
    FILTER_ORDER
        .iter()
        .map(|name| programs.remove(*name).map(|program| to_bytes(&program)).ok_or(SeccompError::MissingFilter(name)))
        .collect()
}

fn to_bytes(program: &BpfProgram) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for instruction in program {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    bytes
}

/// The name of syscall `number` on this architecture (`x32:` and the name for
/// x32 numbers), for `killed` outcomes.
pub fn syscall_name(number: u32) -> String {
    const X32_BIT: u32 = 0x4000_0000;
    let prefix = if number & X32_BIT != 0 { "x32:" } else { "" };
    match syscalls::Sysno::new((number & !X32_BIT) as usize) {
        Some(sysno) => format!("{prefix}{}", sysno.name()),
        None => format!("{prefix}syscall {}", number & !X32_BIT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<(String, serde_json::Value)> {
        let policy: serde_json::Value = serde_json::from_str(POLICY_JSON).expect("valid JSON");
        let mut rules = Vec::new();
        for name in FILTER_ORDER {
            for rule in policy[name]["filter"].as_array().expect("filter array") {
                rules.push((name.to_owned(), rule.clone()));
            }
        }
        rules
    }

    #[test]
    fn policy_compiles_into_four_programs() {
        let programs = compile().expect("compiles");
        assert_eq!(programs.len(), 4);
        assert!(programs.iter().all(|p| !p.is_empty() && p.len() % 8 == 0));
    }

    #[test]
    fn every_rule_says_why() {
        for (filter, rule) in rules() {
            let comment = rule["comment"].as_str().unwrap_or("");
            assert!(comment.len() >= 5, "{filter}: {} has no reason", rule["syscall"]);
        }
    }

    #[test]
    fn dangerous_syscalls_are_not_allowed() {
        let allowed: Vec<String> = rules()
            .into_iter()
            .filter(|(filter, _)| filter == "allowlist")
            .map(|(_, rule)| rule["syscall"].as_str().expect("name").to_owned())
            .collect();
        for denied in [
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "mount",
            "umount2",
            "unshare",
            "setns",
            "pivot_root",
            "chroot",
            "bpf",
            "keyctl",
            "add_key",
            "request_key",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "perf_event_open",
            "userfaultfd",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "open_by_handle_at",
            "name_to_handle_at",
            "fsopen",
            "fsmount",
            "move_mount",
            "open_tree",
            "pidfd_getfd",
            "reboot",
            "swapon",
            "acct",
            "settimeofday",
            "sethostname",
        ] {
            assert!(!allowed.iter().any(|name| name == denied), "{denied} must not be allowed");
        }
    }

    #[test]
    fn errno_answers_need_the_syscall_allowed_first() {
        // Otherwise the allowlist's trap would win over the errno.
        let all = rules();
        let allowed: Vec<&str> =
            all.iter().filter(|(f, _)| f == "allowlist").map(|(_, r)| r["syscall"].as_str().expect("name")).collect();
        for (filter, rule) in &all {
            if filter != "allowlist" {
                let name = rule["syscall"].as_str().expect("name");
                assert!(allowed.contains(&name), "{filter}: {name} is not in the allowlist");
            }
        }
    }

    #[test]
    fn syscall_numbers_have_names() {
        assert_eq!(syscall_name(101), "ptrace");
        assert_eq!(syscall_name(0x4000_0000 | 165), "x32:mount");
        assert_eq!(syscall_name(100_000), "syscall 100000");
    }
}
