//! Run a command to completion under a deadline: on time, its output; late,
//! it and every process it started are killed and the error says so.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::child::{signal_group, spawn_in_group, stat_fields};
use crate::error::StartError;

/// `cmd.output()`, but killed with all its descendants after `limit`.
pub fn output_within(name: &str, cmd: &mut Command, limit: Duration) -> Result<Output, StartError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_in_group(cmd).map_err(StartError::io(format!("start {name}")))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => break None,
        }
    };
    let Some(status) = status else {
        kill_tree(child.id());
        let _ = child.wait();
        let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
        let lines: Vec<&str> = stderr.lines().collect();
        return Err(StartError::Late {
            name: name.into(),
            secs: limit.as_secs(),
            stderr: lines[lines.len().saturating_sub(30)..].join("\n"),
        });
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// SIGKILL `root` and all its descendants, and their process groups (the
/// services a `wsingest bench` child started in groups of their own).
/// Stops each process first so that none starts another meanwhile.
pub fn kill_tree(root: u32) {
    let mut tree = vec![root];
    let mut i = 0;
    stop(root);
    loop {
        let found = children_of(&tree);
        if found.is_empty() {
            break;
        }
        for p in found {
            stop(p);
            tree.push(p);
        }
        i += 1;
        if i > 64 {
            break;
        }
    }
    for &p in tree.iter().rev() {
        signal_group(p, libc::SIGKILL);
        if let Ok(pid) = libc::pid_t::try_from(p) {
            // SAFETY: kill has no memory effects.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn stop(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGSTOP);
        }
    }
}

/// Processes whose parent is in `tree` and that are not in it yet.
fn children_of(tree: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if tree.contains(&pid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat_fields(&stat)
            .get(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid.is_some_and(|pp| tree.contains(&pp)) {
            out.push(pid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_on_time_gives_its_output() {
        let out = output_within(
            "echo",
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn a_late_command_is_killed_with_its_children() {
        let started = Instant::now();
        let e = output_within(
            "sleeper",
            // The grandchild holds the pipes: the call returns only if it is killed too.
            Command::new("sh").args(["-c", "echo starting >&2; sleep 600 & sleep 600"]),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            e.to_string().contains("sleeper did not finish within 0 s"),
            "{e}"
        );
        assert!(e.to_string().contains("starting"), "{e}");
    }
}
