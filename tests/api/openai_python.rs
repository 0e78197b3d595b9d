//! The official `openai` Python package against the real `troupe` binary with the echo
//! provider (tests/python/test_openai_client.py). Skips loudly when no Python with the package
//! is found: `.ci/run` makes `.venv` with `pip install openai`.

use crate::helpers::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The bearer token the script authenticates with.
const TOKEN: &str = "python-client-token";

/// A Python that can `import openai`: the repository's `.venv` first, then `python3`.
fn python_with_openai() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    [venv, PathBuf::from("python3")].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import openai"])
            .output()
            .is_ok_and(|out| out.status.success())
    })
}

#[test]
fn the_official_openai_python_client_works_against_troupe() {
    let Some(python) = python_with_openai() else {
        crate::external::missing(
            "the_official_openai_python_client_works_against_troupe",
            "a Python with the `openai` package",
            "python3 -m venv .venv && .venv/bin/pip install openai",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("troupe.toml");
    std::fs::write(
        &config,
        format!("[[auth.tokens]]\ntoken = \"{TOKEN}\"\nowner = \"python\"\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data, &["--config", config.to_str().unwrap()], &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_openai_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .env("TROUPE_BASE_URL", server.base())
        .env("TROUPE_TOKEN", TOKEN)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "the Python client test failed");
    assert!(
        stderr.contains("OK"),
        "unittest did not report OK:\n{stderr}"
    );
}
