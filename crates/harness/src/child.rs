//! One child process in a process group of its own, logging to a file,
//! killed with its whole group when its handle drops.
//!
//! `process_group(0)` puts the child and everything it starts (nginx
//! workers, Chromium's helpers) in one group that `killpg` ends at once. The
//! child also gets `PR_SET_PDEATHSIG(SIGKILL)`, so that it dies with us when
//! we are killed before `Drop` runs (a Ctrl-C on `wsingest bench`, a test
//! binary killed by a timeout): a group of its own no longer receives the
//! terminal's signals. The death signal follows the *thread* that spawned the
//! child; spawn from a thread that lives as long as the service (a tokio
//! worker or the test's thread, not `spawn_blocking`).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::StartError;

/// A started service: its process group, its log, its resource use.
pub struct Service {
    name: String,
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
    /// Length of the log when this run started: earlier runs (a restart
    /// appends) are not this run's.
    log_start: u64,
}

impl Service {
    /// Spawn `cmd` in a new process group with stdout and stderr appended to
    /// `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Service, StartError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(StartError::io(format!("open {}", log.display())))?;
        let log_start = file.metadata().map(|m| m.len()).unwrap_or(0);
        let err_file = file
            .try_clone()
            .map_err(StartError::io(format!("open {}", log.display())))?;
        cmd.stdout(Stdio::from(file)).stderr(Stdio::from(err_file));
        let child = spawn_in_group(cmd).map_err(StartError::io(format!("start {name}")))?;
        Ok(Service {
            name: name.to_string(),
            pid: child.id(),
            child: Some(child),
            log: log.to_path_buf(),
            log_start,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (also its process group id) of the last run.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What this run wrote to its log so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log)
            && f.seek(SeekFrom::Start(self.log_start)).is_ok()
        {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }

    /// The last `n` lines of this run's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The exit status if the process has exited (it is reaped then).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.kill();
        Some(status)
    }

    /// SIGKILL to the whole group, as a crash or an OOM kill would; no
    /// shutdown code runs. Safe to call twice.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The group first, then reap the leader: the group id cannot be
            // reused while the leader is unreaped.
            signal_group(self.pid, libc::SIGKILL);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM to the group, then wait up to `grace` for the leader to exit
    /// (SIGKILL after that). Returns the leader's exit status, `None` if it
    /// was not running or had to be killed.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        signal_group(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        let status = loop {
            match c.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break None,
            }
        };
        // Whatever the leader left behind in its group.
        signal_group(self.pid, libc::SIGKILL);
        if status.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        status
    }

    /// Resident memory (`VmRSS`) in KiB; 0 once exited.
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.pid, "VmRSS:")
    }

    /// Peak resident memory (`VmHWM`) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.pid, "VmHWM:")
    }

    /// CPU seconds (user + system) used so far by the leader.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs_of(&format!("/proc/{}/stat", self.pid))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `cmd.spawn()` in a process group of its own, dying with this thread.
pub(crate) fn spawn_in_group(cmd: &mut Command) -> std::io::Result<Child> {
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Send `signal` to process group `pgid` (errors, such as an empty group,
/// are ignored).
pub(crate) fn signal_group(pgid: u32, signal: libc::c_int) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid)
        && pgid > 1
    {
        // SAFETY: killpg has no memory effects; a bad pgid is an error code.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }
}

/// CPU seconds of this process (the load generator).
pub fn self_cpu_secs() -> f64 {
    cpu_secs_of("/proc/self/stat")
}

/// CPU seconds (user + system) of process `pid` so far (a zombie still has
/// them until it is reaped); 0 when it is gone.
pub fn cpu_secs_of_pid(pid: u32) -> f64 {
    cpu_secs_of(&format!("/proc/{pid}/stat"))
}

/// Fields of /proc/<pid>/stat after the parenthesised command name: index 0
/// is the state, 1 the parent, 2 the process group, 11 and 12 utime and stime.
pub(crate) fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_whitespace()
        .collect()
}

fn cpu_secs_of(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    let fields = stat_fields(&stat);
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Find `name` on PATH (or in /usr/sbin, /usr/bin); the error says which
/// package installs it.
pub fn find_binary(name: &str, package: &str) -> Result<PathBuf, StartError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| StartError::Missing {
            name: name.into(),
            package: package.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_kills_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("wsingest-harness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("sh.log");
        // A grandchild in the background that would outlive a plain kill.
        let svc = Service::spawn(
            "sh",
            Command::new("sh").args(["-c", "sleep 600 & echo $! ; wait"]),
            &log,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let grandchild: i32 = loop {
            if let Ok(pid) = svc.log().trim().parse() {
                break pid;
            }
            assert!(Instant::now() < deadline, "no pid in {}", svc.log());
            std::thread::sleep(Duration::from_millis(10));
        };
        drop(svc);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Gone, or a zombie waiting for init (state Z).
        while std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
            .is_ok_and(|s| stat_fields(&s).first() != Some(&"Z"))
        {
            assert!(
                Instant::now() < deadline,
                "grandchild {grandchild} survived"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_missing_binary_names_its_package() {
        let e = find_binary("no-such-binary-here", "pkg").unwrap_err();
        assert!(e.to_string().contains("apt-get install -y pkg"), "{e}");
    }
}
