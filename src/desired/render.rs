//! Renders Helm charts and Kustomize overlays into manifests by running `helm template` or
//! `kustomize build`, the way Argo CD does. The files come from the desired source (a Git tree
//! or a directory) and are written to a private temporary directory first, so a Git source is
//! never checked out over the user's work tree.

use std::path::Path;
use std::process::Command;

use crate::config::Render;
use crate::desired::manifests::{self, RawObject};

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "`{0}` was not found on PATH: install it, or remove the target's `helm`/`kustomize` setting"
    )]
    MissingBinary(String),
    #[error("`{command}` failed (exit {code}): {stderr}")]
    Failed {
        command: String,
        code: String,
        stderr: String,
    },
    #[error("cannot prepare files for rendering: {0}")]
    Io(#[from] std::io::Error),
    #[error("rendered output is invalid: {0}")]
    Output(#[from] manifests::ManifestError),
}

impl RenderError {
    /// A failed render is the chart's or overlay's fault; a missing binary is the machine's.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, RenderError::Failed { .. } | RenderError::Output(_))
    }
}

/// Writes `files` (paths relative to the source root) to a temporary directory, runs the
/// renderer in `subdir`, and parses its output.
pub fn render(
    how: &Render,
    subdir: &str,
    files: &[(String, Vec<u8>)],
) -> Result<Vec<RawObject>, RenderError> {
    let tmp = tempfile::tempdir()?;
    for (path, bytes) in files {
        let dest = tmp.path().join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&dest, bytes)?;
    }
    let workdir = if subdir.is_empty() {
        tmp.path().to_path_buf()
    } else {
        tmp.path().join(subdir)
    };
    std::fs::create_dir_all(&workdir)?;
    let (program, args, shown) = match how {
        Render::Helm {
            release,
            values,
            namespace,
        } => {
            let mut args = vec![
                "template".to_string(),
                release.clone(),
                workdir.display().to_string(),
            ];
            if let Some(ns) = namespace {
                args.push("--namespace".to_string());
                args.push(ns.clone());
            }
            for v in values {
                args.push("--values".to_string());
                args.push(workdir.join(v).display().to_string());
            }
            ("helm", args, format!("helm template {release} {subdir}"))
        }
        Render::Kustomize => (
            "kustomize",
            vec!["build".to_string(), workdir.display().to_string()],
            format!("kustomize build {subdir}"),
        ),
    };
    let out = run(program, &args, tmp.path())?;
    let label = format!("{shown} (rendered)");
    manifests::parse_file(&label, out.as_bytes(), false).map_err(RenderError::from)
}

fn run(program: &str, args: &[String], cwd: &Path) -> Result<String, RenderError> {
    let output = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RenderError::MissingBinary(program.to_string())
            } else {
                RenderError::Io(e)
            }
        })?;
    if !output.status.success() {
        return Err(RenderError::Failed {
            command: format!(
                "{program} {}",
                args.first().map(String::as_str).unwrap_or("")
            ),
            code: output
                .status
                .code()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "signal".to_string()),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
