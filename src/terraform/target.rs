//! One Terraform/EC2 target: read the state files and the plan (from a Git tree at a ref or
//! from local paths), read live EC2 when there is state to compare, and return the drifts.
//!
//! The plan's `resource_drift` and the state-vs-live compare can both name a resource; the
//! compare wins for an address both report, because it reads live now while the plan saw live
//! when it was made.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tracing::info;

use super::compare::{self, CompareOptions, IgnoreList, StateSource};
use super::plan::{self, DriftOptions, PlanError};
use super::state::{self, StateError};
use crate::config::{Ec2Source, LiveSource, Target, TerraformSource};
use crate::desired::git::{self, GitError};
use crate::live::ec2::{self, Ec2Error, ReadRequest};
use crate::model::Drift;

/// Why a Terraform target could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Ec2(#[from] Ec2Error),
    #[error("{file} does not exist at {reference} in {repo}")]
    NotInRepo {
        repo: String,
        reference: String,
        file: String,
    },
    #[error("{file}:{line}: {message}")]
    Ignore {
        file: String,
        line: usize,
        message: String,
    },
    #[error("reading {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal task failed: {0}")]
    Join(String),
}

impl Error {
    /// True when the user's input is at fault (exit 3), not the environment.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Error::Git(g) => g.is_invalid_input(),
            Error::State(StateError::Io { source, .. })
            | Error::Plan(PlanError::Io { source, .. })
            | Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            Error::State(_) | Error::Plan(_) | Error::NotInRepo { .. } | Error::Ignore { .. } => {
                true
            }
            Error::Ec2(e) => e.is_invalid_input(),
            Error::Join(_) => false,
        }
    }
}

/// What a Terraform target read found.
#[derive(Debug, Default)]
pub struct TargetRead {
    /// Sorted by resource key; not classified yet.
    pub drifts: Vec<Drift>,
    /// Resources compared (state instances and Unmanaged resources, plus plan drift entries).
    pub checked: usize,
    /// Resources dropped by ignore patterns.
    pub ignored: usize,
    /// Live calls that failed: the read is partial (nothing may be deleted).
    pub errors: Vec<String>,
    /// Live requests sent, per API action.
    pub requests: BTreeMap<String, usize>,
}

struct Files {
    states: Vec<StateSource>,
    plan: Option<plan::Plan>,
    /// Where the files came from (repository or `local`) and the commit, for provenance.
    source: String,
    commit: Option<String>,
}

/// Reads the target's files and live EC2, and compares.
pub async fn read_target(
    t: &Target,
    tf: &TerraformSource,
    cache_dir: &Path,
) -> Result<TargetRead, Error> {
    let tf2 = tf.clone();
    let cache = cache_dir.to_path_buf();
    let files = tokio::task::spawn_blocking(move || load_files(&tf2, &cache))
        .await
        .map_err(|e| Error::Join(e.to_string()))??;
    let mut out = TargetRead::default();
    let mut plan_drifts = match &files.plan {
        Some(p) => plan::plan_drifts(
            p,
            &t.name,
            &tf.workspace,
            &DriftOptions {
                relevant_only: tf.relevant_attributes_only,
            },
        ),
        None => Vec::new(),
    };
    for d in &mut plan_drifts {
        if let Some(p) = &mut d.provenance {
            p.source = files.source.clone();
            p.commit = files.commit.clone();
        }
    }
    if let (LiveSource::Ec2(src), false) = (&t.live, files.states.is_empty()) {
        let ignore = ignore_list(src)?;
        let mut req = ReadRequest::default();
        for s in &files.states {
            for i in &s.state.instances {
                let Some(id) = i.id() else { continue };
                let has = |attr: &str| i.attributes().get(attr).is_some_and(|v| !v.is_null());
                let set = match i.resource_type.as_str() {
                    "aws_instance" if i.attributes().get("disable_api_termination").is_some() => {
                        &mut req.termination_protection_for
                    }
                    "aws_vpc" | "aws_default_vpc"
                        if has("enable_dns_support") || has("enable_dns_hostnames") =>
                    {
                        &mut req.vpc_attributes_for
                    }
                    "aws_launch_template" => &mut req.launch_template_data_for,
                    _ => continue,
                };
                set.insert(id.to_string());
            }
        }
        let inv = ec2::read(src, &req).await?;
        out.errors = inv.failures.iter().map(ToString::to_string).collect();
        out.requests = inv.requests.clone();
        let opts = CompareOptions {
            target: t.name.clone(),
            workspace: tf.workspace.clone(),
            default_tags: src.default_tags.clone(),
            unmanaged: src.unmanaged,
            ignore,
        };
        let outcome = compare::compare(&files.states, &inv, &opts);
        for n in &outcome.notes {
            info!(target = %t.name, "{n}");
        }
        info!(
            target = %t.name,
            live = inv.resources.len(),
            drifted = outcome.drifts.len(),
            requests = inv.requests.values().sum::<usize>(),
            "terraform state compared with live EC2"
        );
        let covered: BTreeSet<String> =
            outcome.drifts.iter().map(|d| d.resource.id.key()).collect();
        // The plan saw live at plan time; the compare sees it now.
        let state_addresses: BTreeSet<String> = files
            .states
            .iter()
            .flat_map(|s| s.state.instances.iter().map(|i| i.address.clone()))
            .collect();
        plan_drifts.retain(|d| {
            !covered.contains(&d.resource.id.key())
                && !matches!(&d.resource.id, crate::model::ResourceId::Terraform { address, .. } if state_addresses.contains(address))
        });
        out.checked = outcome.checked;
        out.ignored = outcome.ignored;
        out.drifts = outcome.drifts;
    }
    if let Some(p) = &files.plan {
        let compared_live = !files.states.is_empty() && matches!(t.live, LiveSource::Ec2(_));
        out.checked += if compared_live {
            plan_drifts.len()
        } else {
            // The plan's resource_changes name every resource of the configuration.
            let managed = p
                .changes
                .iter()
                .filter(|c| c.mode == plan::ResourceMode::Managed && c.deposed.is_none())
                .count();
            managed.max(plan_drifts.len())
        };
    }
    out.drifts.extend(plan_drifts);
    out.drifts
        .sort_by_cached_key(|d| (d.resource.id.key(), d.kind));
    Ok(out)
}

fn ignore_list(src: &Ec2Source) -> Result<IgnoreList, Error> {
    let mut list =
        IgnoreList::parse(src.ignore.iter().map(String::as_str)).map_err(|(line, message)| {
            Error::Ignore {
                file: "live.ec2.ignore".into(),
                line,
                message,
            }
        })?;
    if let Some(path) = &src.driftignore {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            file: path.display().to_string(),
            source: e,
        })?;
        let more = IgnoreList::parse(text.lines()).map_err(|(line, message)| Error::Ignore {
            file: path.display().to_string(),
            line,
            message,
        })?;
        list.extend(more);
    }
    Ok(list)
}

fn load_files(tf: &TerraformSource, cache_dir: &Path) -> Result<Files, Error> {
    let mut wanted: Vec<&str> = tf.states.iter().map(String::as_str).collect();
    if let Some(p) = &tf.plan {
        wanted.push(p);
    }
    let (contents, source, commit) = match &tf.git {
        Some(g) => {
            let set: BTreeSet<String> = wanted
                .iter()
                .map(|w| w.trim_matches('/').to_string())
                .collect();
            let tree = git::read_tree(g, "", cache_dir, &|rel: &str| set.contains(rel))?;
            let mut map: BTreeMap<String, Vec<u8>> = tree.files.into_iter().collect();
            let mut contents = Vec::new();
            for w in &wanted {
                let key = w.trim_matches('/').to_string();
                match map.remove(&key) {
                    Some(b) => contents.push((key, b)),
                    None => {
                        return Err(Error::NotInRepo {
                            repo: git::redact_url(&g.repo),
                            reference: g.reference.clone(),
                            file: key,
                        });
                    }
                }
            }
            (contents, git::redact_url(&g.repo), Some(tree.commit))
        }
        None => {
            let mut contents = Vec::new();
            for w in &wanted {
                let bytes = std::fs::read(PathBuf::from(w)).map_err(|e| Error::Io {
                    file: w.to_string(),
                    source: e,
                })?;
                contents.push((w.to_string(), bytes));
            }
            (contents, "local".to_string(), None)
        }
    };
    let mut states = Vec::new();
    let mut plan = None;
    for (i, (file, bytes)) in contents.into_iter().enumerate() {
        if i < tf.states.len() {
            let st = state::parse(&bytes, &file)?;
            info!(
                file = %file,
                terraform_version = %st.terraform_version,
                instances = st.instances.len(),
                "terraform state read"
            );
            states.push(StateSource {
                state: st,
                source: source.clone(),
                file,
                commit: commit.clone(),
            });
        } else {
            let text = String::from_utf8(bytes).map_err(|_| {
                Error::Plan(PlanError::NotAPlan {
                    file: file.clone(),
                    message: "the file is not UTF-8 text (give `terraform show -json` output, not the binary plan file)".into(),
                })
            })?;
            plan = Some(plan::parse(&text, &file)?);
        }
    }
    Ok(Files {
        states,
        plan,
        source,
        commit,
    })
}
