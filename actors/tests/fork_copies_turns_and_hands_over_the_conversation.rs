//! A fork at a turn copies the source's turns and events up to the end of that turn into a new
//! session (one store write, renumbered from seq 1, `session.created` naming the origin), leaves
//! the source untouched, and hands the provider's conversation over by the provider's means:
//! stateless providers get the copied history, a provider that forks resumes the source's
//! conversation as a fork, any other starts fresh with a transcript and says so.
mod common;

use common::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use troupe_actors::provider::HistoryMessage;
use troupe_actors::record::{Origin, OriginKind};
use troupe_actors::transfer::CopySpec;
use troupe_actors::{
    AttemptRequest, BusyMode, Capabilities, EchoProvider, EventBody, Provider, ProviderRun,
    Runtime, SessionHandle, SessionId, TurnId,
};

/// What an agent attempt was given: prompt, provider session id, fork flag.
type AgentSeen = Arc<Mutex<Vec<(String, Option<String>, bool)>>>;

/// A provider that keeps its own conversation (not stateless), like a CLI agent: a fresh or
/// forked conversation gets a new id, reported as the echo script's provider session id.
struct Agent {
    fork: bool,
    seen: AgentSeen,
}

impl Provider for Agent {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            resume: true,
            steer: false,
            stateless: false,
            fork: self.fork,
        }
    }

    fn start(&self, mut request: AttemptRequest) -> ProviderRun {
        self.seen.lock().unwrap().push((
            request.prompt.clone(),
            request.provider_session_id.clone(),
            request.fork_session,
        ));
        if request.provider_session_id.is_none() || request.fork_session {
            let id = format!("conv-{}", TurnId::new());
            request.options = json!({"script": {"provider_session_id": id}});
        }
        // The echo answers the user's own words, not the transcript around them.
        if let Some((_, message)) = request.prompt.rsplit_once("The user's new message:\n\n") {
            request.prompt = message.to_string();
        }
        EchoProvider::new().start(request)
    }

    fn kind(&self) -> &str {
        "agent"
    }
}

struct Fixture {
    rt: Runtime,
    history: Seen,
    forking: AgentSeen,
    plain: AgentSeen,
}

fn fixture() -> Fixture {
    let history = Seen::default();
    let forking = AgentSeen::default();
    let plain = AgentSeen::default();
    let rt = Runtime::builder()
        .provider(
            "echo",
            Recording {
                echo: EchoProvider::new(),
                seen: history.clone(),
            },
        )
        .provider(
            "forking",
            Agent {
                fork: true,
                seen: forking.clone(),
            },
        )
        .provider(
            "plain",
            Agent {
                fork: false,
                seen: plain.clone(),
            },
        )
        .settings(fast_settings())
        .start();
    Fixture {
        rt,
        history,
        forking,
        plain,
    }
}

/// Sends `text` and waits for its `turn.completed`.
async fn turn(handle: &SessionHandle, text: &str) -> TurnId {
    let mut sub = live_events(handle).await;
    let receipt = handle.send_text(text, BusyMode::Enqueue).await.unwrap();
    collect_until(&mut sub, |e| {
        e.turn_id == Some(receipt.turn_id) && matches!(e.body, EventBody::TurnCompleted { .. })
    })
    .await;
    receipt.turn_id
}

fn spec() -> CopySpec {
    CopySpec {
        owner: "local".into(),
        ..CopySpec::default()
    }
}

fn msg(role: &str, text: &str) -> HistoryMessage {
    HistoryMessage {
        role: role.into(),
        text: text.into(),
    }
}

async fn origin_of(rt: &Runtime, id: SessionId) -> Origin {
    match &stored_events(rt.store(), id).await[0].body {
        EventBody::SessionCreated {
            origin: Some(origin),
            ..
        } => origin.clone(),
        other => panic!("seq 1 is not a session.created with an origin: {other:?}"),
    }
}

#[actix_rt::test]
async fn a_fork_at_a_middle_turn_copies_that_far_and_leaves_the_source_alone() {
    let f = fixture();
    let source = session_on(&f.rt, "echo").await;
    let one = turn(&source, "one").await;
    let two = turn(&source, "two").await;
    let three = turn(&source, "three").await;
    let source_log = stored_events(f.rt.store(), source.id()).await;

    let fork = f.rt.fork(source.id(), Some(two), spec()).await.unwrap();
    let log = stored_events(f.rt.store(), fork.id).await;
    assert_gapless(&log, 1);
    assert_eq!(fork.last_seq, log.len() as u64);
    assert_eq!(
        origin_of(&f.rt, fork.id).await,
        Origin {
            kind: OriginKind::Fork,
            session_id: source.id(),
            turn_id: Some(two),
            seq: source_log
                .iter()
                .find(|e| e.turn_id == Some(two) && e.kind() == "turn.completed")
                .unwrap()
                .seq,
        }
    );
    // The source's events of turns one and two, in order, with the same content.
    let copied: Vec<_> = source_log
        .iter()
        .filter(|e| e.turn_id == Some(one) || e.turn_id == Some(two))
        .map(|e| (e.turn_id, e.body.clone()))
        .collect();
    let forked: Vec<_> = log[1..]
        .iter()
        .filter(|e| e.turn_id.is_some())
        .map(|e| (e.turn_id, e.body.clone()))
        .collect();
    assert_eq!(forked, copied);
    assert!(log.iter().all(|e| e.session_id == fork.id));
    assert!(!log.iter().any(|e| e.turn_id == Some(three)));
    let turns = f.rt.store().all_turns(fork.id).await.unwrap();
    assert_eq!(
        turns.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![one, two]
    );
    assert!(turns.iter().all(|t| t.session_id == fork.id));

    // The stateless provider is given the copied conversation, not turn three.
    let forked = f.rt.handle(fork.id);
    turn(&forked, "four").await;
    let (prompt, history) = f.history.lock().unwrap().last().cloned().unwrap();
    assert_eq!(prompt, "four");
    assert_eq!(
        history,
        vec![
            msg("user", "one"),
            msg("assistant", "one"),
            msg("user", "two"),
            msg("assistant", "two"),
        ]
    );

    // The source is untouched by the fork and by the fork's turn.
    assert_eq!(stored_events(f.rt.store(), source.id()).await, source_log);

    // A fork of the fork (at its last turn) names the fork as its origin.
    let again = f.rt.fork(fork.id, None, spec()).await.unwrap();
    let origin = origin_of(&f.rt, again.id).await;
    assert_eq!(origin.session_id, fork.id);
    assert_eq!(origin.kind, OriginKind::Fork);
    let again_turns = f.rt.store().all_turns(again.id).await.unwrap();
    assert_eq!(again_turns.len(), 3);
    assert_eq!(
        again_turns[..2].iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![one, two]
    );

    // A turn that is not a completed turn of the session is `turn_not_found`.
    let missing = f.rt.fork(source.id(), Some(TurnId::new()), spec()).await;
    assert_eq!(missing.unwrap_err().code(), "turn_not_found");
}

#[actix_rt::test]
async fn a_forking_provider_resumes_the_source_conversation_as_a_fork() {
    let f = fixture();
    let source = session_on(&f.rt, "forking").await;
    turn(&source, "one").await;
    turn(&source, "two").await;
    let source_conversation = source.info().await.unwrap().provider_session_id.unwrap();

    let fork = f.rt.fork(source.id(), None, spec()).await.unwrap();
    assert_eq!(
        fork.provider_session_id.as_deref(),
        Some(source_conversation.as_str())
    );
    let forked = f.rt.handle(fork.id);
    turn(&forked, "three").await;
    turn(&forked, "four").await;
    turn(&source, "five").await;
    let seen = f.forking.lock().unwrap().clone();
    // The fork's first attempt resumes the source's conversation as a fork; its next one
    // resumes the fork's own conversation; the source goes on with its own.
    assert_eq!(
        seen[2],
        ("three".into(), Some(source_conversation.clone()), true)
    );
    let fork_conversation = forked.info().await.unwrap().provider_session_id.unwrap();
    assert_ne!(fork_conversation, source_conversation);
    assert_eq!(seen[3], ("four".into(), Some(fork_conversation), false));
    assert_eq!(seen[4], ("five".into(), Some(source_conversation), false));
}

#[actix_rt::test]
async fn a_provider_that_cannot_fork_starts_fresh_with_a_transcript_and_says_so() {
    let f = fixture();
    // Forking provider, but the cut is not its latest turn: its conversation holds more.
    let source = session_on(&f.rt, "forking").await;
    let one = turn(&source, "one").await;
    turn(&source, "two").await;
    let fork = f.rt.fork(source.id(), Some(one), spec()).await.unwrap();
    assert_eq!(fork.provider_session_id, None);
    let log = stored_events(f.rt.store(), fork.id).await;
    assert!(matches!(
        &log.last().unwrap().body,
        EventBody::SessionUpdated { reason, .. } if reason == "transcript_seeded"
    ));
    let forked = f.rt.handle(fork.id);
    turn(&forked, "three").await;
    turn(&forked, "four").await;
    let seen = f.forking.lock().unwrap().clone();
    assert_eq!(
        seen[2],
        (
            "The conversation so far:\n\nuser: one\n\nassistant: one\n\n\
             The user's new message:\n\nthree"
                .into(),
            None,
            false
        )
    );
    // Once answered, the provider has the conversation: the next turn is just the message.
    assert_eq!(seen[3].0, "four");
    assert!(seen[3].1.is_some());

    // A provider that cannot fork at all: the same, even at the last turn.
    let plain = session_on(&f.rt, "plain").await;
    turn(&plain, "alpha").await;
    let fork = f.rt.fork(plain.id(), None, spec()).await.unwrap();
    turn(&f.rt.handle(fork.id), "beta").await;
    let seen = f.plain.lock().unwrap().clone();
    assert!(seen[1]
        .0
        .starts_with("The conversation so far:\n\nuser: alpha\n\n"));
    assert_eq!(seen[1].1, None);
}

#[actix_rt::test]
async fn a_switch_to_a_provider_that_keeps_its_own_conversation_hands_over_a_transcript() {
    let f = fixture();
    let session = session_on(&f.rt, "echo").await;
    turn(&session, "one").await;
    let view = session
        .update(troupe_actors::session::UpdateSession {
            provider: Some("plain".into()),
            model: Some("big".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (view.provider.as_str(), view.model.as_deref()),
        ("plain", Some("big"))
    );
    assert_eq!(view.provider_session_id, None);
    turn(&session, "two").await;
    turn(&session, "three").await;
    let seen = f.plain.lock().unwrap().clone();
    assert_eq!(
        seen[0],
        (
            "The conversation so far:\n\nuser: one\n\nassistant: one\n\n\
             The user's new message:\n\ntwo"
                .into(),
            None,
            false
        )
    );
    assert_eq!(seen[1].0, "three");
    let reasons: Vec<_> = stored_events(f.rt.store(), session.id())
        .await
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::SessionUpdated { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert!(
        reasons.contains(&"provider_changed".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"model_changed".to_string()),
        "{reasons:?}"
    );
    // An unknown provider is refused and changes nothing.
    let refused = session
        .update(troupe_actors::session::UpdateSession {
            provider: Some("nope".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(refused.unwrap_err().code(), "unknown_provider");
    assert_eq!(session.info().await.unwrap().provider, "plain");
}
