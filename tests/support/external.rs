//! External programs some tests drive (the agent CLIs, Chromium, curl and jq, Python's `openai`):
//! where they are found, and the one rule for a missing one. Under CI (`CI=true`, as `.ci/run`
//! sets it) a missing program fails the test; elsewhere the test skips, saying so loudly.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where `.ci/run` installs the pinned npm CLIs (`npm install --prefix .ci/npm …`).
pub fn local_npm_bin() -> PathBuf {
    repo_root().join(".ci/npm/node_modules/.bin")
}

/// The directories searched for a program: the local npm prefix, then `PATH`.
pub fn search_path() -> OsString {
    let mut dirs = vec![local_npm_bin()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    // Joining fails only on a directory name with the separator in it, which PATH cannot hold.
    std::env::join_paths(dirs).unwrap_or_default()
}

/// `name` as an executable file: a path as given, a bare name on [`search_path`].
pub fn find_program(name: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return executable(&path).then_some(path);
    }
    std::env::split_paths(&search_path())
        .map(|dir| dir.join(name))
        .find(|candidate| executable(candidate))
}

/// Whether the tests run in CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Says that `test` cannot run because `what` is missing, and how to install it: panics under
/// CI, else prints a loud skip notice. The caller returns when this returns.
pub fn missing(test: &str, what: &str, install: &str) {
    if in_ci() {
        panic!("{test}: {what} is missing in CI (CI=true); install it: {install}");
    }
    eprintln!(
        "\n*** SKIPPED {test}: {what} is missing; install it to run this test: {install} ***\n"
    );
}

/// `name` found, or `None` after [`missing`] said why.
pub fn require_program(test: &str, name: &str, install: &str) -> Option<PathBuf> {
    let found = find_program(name);
    if found.is_none() {
        missing(test, &format!("`{name}`"), install);
    }
    found
}
