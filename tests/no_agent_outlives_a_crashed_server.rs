//! No agent process outlives a crashed server, through the real binary. A fake `claude` that
//! ignores SIGTERM and starts a grandchild (which inherits the ignored SIGTERM) runs a turn;
//! the server is killed with `kill -9`. The parent-death signal takes the agent along at once;
//! the restarted server reaps the grandchild before it listens, and the re-run turn's
//! processes are the only ones of that session. A second test records process groups by hand:
//! one whose leader pid now names a process with another start time (a reused pid) is left
//! alone, one whose leader is still the recorded process is killed.

#[path = "support/server_process.rs"]
mod server_process;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use server_process::ServerProcess;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use troupe::providers::proc_table;
use troupe_actors::process_groups::{ProcessGroupChange, ProcessGroupRecord};
use troupe_actors::store::Write;
use troupe_actors::{SessionId, SledStore, Store, Timestamp, TurnId};

/// The provider's SIGTERM → SIGKILL grace, short so the reaper's wait is short.
const KILL_GRACE_MS: u64 = 200;

/// A config with the fake `claude` as provider `fake`, writing its pids to `pids`.
fn config(dir: &Path, pids: &Path) -> std::path::PathBuf {
    let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_clis/claude");
    let file = dir.join("troupe.toml");
    std::fs::write(
        &file,
        format!(
            r#"
shutdown_grace_secs = 0
[runtime]
retry_base_ms = 10
retry_max_ms = 50
[providers.fake]
kind = "claude-cli"
command = "{}"
env = {{ FAKE_PIDS = "{}" }}
timeouts = {{ kill_grace_ms = {KILL_GRACE_MS} }}
"#,
            fake.display(),
            pids.display()
        ),
    )
    .expect("write config");
    file
}

fn start(dir: &Path, config: &Path) -> ServerProcess {
    ServerProcess::start(
        &dir.join("data"),
        &["--config", config.to_str().expect("utf-8 path")],
        &[],
    )
}

/// Blocking JSON calls against one server.
struct Api {
    client: reqwest::blocking::Client,
    base: String,
}

impl Api {
    fn new(server: &ServerProcess) -> Api {
        Api {
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            base: server.base(),
        }
    }

    fn get(&self, path: &str) -> Value {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .expect("GET");
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().expect("json")
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .expect("POST");
        assert!(resp.status().is_success(), "POST {path}: {}", resp.status());
        resp.json().expect("json")
    }

    fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .expect("GET /metrics")
            .text()
            .expect("text")
    }
}

/// Whether `pid` runs (a zombie has exited: it only waits for its parent to reap it).
fn alive(pid: i32) -> bool {
    proc_table::stat(pid).is_some_and(|s| s.running())
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The agent's and its grandchild's pids, once the fake wrote them.
fn wait_for_pids(pids: &Path) -> (i32, i32) {
    let mut found = None;
    wait_until(Duration::from_secs(20), "the fake CLI's pid file", || {
        found = std::fs::read_to_string(pids)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|v| Some((v["pid"].as_i64()? as i32, v["grandchild"].as_i64()? as i32)));
        found.is_some()
    });
    found.expect("found")
}

/// Every running process whose environment names `marker` (the fake's `FAKE_PIDS` path,
/// unique to one test and inherited by the grandchild): the processes of that test's agents.
fn agent_processes(marker: &Path) -> BTreeSet<i32> {
    let needle = format!("FAKE_PIDS={}", marker.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .collect()
}

/// Kills a group the test is done with (the server is gone, or will be).
fn kill_group(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

#[test]
fn kill_9_takes_the_agent_along_and_the_restart_reaps_the_rest_before_rerunning_the_turn() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pids = dir.path().join("pids.json");
    let config = config(dir.path(), &pids);
    let server = start(dir.path(), &config);
    let api = Api::new(&server);
    let session = api.post("/api/v1/sessions", json!({"provider": "fake"}))["session"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let turn = api.post(
        &format!("/api/v1/sessions/{session}/turns"),
        json!({"content": "stubborn"}),
    )["turn_id"]
        .as_str()
        .expect("turn_id")
        .to_string();
    let (agent, grandchild) = wait_for_pids(&pids);
    assert!(alive(agent) && alive(grandchild));
    assert_eq!(agent_processes(&pids), BTreeSet::from([agent, grandchild]));

    let killed = Instant::now();
    server.kill9();
    wait_until(
        Duration::from_secs(5),
        "the agent to die with the server",
        || !alive(agent),
    );
    let agent_gone = killed.elapsed();
    // Nothing but the reaper can stop the grandchild: it ignores SIGTERM and lost its parent.
    assert!(
        alive(grandchild),
        "the grandchild is left for the reaper (else this test proves nothing)"
    );

    std::fs::remove_file(&pids).expect("remove the pid file");
    let server = start(dir.path(), &config);
    // The server listens only after reaping: the grandchild is gone by now.
    wait_until(
        Duration::from_secs(5),
        "the grandchild to be reaped",
        || !alive(grandchild),
    );
    let grandchild_gone = killed.elapsed();
    eprintln!(
        "kill -9 → agent gone in {} ms (parent-death signal), grandchild gone in {} ms \
         (reaped by the restarted server, which includes its startup)",
        agent_gone.as_millis(),
        grandchild_gone.as_millis()
    );
    let api = Api::new(&server);
    let figures = api.get("/api/v1/admin/actors");
    assert_eq!(figures["registry"]["reaped_process_groups"], 1, "{figures}");
    assert!(
        api.metrics()
            .lines()
            .any(|l| l == "troupe_process_groups_reaped_total 1"),
        "the reaped group is counted in /metrics"
    );

    // The interrupted turn runs again, in a new process group, and nothing else of the
    // session runs beside it.
    let (rerun, rerun_grandchild) = wait_for_pids(&pids);
    assert_ne!(rerun, agent);
    assert_eq!(
        agent_processes(&pids),
        BTreeSet::from([rerun, rerun_grandchild]),
        "only the re-run turn's processes belong to the session"
    );
    let events = api.get(&format!("/api/v1/sessions/{session}/events?limit=1000"))["events"]
        .as_array()
        .expect("events")
        .clone();
    let completed: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "turn.completed" && e["turn_id"] == turn.as_str())
        .collect();
    assert_eq!(completed.len(), 1, "{events:?}");
    assert_eq!(completed[0]["data"]["outcome"], "interrupted");

    drop(server);
    kill_group(rerun);
}

/// A process of its own group that the test owns: `sleep 300`.
fn sleeper() -> Child {
    use std::os::unix::process::CommandExt;
    Command::new("sleep")
        .arg("300")
        .process_group(0)
        .spawn()
        .expect("spawn sleep")
}

/// A record of `child`'s group as an attempt would write it, with `start` as the leader's
/// start time.
fn record_of(child: &Child, start: u64) -> ProcessGroupRecord {
    let pid = child.id() as i32;
    ProcessGroupRecord {
        pgid: pid,
        leader_pid: pid,
        leader_start: start,
        boot_id: proc_table::boot_id().expect("boot id"),
        kill_grace_ms: KILL_GRACE_MS,
        session_id: SessionId::new(),
        turn_id: TurnId::new(),
        attempt: 1,
        started_at: Timestamp::now(),
    }
}

#[test]
fn a_reused_pid_is_left_alone_and_a_recorded_live_group_is_killed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pids = dir.path().join("pids.json");
    let config = config(dir.path(), &pids);
    let mut unrelated = sleeper();
    let mut recorded = sleeper();
    let start_of = |child: &Child| {
        proc_table::stat(child.id() as i32)
            .expect("a running child has a stat")
            .start
    };
    {
        let store: std::sync::Arc<dyn Store> =
            std::sync::Arc::new(SledStore::open(dir.path().join("data")).expect("open store"));
        // The recorded leader started earlier than the process that has its pid now.
        let reused = record_of(&unrelated, start_of(&unrelated) - 1);
        let live = record_of(&recorded, start_of(&recorded));
        for record in [reused, live] {
            let write = store.write(Write::ProcessGroup(ProcessGroupChange::Started(record)));
            futures::executor::block_on(write).expect("record the group");
        }
        let recorded = futures::executor::block_on(store.process_groups()).expect("read back");
        assert_eq!(recorded.len(), 2);
    }

    let server = start(dir.path(), &config);
    wait_until(
        Duration::from_secs(5),
        "the recorded group to be killed",
        || recorded.try_wait().expect("try_wait").is_some(),
    );
    assert!(
        alive(unrelated.id() as i32),
        "a process that only shares a recorded pid is never killed"
    );
    let figures = Api::new(&server).get("/api/v1/admin/actors");
    assert_eq!(figures["registry"]["reaped_process_groups"], 1, "{figures}");
    drop(server);

    // Every record was cleared: the next start reaps nothing and leaves the process alone.
    let server = start(dir.path(), &config);
    let figures = Api::new(&server).get("/api/v1/admin/actors");
    assert_eq!(figures["registry"]["reaped_process_groups"], 0, "{figures}");
    assert!(alive(unrelated.id() as i32));
    drop(server);
    let _ = unrelated.kill();
    let _ = unrelated.wait();
}
