//! A newcomer's path: the README's quick-start `curl` examples, run as written (only the port
//! changed) against the real binary, do what the README says they do.

use crate::helpers::*;
use std::process::Command;

/// The ```sh blocks of the README's quick start that talk to the server.
fn quick_start_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("## Quick start")
        .expect("a quick start section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("```").expect("closed block");
        blocks.push(body[..close].to_string());
        rest = &body[close + 3..];
    }
    blocks.into_iter().filter(|b| b.contains("curl")).collect()
}

#[test]
fn readme_curl_examples_work_against_the_binary() {
    for program in ["curl", "jq"] {
        let test = "readme_curl_examples_work_against_the_binary";
        if crate::external::require_program(test, program, "apt-get install curl jq").is_none() {
            return;
        }
    }
    let blocks = quick_start_blocks();
    assert!(blocks.len() >= 4, "create, send, read, stream: {blocks:?}");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[], &[]);
    let address = server.address.to_string();

    // One shell runs the blocks in order (SESSION carries over), printing each block's status.
    let mut script = String::new();
    for (i, block) in blocks.iter().enumerate() {
        script.push_str(&block.replace("127.0.0.1:7878", &address));
        script.push_str(&format!("\necho \"\n@@block {i} status $?\"\n"));
    }
    let output = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("run sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!("script:\n{script}\nstdout:\n{stdout}\nstderr:\n{stderr}");

    for (i, block) in blocks.iter().enumerate() {
        // curl's --max-time ends the endless SSE example with 28 (timed out): that is the demo.
        let expected = if block.contains("--max-time") { 28 } else { 0 };
        assert!(
            stdout.contains(&format!("@@block {i} status {expected}")),
            "block {i} should exit {expected}\n{report}"
        );
    }
    for needle in [
        "\"created\":true",
        "\"status\":\"running\"",
        "[1,\"session.created\"]",
        "[2,\"turn.accepted\"]",
        "event: turn.accepted",
        "event: turn.completed",
        "Hello, Troupe!",
        "Hello over OpenAI",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}`\n{report}");
    }
    assert!(
        !stdout.contains("id: 1\n"),
        "Last-Event-ID: 1 resumes after seq 1\n{report}"
    );
    assert!(server.terminate().success());
}
