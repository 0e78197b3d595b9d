//! Process hygiene of the CLI runner: no child or grandchild outlives its attempt, whether the
//! attempt is cancelled, dropped, ignores SIGTERM or leaves a process behind; and a fake CLI
//! provider end to end through the runtime.

mod providers_support;

use providers_support::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe::providers::{ClaudeCli, CliProvider, CodexCli};
use troupe_actors::{
    BusyMode, Event, EventBody, NewSession, Outcome, Provider, ProviderEvent, Subscription,
};

#[actix_rt::test]
async fn cancel_kills_the_child_and_its_grandchild() {
    let fake = Fake::new();
    let mut settings = fake.settings("claude");
    settings.steer = false;
    let req = request("spawn a helper");
    let cancel = req.cancel.clone();
    let run = CliProvider::new(ClaudeCli, settings).start(req);
    let pid = run.pid.expect("pid") as i32;
    let (child, grandchild) = fake.pids().await;
    assert_eq!(child, pid);
    assert!(!pid_gone(grandchild));
    cancel.cancel();
    let events = collect(run).await;
    assert!(!events.iter().any(|e| matches!(e, ProviderEvent::Done(_))));
    assert!(wait_gone(pid).await, "child {pid} survived the cancel");
    assert!(
        wait_gone(grandchild).await,
        "grandchild {grandchild} survived the cancel"
    );
}

#[actix_rt::test]
async fn dropping_the_run_kills_the_process_group() {
    let fake = Fake::new();
    let run = fake.provider(CodexCli, "codex").start(request("spawn"));
    let (child, grandchild) = fake.pids().await;
    drop(run);
    assert!(wait_gone(child).await, "child survived the drop");
    assert!(wait_gone(grandchild).await, "grandchild survived the drop");
}

#[actix_rt::test]
async fn a_child_ignoring_sigterm_is_killed_after_the_grace() {
    let fake = Fake::new();
    let mut settings = fake.settings("claude");
    settings.steer = false;
    settings.kill_grace = Duration::from_millis(200);
    let req = request("stubborn");
    let cancel = req.cancel.clone();
    let run = CliProvider::new(ClaudeCli, settings).start(req);
    let (child, grandchild) = fake.pids().await;
    let started = Instant::now();
    cancel.cancel();
    drop(run);
    assert!(wait_gone(child).await, "a SIGTERM-ignoring child survived");
    assert!(wait_gone(grandchild).await);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "it was given its grace"
    );
}

#[actix_rt::test]
async fn a_grandchild_left_behind_after_a_result_is_reaped() {
    let fake = Fake::new();
    let mut settings = fake.settings("codex");
    settings.exit_grace = Duration::from_millis(300);
    let events = collect(CliProvider::new(CodexCli, settings).start(request("orphan"))).await;
    assert_eq!(done(&events).exit_code, Some(0));
    let (_, grandchild) = fake.pids().await;
    assert!(
        wait_gone(grandchild).await,
        "the orphan outlived the attempt"
    );
}

async fn until_completed(sub: &mut Subscription, n: usize) -> Vec<Arc<Event>> {
    let mut out = Vec::new();
    let mut completed = 0;
    while completed < n {
        let event = tokio::time::timeout(ATTEMPT_LIMIT, sub.next())
            .await
            .expect("turn did not complete in time")
            .expect("subscription closed");
        if matches!(event.body, EventBody::TurnCompleted { .. }) {
            completed += 1;
        }
        out.push(event);
    }
    out
}

#[actix_rt::test]
async fn a_cli_session_resumes_its_provider_session_on_the_next_turn() {
    let fake = Fake::new();
    let rt = runtime_with("claude", fake.provider(ClaudeCli, "claude"));
    let (session, _) = rt
        .get_or_create(NewSession {
            owner: "local".into(),
            provider: "claude".into(),
            ..NewSession::default()
        })
        .await
        .unwrap();
    let mut sub = session.subscribe(0).await.unwrap();
    session.send_text("hello", BusyMode::Enqueue).await.unwrap();
    let first = until_completed(&mut sub, 1).await;
    let provider_session = session.info().await.unwrap().provider_session_id;
    let provider_session = provider_session.expect("the provider session id was mapped");
    assert!(
        first.iter().any(|e| matches!(&e.body,
        EventBody::TurnCompleted { outcome: Outcome::Success, cost_usd: Some(c), .. } if *c > 0.0))
    );
    session.send_text("again", BusyMode::Enqueue).await.unwrap();
    let second = until_completed(&mut sub, 1).await;
    let text: String = second
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::MessageDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, format!("resumed {provider_session}: 5 bytes"));
    let argv = fake.last_argv();
    let at = argv.iter().position(|a| a == "--resume").expect("--resume");
    assert_eq!(argv[at + 1], provider_session);
    for record in fake.records() {
        assert!(
            wait_gone(record["pid"].as_i64().unwrap() as i32).await,
            "a turn's process lingers"
        );
    }
}

#[actix_rt::test]
async fn a_prompt_too_long_turn_fails_terminally_after_one_attempt() {
    let fake = Fake::new();
    let rt = runtime_with("claude", fake.provider(ClaudeCli, "claude"));
    let (session, _) = rt
        .get_or_create(NewSession {
            owner: "local".into(),
            provider: "claude".into(),
            ..NewSession::default()
        })
        .await
        .unwrap();
    let mut sub = session.subscribe(0).await.unwrap();
    session
        .send_text("toolong", BusyMode::Enqueue)
        .await
        .unwrap();
    let events = until_completed(&mut sub, 1).await;
    let Some(EventBody::TurnCompleted { outcome, error, .. }) = events.last().map(|e| &e.body)
    else {
        unreachable!("until_completed ends on turn.completed")
    };
    assert_eq!(*outcome, Outcome::Failed);
    assert_eq!(error.as_ref().unwrap().code, "prompt_too_long");
    assert!(!events
        .iter()
        .any(|e| matches!(e.body, EventBody::TurnRetrying { .. })));
    assert_eq!(
        fake.records().len(),
        1,
        "a terminal failure is attempted once"
    );
}
