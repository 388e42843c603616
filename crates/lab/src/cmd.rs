//! Running `ip`, `ethtool` and `nft`: one process per batch of `ip` commands
//! or per ruleset, and a failure that says which step failed and what the
//! tool printed, in one line.

use std::fmt;
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// A step of building or tearing down that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StepFailed {
    /// What was being done, like `phone: ip route add 0.0.0.0/0 via 10.45.0.1`.
    pub step: String,
    /// Why, in one line: the tool's own message.
    pub detail: String,
}

impl fmt::Display for StepFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.detail)
    }
}

/// The Debian package that brings `program`, for the "not installed" hint.
fn package_of(program: &str) -> &str {
    match program {
        "ip" => "iproute2",
        "nft" => "nftables",
        other => other,
    }
}

fn spawn_failed(program: &str, step: &str, e: std::io::Error) -> StepFailed {
    let detail = if e.kind() == std::io::ErrorKind::NotFound {
        format!(
            "`{program}` is not installed (Debian: apt-get install {})",
            package_of(program)
        )
    } else {
        format!("cannot run `{program}`: {e}")
    };
    StepFailed {
        step: step.to_string(),
        detail,
    }
}

/// A tool's stderr as one line.
fn one_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Command failed"))
        .collect();
    if lines.is_empty() {
        "failed without a message".to_string()
    } else {
        lines.join("; ")
    }
}

/// Runs `program args…` with `input` on its stdin (nothing if `None`) and
/// waits for it; only a failure to start it is an error here.
fn output(
    program: &str,
    args: &[&str],
    input: Option<&str>,
    step: &str,
) -> Result<Output, StepFailed> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_failed(program, step, e))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A write error means the tool exited early; its stderr says why.
        let _ = stdin.write_all(text.as_bytes());
    }
    child
        .wait_with_output()
        .map_err(|e| spawn_failed(program, step, e))
}

/// Runs `program args…` with `input` on its stdin (nothing if `None`); a
/// non-zero exit is a [`StepFailed`] for `step`.
pub(crate) fn run(
    program: &str,
    args: &[&str],
    input: Option<&str>,
    step: &str,
) -> Result<Output, StepFailed> {
    let out = output(program, args, input, step)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(StepFailed {
            step: step.to_string(),
            detail: one_line(&out.stderr),
        })
    }
}

/// `ip` commands run by one `ip -b -` process, each with the step it does.
#[derive(Debug, Default)]
pub(crate) struct IpBatch {
    lines: Vec<(String, String)>,
}

impl IpBatch {
    /// Adds the `ip` command `line` (without `ip`), done for `who`.
    pub(crate) fn push(&mut self, who: &str, line: String) {
        let step = format!("{who}: ip {line}");
        self.lines.push((line, step));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Runs the batch with `ip OPTIONS… -b -`; `ip` stops at the first
    /// failing line (unless `-force`), which names the failed step.
    pub(crate) fn run(&self, options: &[&str]) -> Result<(), StepFailed> {
        if self.lines.is_empty() {
            return Ok(());
        }
        let mut input = String::new();
        for (line, _) in &self.lines {
            input.push_str(line);
            input.push('\n');
        }
        let mut args = options.to_vec();
        args.extend(["-b", "-"]);
        let out = output("ip", &args, Some(&input), &self.lines[0].1)?;
        if out.status.success() {
            return Ok(());
        }
        // ip names the failing line: "Command failed -:3".
        let text = String::from_utf8_lossy(&out.stderr);
        let failed = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Command failed -:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .and_then(|n| self.lines.get(n.checked_sub(1)?));
        Err(StepFailed {
            step: failed.map_or_else(
                || format!("ip -b ({} commands)", self.lines.len()),
                |(_, s)| s.clone(),
            ),
            detail: one_line(&out.stderr),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_says_what_to_install() {
        let e = run("d11-no-such-tool", &[], None, "checking").unwrap_err();
        assert_eq!(e.step, "checking");
        assert!(e.detail.contains("not installed"), "{e}");
        assert_eq!(package_of("nft"), "nftables");
        assert_eq!(package_of("ethtool"), "ethtool");
    }

    #[test]
    fn stderr_becomes_one_line_without_ip_s_line_counter() {
        assert_eq!(
            one_line(b"Error: Nexthop has invalid gateway.\nCommand failed -:1\n"),
            "Error: Nexthop has invalid gateway."
        );
        assert_eq!(one_line(b"a\n\nb\n"), "a; b");
    }

    #[test]
    fn a_failing_batch_line_names_its_step() {
        // Both lines need no privileges: the first reads, the second is no command.
        let mut b = IpBatch::default();
        b.push("n1", "link show dev lo".to_string());
        b.push("n2", "nosuchobject".to_string());
        let e = b.run(&[]).unwrap_err();
        assert_eq!(e.step, "n2: ip nosuchobject");
        assert!(e.detail.contains("unknown"), "{e}");
    }
}
