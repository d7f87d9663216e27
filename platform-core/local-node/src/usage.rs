//! CPU and memory of an instance, measured from `/proc` over its whole process group
//! (where no cgroup can enforce limits, they are at least measured and reported).

use std::time::Instant;

/// A reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// CPU over the interval since the previous reading, in millicores; `None` on the
    /// first reading.
    pub cpu_millis: Option<u32>,
    pub memory_mib: u32,
}

/// Samples one process group.
#[derive(Debug)]
pub struct UsageSampler {
    pgid: i32,
    previous: Option<(Instant, u64)>,
    ticks_per_second: u64,
    page_size: u64,
}

impl UsageSampler {
    pub fn new(pgid: i32) -> Self {
        use nix::unistd::{SysconfVar, sysconf};
        let ticks_per_second = sysconf(SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(100);
        let page_size = sysconf(SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(4096);
        Self {
            pgid,
            previous: None,
            ticks_per_second,
            page_size,
        }
    }

    /// Reads the group's CPU time and resident memory now.
    pub fn sample(&mut self) -> Usage {
        let (ticks, rss_pages) = group_totals(self.pgid);
        let now = Instant::now();
        let cpu_millis = self.previous.map(|(then, before)| {
            let elapsed = now.duration_since(then).as_secs_f64().max(1e-3);
            let used = ticks.saturating_sub(before) as f64 / self.ticks_per_second as f64;
            (used / elapsed * 1000.0).round() as u32
        });
        self.previous = Some((now, ticks));
        Usage {
            cpu_millis,
            memory_mib: u32::try_from(rss_pages * self.page_size / (1024 * 1024))
                .unwrap_or(u32::MAX),
        }
    }
}

/// Sums utime + stime (ticks) and rss (pages) over the processes of a group.
fn group_totals(pgid: i32) -> (u64, u64) {
    group_stats(pgid)
        .iter()
        .fold((0, 0), |(ticks, rss), (_, f)| {
            (ticks + f.utime + f.stime, rss + f.rss_pages)
        })
}

/// The pids of a process group's live members (zombies excluded), from `/proc`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    group_stats(pgid)
        .into_iter()
        .filter(|(_, f)| f.state != 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

fn group_stats(pgid: i32) -> Vec<(i32, StatFields)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            parse_stat(&stat)
                .filter(|fields| fields.pgrp == pgid)
                .map(|fields| (pid, fields))
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq)]
struct StatFields {
    state: char,
    pgrp: i32,
    utime: u64,
    stime: u64,
    rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12) ... rss(21).
    Some(StatFields {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
        rss_pages: fields.get(21)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let stat = "4242 (my (weird) app) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1000 123456 789 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(StatFields {
                state: 'S',
                pgrp: 4242,
                utime: 250,
                stime: 50,
                rss_pages: 789
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn our_own_group_uses_memory() {
        let pgid = nix::unistd::getpgrp().as_raw();
        let mut sampler = UsageSampler::new(pgid);
        let first = sampler.sample();
        assert!(first.cpu_millis.is_none());
        assert!(first.memory_mib > 0);
        assert!(sampler.sample().cpu_millis.is_some());
    }
}
