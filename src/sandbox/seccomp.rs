//! The seccomp policy: reviewed data (`seccomp.json`, one rule per syscall
//! with the reason it is there), compiled with seccompiler into BPF.
//!
//! The policy is a set of filters (trap > errno > allow, as the kernel
//! ranks answers):
//!
//! - `allowlist`: every syscall a job may make; anything else traps (SIGSYS,
//!   reported with the syscall's name, then the worker dies). Foreign ABIs
//!   (i386) kill outright; x32 numbers match no rule and trap.
//! - `confinement`: the few syscalls a worker needs to confine itself and a
//!   job may not make (mount, unshare, ...): trapped.
//! - `enosys`, `eperm`, `eafnosupport`: syscalls (or argument patterns) that
//!   are answered with an error instead: `clone3` so glibc falls back to
//!   `clone`, namespace flags on `clone`, identity changes, non-Unix sockets.
//!
//! Installing the 1,200-instruction allowlist costs ~1 ms (the kernel
//! evaluates it for every syscall number to cache constant answers), so it
//! is not installed per worker: the zygote installs it once, widened by the
//! `confinement` syscalls, and every worker inherits it at fork; after
//! confining itself a worker installs only the short filters, which take
//! those syscalls away again, chained into one program (one install, one
//! JIT, one cache of constant answers per worker instead of four). A job is
//! bound by exactly the allowlist and the errno filters.

use std::collections::HashMap;

use seccompiler::{BpfProgram, TargetArch};

/// The policy as reviewed.
pub const POLICY_JSON: &str = include_str!("seccomp.json");
/// What each worker installs once confined, chained into one program in
/// this order, the first match answering: as a stack of filters would, the
/// trap first (the most severe answer), then the errno filters, the one a
/// stack would have installed last first (the kernel lets the most recent
/// of equally severe answers win).
const WORKER_FILTERS: [&str; 4] = ["confinement", "eafnosupport", "eperm", "enosys"];
/// The name the zygote's filter is compiled under.
const ZYGOTE_FILTER: &str = "zygote";

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("the seccomp policy does not compile")]
    Compile(#[from] seccompiler::Error),
    #[error("the seccomp policy lacks the `{0}` filter")]
    MissingFilter(&'static str),
    #[error("this architecture has no seccomp policy")]
    UnsupportedArch,
    #[error("the seccomp policy is not valid JSON")]
    Json(#[from] serde_json::Error),
}

/// The compiled policy, each program as the bytes of a `struct sock_filter`
/// array.
#[derive(Debug, Clone)]
pub struct Programs {
    /// Installed once by the zygote: the allowlist plus `confinement`.
    pub zygote: Vec<u8>,
    /// Installed by every worker once confined.
    pub worker: Vec<u8>,
}

/// Compiles the policy for this architecture.
pub fn compile() -> Result<Programs, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|_| SeccompError::UnsupportedArch)?;
    let mut policy: serde_json::Value = serde_json::from_str(POLICY_JSON)?;
    let confinement =
        policy["confinement"]["filter"].as_array().cloned().ok_or(SeccompError::MissingFilter("confinement"))?;
    let mut zygote = policy["allowlist"].clone();
    zygote["filter"].as_array_mut().ok_or(SeccompError::MissingFilter("allowlist"))?.extend(confinement);
    policy[ZYGOTE_FILTER] = zygote;
    let mut programs: HashMap<String, BpfProgram> =
        seccompiler::compile_from_json(policy.to_string().as_bytes(), arch)?;
    let mut take = |name: &'static str| programs.remove(name).ok_or(SeccompError::MissingFilter(name));
    let zygote = to_bytes(&take(ZYGOTE_FILTER)?);
    let worker: Vec<BpfProgram> = WORKER_FILTERS.into_iter().map(&mut take).collect::<Result<_, _>>()?;
    Ok(Programs { zygote, worker: to_bytes(&chain(&worker)) })
}

const BPF_RET_K: u16 = 0x06;
const BPF_JMP_JA: u16 = 0x05;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

/// One program answering as `programs` tried in order, the first that does
/// not allow the syscall answering: each program's "allow" but the last's
/// becomes a jump to the start of the next (return instructions end a
/// program, so nothing else moves).
fn chain(programs: &[BpfProgram]) -> BpfProgram {
    let mut chained = BpfProgram::new();
    for (index, program) in programs.iter().enumerate() {
        let last = index + 1 == programs.len();
        for (at, instruction) in program.iter().enumerate() {
            let mut instruction = instruction.clone();
            if !last && instruction.code == BPF_RET_K && instruction.k == SECCOMP_RET_ALLOW {
                instruction.code = BPF_JMP_JA;
                instruction.k = (program.len() - at - 1) as u32;
            }
            chained.push(instruction);
        }
    }
    chained
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
        for name in ["allowlist", "confinement", "enosys", "eperm", "eafnosupport"] {
            for rule in policy[name]["filter"].as_array().expect("filter array") {
                rules.push((name.to_owned(), rule.clone()));
            }
        }
        rules
    }

    #[test]
    fn policy_compiles_into_the_zygote_filter_and_one_short_worker_filter() {
        let programs = compile().expect("compiles");
        assert!([&programs.worker, &programs.zygote].iter().all(|p| !p.is_empty() && p.len() % 8 == 0));
        assert!(programs.zygote.len() > 4 * programs.worker.len(), "the long allowlist is the zygote's, once");
    }

    #[test]
    fn chained_worker_filters_answer_as_a_stack_would() {
        // The chain answers with the first filter that matches; a stack of
        // filters, with the most severe answer. They agree because the
        // trap comes first and no syscall is in two worker filters.
        let policy: serde_json::Value = serde_json::from_str(POLICY_JSON).expect("valid JSON");
        let mut owner = HashMap::new();
        for name in WORKER_FILTERS {
            for rule in policy[name]["filter"].as_array().expect("filter array") {
                let syscall = rule["syscall"].as_str().expect("name");
                let first = *owner.entry(syscall).or_insert(name);
                assert_eq!(first, name, "{syscall} is in both `{first}` and `{name}`");
            }
        }
        assert_eq!(policy[WORKER_FILTERS[0]]["match_action"], "trap", "the trap is chained first");
        for name in &WORKER_FILTERS[1..] {
            assert!(policy[name]["match_action"]["errno"].is_u64(), "`{name}` answers with an errno");
        }
    }

    #[test]
    fn chained_programs_jump_to_the_next_where_they_allowed() {
        use seccompiler::sock_filter;
        let ret = |k| sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k };
        let check = sock_filter { code: 0x15, jt: 0, jf: 1, k: 7 }; // jeq #7
        let trap = 0x0003_0000;
        let first = vec![check.clone(), ret(trap), ret(SECCOMP_RET_ALLOW)];
        let second = vec![check, ret(1), ret(SECCOMP_RET_ALLOW)];
        let chained = chain(&[first, second.clone()]);
        assert_eq!(chained.len(), 6);
        assert_eq!((chained[1].code, chained[1].k), (BPF_RET_K, trap), "answers other than allow stay");
        assert_eq!((chained[2].code, chained[2].k), (BPF_JMP_JA, 0), "allow jumps to the next program");
        assert_eq!(chained[3..], second[..], "the last program is unchanged");
    }

    #[test]
    fn confinement_syscalls_are_taken_away_whole_and_never_allowed_to_jobs() {
        // The zygote's filter allows them; a job is bound by the allowlist
        // only if `confinement` traps each of them, whatever the arguments.
        let all = rules();
        let allowed: Vec<&str> =
            all.iter().filter(|(f, _)| f == "allowlist").map(|(_, r)| r["syscall"].as_str().expect("name")).collect();
        let confinement: Vec<&serde_json::Value> =
            all.iter().filter(|(f, _)| f == "confinement").map(|(_, r)| r).collect();
        assert!(!confinement.is_empty());
        for rule in confinement {
            let name = rule["syscall"].as_str().expect("name");
            assert!(!allowed.contains(&name), "{name} is in the allowlist");
            assert!(rule.get("args").is_none(), "{name} must be trapped whatever its arguments");
        }
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
            "process_madvise",
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
            if filter != "allowlist" && filter != "confinement" {
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
