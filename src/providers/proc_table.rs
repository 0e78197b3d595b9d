//! What Linux's `/proc` says about a process: its state, group and start time, which together
//! tell a recorded agent process from an unrelated one that later got the same pid.
//!
//! Hand-written rather than a `/proc` crate: three fields of one line and the boot id are all
//! Troupe reads.

use std::path::Path;

/// The fields of `/proc/<pid>/stat` Troupe uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead), …
    pub state: char,
    /// Field 5: the process group id.
    pub pgrp: i32,
    /// Field 22: when the process started, in clock ticks since boot.
    pub start: u64,
}

impl ProcStat {
    /// Whether the process still runs: a zombie has exited and only waits to be reaped.
    pub fn running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }

    /// Parses a `stat` line. The command name (field 2) is in parentheses and may itself hold
    /// spaces and parentheses, so fields are counted from the last `)`.
    pub fn parse(line: &str) -> Option<ProcStat> {
        let (_, rest) = line.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        // `fields[0]` is field 3.
        Some(ProcStat {
            state: fields.first()?.chars().next()?,
            pgrp: fields.get(5 - 3)?.parse().ok()?,
            start: fields.get(22 - 3)?.parse().ok()?,
        })
    }
}

/// The stat of process `pid`, or `None` when there is no such process (or no `/proc`).
pub fn stat(pid: i32) -> Option<ProcStat> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    ProcStat::parse(&line)
}

/// The kernel's boot id, different after every boot.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_string())
}

/// Every running (not zombie) process in process group `pgid`, with its stat.
pub fn group_members(pgid: i32) -> Vec<(i32, ProcStat)> {
    let Ok(entries) = std::fs::read_dir(Path::new("/proc")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .filter(|(_, stat)| stat.pgrp == pgid && stat.running())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::ProcStat;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_is_skipped_whole() {
        let line = "4242 (node (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 3 1 0 0 20 0 7 0 \
                    987654 1000000 100 18446744073709551615";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                state: 'S',
                pgrp: 4242,
                start: 987654
            })
        );
    }

    #[test]
    fn this_process_is_found_with_a_start_time() {
        let me = std::process::id() as i32;
        let stat = super::stat(me).expect("our own stat");
        assert!(stat.running());
        assert!(stat.start > 0);
        // The state letter may change between two reads (running, sleeping); who the process
        // is may not.
        let again = super::stat(me).expect("read again");
        assert_eq!((stat.pgrp, stat.start), (again.pgrp, again.start));
    }
}
