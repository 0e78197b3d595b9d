//! The API contract, checked by a tool that reads only the documents: schemathesis generates
//! requests from `/api/v1/openapi.json` and `/v1/openapi.json` (valid and invalid ones, then
//! chains of calls that follow the documents' links) against the real `troupe` binary with only
//! the `echo` provider, once without tokens and once with one, and fails on any answer the
//! documents do not allow: a 5xx, an undocumented status or shape, a valid request refused, an
//! invalid one accepted, a missing `Allow` on 405, an ignored token.
//!
//! `.ci/run` installs schemathesis (pinned) into `.venv`. Without it the test skips loudly, and
//! fails when `CI=true`. Settings a document cannot carry are in `tests/schemathesis/`.

use crate::server_process::ServerProcess;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The pinned version `.ci/run` installs.
const PINNED: &str = "4.32.5";
/// Examples per operation and phase: enough to reach every operation's corners within the
/// 2–4 minutes the four runs may take on a CI machine.
const MAX_EXAMPLES: &str = "20";
/// A fixed seed: a failure found once is found again.
const SEED: &str = "1";
/// The token of the run with authentication (an admin, so the actor table answers too).
const TOKEN: &str = "schemathesis-admin-token";
/// The two documents, by path.
const DOCUMENTS: [&str; 2] = ["/api/v1/openapi.json", "/v1/openapi.json"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `.venv/bin/schemathesis`, or `schemathesis` on `PATH`.
fn program() -> Option<PathBuf> {
    let venv = repo().join(".venv/bin/schemathesis");
    if venv.exists() {
        return Some(venv);
    }
    Command::new("schemathesis")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("schemathesis"))
}

/// Whether this is CI (`.ci/run` sets `CI=true`), where a missing tool is a failure.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A configuration with only the `echo` provider, and `TOKEN` when `tokens`.
fn write_config(dir: &Path, tokens: bool) -> PathBuf {
    let mut text = String::from("[providers.echo]\nkind = \"echo\"\n");
    if tokens {
        text.push_str(&format!(
            "\n[[auth.tokens]]\ntoken = \"{TOKEN}\"\nowner = \"schemathesis\"\nadmin = true\n"
        ));
    }
    let path = dir.join("troupe.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Runs schemathesis on `document` of `server`; the exit status and the output's tail.
fn run(
    program: &Path,
    server: &ServerProcess,
    document: &str,
    tokens: bool,
    cwd: &Path,
) -> (bool, String) {
    let mut command = Command::new(program);
    command
        .current_dir(cwd)
        .arg("--config-file")
        .arg(repo().join("tests/schemathesis/schemathesis.toml"))
        .args(["run", &format!("{}{document}", server.base())])
        .args(["--url", &server.base()])
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args(["--workers", "1", "--no-color"]);
    if tokens {
        command.args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
    }
    let output = command.output().expect("run schemathesis");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn schemathesis_finds_no_failure_in_either_document_with_or_without_tokens() {
    let Some(program) = program() else {
        let message = format!(
            "schemathesis is not installed (.ci/run installs schemathesis=={PINNED} into .venv); \
             the API contract was NOT checked"
        );
        assert!(!in_ci(), "{message}");
        eprintln!("\n\n!!! SKIPPED: {message} !!!\n");
        return;
    };
    let version = Command::new(&program)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if !version.ends_with(PINNED) {
        let message = format!("{version:?} is not the pinned schemathesis {PINNED}");
        assert!(!in_ci(), "{message}");
        eprintln!("WARNING: {message}; results may differ from CI's");
    }
    let started = Instant::now();
    let mut failures = Vec::new();
    for tokens in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_config(dir.path(), tokens);
        let config = config.to_str().expect("utf-8 path");
        let server = ServerProcess::start(&dir.path().join("data"), &["--config", config], &[]);
        for document in DOCUMENTS {
            let begun = Instant::now();
            let (passed, output) = run(&program, &server, document, tokens, dir.path());
            // "Test cases:" is followed by e.g. "860 generated, 860 passed".
            let cases = output
                .lines()
                .skip_while(|l| !l.starts_with("Test cases:"))
                .nth(1)
                .unwrap_or("(no count)")
                .trim()
                .to_string();
            let summary = output
                .lines()
                .rev()
                .find(|l| l.contains(" in ") && l.starts_with('='))
                .unwrap_or("(no summary)")
                .trim_matches(|c| c == '=' || c == ' ')
                .to_string();
            eprintln!(
                "schemathesis {document} (tokens: {tokens}): {cases}; {summary} [{:.0?}]",
                begun.elapsed()
            );
            if !passed {
                failures.push(format!("{document} (tokens: {tokens}):\n{output}"));
            }
        }
    }
    eprintln!("schemathesis: four runs in {:.0?}", started.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
