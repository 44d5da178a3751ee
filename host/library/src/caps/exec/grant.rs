//! The `exec` grant: commands by name, each a program with fixed arguments,
//! optionally taking arguments of the plugin's own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::super::grant_error::GrantError;
use crate::wit::strategy::standby::plugin::types::Error as WitError;

/// One command of the `exec` grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecGrant {
    /// Program and fixed arguments, e.g. `["/sbin/fsfreeze", "-f", "/mnt"]`.
    pub command: Vec<String>,
    /// Whether the plugin may append arguments of its own.
    #[serde(default)]
    pub extra_args: bool,
}

/// What is wrong with an `exec` grant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ExecProblem {
    /// A command names no program.
    #[error("must name a program")]
    NoProgram,
    /// A command runs a shell on a command string: the plugin's extra
    /// arguments (or anything else) would become shell code.
    #[error(
        "runs the shell `{0}` with -c; name the program itself (and its fixed arguments) instead"
    )]
    ShellCommand(String),
}

/// Shells, by file name.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "ash", "busybox",
];

/// Whether `command` runs a shell on a command string (`sh -c ...`,
/// `bash -ec ...`).
fn is_shell_command(command: &[String]) -> bool {
    let Some((program, args)) = command.split_first() else {
        return false;
    };
    let name = std::path::Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program);
    SHELLS.contains(&name)
        && args
            .iter()
            .any(|a| a.starts_with('-') && !a.starts_with("--") && a.contains('c'))
}

/// Whether the profile grants `exec` at all.
pub(crate) fn granted(grant: &BTreeMap<String, ExecGrant>) -> bool {
    !grant.is_empty()
}

/// Every command names a program, and none runs a shell on a command
/// string.
pub(crate) fn validate(grant: &BTreeMap<String, ExecGrant>) -> Result<(), GrantError> {
    for (name, cmd) in grant {
        if cmd.command.is_empty() {
            return Err(GrantError::new(
                format!("exec.{name}.command"),
                ExecProblem::NoProgram,
            ));
        }
        if is_shell_command(&cmd.command) {
            return Err(GrantError::new(
                format!("exec.{name}.command"),
                ExecProblem::ShellCommand(cmd.command[0].clone()),
            ));
        }
    }
    Ok(())
}

/// The call-time check: `name` is granted to `plugin`, and takes `args` only
/// if the grant allows extra arguments; the program and its fixed arguments.
pub(crate) fn command<'a>(
    grant: &'a BTreeMap<String, ExecGrant>,
    name: &str,
    args: &[String],
    plugin: &str,
) -> Result<(&'a String, &'a [String]), WitError> {
    let cmd = grant.get(name).ok_or_else(|| {
        WitError::AccessDenied(format!(
            "command `{name}` is not granted to plugin {plugin}"
        ))
    })?;
    if !args.is_empty() && !cmd.extra_args {
        return Err(WitError::AccessDenied(format!(
            "command `{name}` takes no extra arguments (grant `extra_args = true` to allow)"
        )));
    }
    cmd.command.split_first().ok_or_else(|| {
        WitError::InvalidArgument(format!("command `{name}` is empty in the profile"))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_named_commands_run_and_extra_arguments_need_a_switch() {
        let mut g = BTreeMap::new();
        g.insert(
            "freeze".to_string(),
            ExecGrant {
                command: vec!["/sbin/fsfreeze".into(), "-f".into()],
                extra_args: false,
            },
        );
        assert!(validate(&g).is_ok() && granted(&g));
        let (program, fixed) = command(&g, "freeze", &[], "p").unwrap();
        assert_eq!((program.as_str(), fixed.len()), ("/sbin/fsfreeze", 1));
        assert!(matches!(
            command(&g, "reboot", &[], "p"),
            Err(WitError::AccessDenied(_))
        ));
        let extra = ["/mnt".to_string()];
        assert!(
            matches!(command(&g, "freeze", &extra, "p"), Err(WitError::AccessDenied(m)) if m.contains("extra_args"))
        );
        g.insert(
            "empty".into(),
            ExecGrant {
                command: vec![],
                extra_args: false,
            },
        );
        assert_eq!(validate(&g).unwrap_err().key, "exec.empty.command");
    }

    #[test]
    fn a_shell_running_a_command_string_is_refused() {
        let grant = |command: &[&str]| {
            let mut g = BTreeMap::new();
            g.insert(
                "x".to_string(),
                ExecGrant {
                    command: command.iter().map(|s| s.to_string()).collect(),
                    extra_args: true,
                },
            );
            validate(&g)
        };
        for shell in [&["/bin/sh", "-c"][..], &["bash", "-ec", "echo"]] {
            let e = grant(shell).unwrap_err();
            assert!(e.to_string().contains("with -c"), "{shell:?}: {e}");
        }
        assert!(grant(&["/bin/sh", "/usr/local/bin/freeze.sh"]).is_ok());
        assert!(grant(&["/sbin/fsfreeze", "-f", "/mnt"]).is_ok());
    }
}
