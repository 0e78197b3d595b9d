//! Project paths: with roots configured, a project must resolve (symlinks and `..` resolved)
//! to a directory under one of them; otherwise 400 `project_not_allowed`.

use crate::error::{ApiError, ErrorCode};
use std::path::PathBuf;

/// The allowed project roots.
#[derive(Clone, Debug, Default)]
pub struct ProjectPolicy {
    /// Canonical roots; empty means projects are free labels.
    roots: Vec<PathBuf>,
}

impl ProjectPolicy {
    /// A policy over `roots` (each canonicalized; a root that does not exist is skipped).
    pub fn new(roots: &[PathBuf]) -> Self {
        ProjectPolicy {
            roots: roots
                .iter()
                .filter_map(|r| match r.canonicalize() {
                    Ok(c) => Some(c),
                    Err(e) => {
                        log::warn!("project root {} skipped: {e}", r.display());
                        None
                    }
                })
                .collect(),
        }
    }

    /// Whether roots are enforced.
    pub fn enforced(&self) -> bool {
        !self.roots.is_empty()
    }

    /// The project as stored: its canonical path when roots are enforced, else as given.
    pub fn check(&self, project: &str) -> Result<String, ApiError> {
        if project.is_empty() || project.chars().any(char::is_control) {
            return Err(ApiError::new(
                ErrorCode::ProjectNotAllowed,
                "project must be a non-empty string without control characters",
            ));
        }
        if !self.enforced() {
            return Ok(project.to_string());
        }
        let not_allowed = || {
            ApiError::new(
                ErrorCode::ProjectNotAllowed,
                "project is not under an allowed root",
            )
        };
        let resolved = PathBuf::from(project)
            .canonicalize()
            .map_err(|_| not_allowed())?;
        if self.roots.iter().any(|root| resolved.starts_with(root)) {
            Ok(resolved.to_string_lossy().into_owned())
        } else {
            Err(not_allowed())
        }
    }
}
