//! A group of writes applied in one transaction answers each write as it would alone.

use super::SledEngine;
use crate::event::{Event, EventBody};
use crate::ids::{ScopedKey, SessionId};
use crate::registry::NewSession;
use crate::store::{Batch, CreateOutcome, StoreError, Write, Written};
use crate::time::Timestamp;
use std::sync::Arc;

fn event(session: SessionId, seq: u64, body: EventBody) -> Arc<Event> {
    Arc::new(Event {
        seq,
        session_id: session,
        turn_id: None,
        ts: Timestamp::now(),
        body,
        encoded: Default::default(),
    })
}

/// A create of a new session (with `key`); the write and the session's id.
fn create(key: Option<&str>) -> (Write, SessionId) {
    let (record, first) = NewSession {
        owner: "local".into(),
        provider: "echo".into(),
        key: key.map(String::from),
        ..NewSession::default()
    }
    .into_record();
    let id = record.id;
    let key = record.key.as_ref().map(|k| ScopedKey {
        owner: "local".into(),
        project: None,
        key: k.clone(),
    });
    (
        Write::Create {
            record,
            first,
            key,
            rest: Box::default(),
        },
        id,
    )
}

fn deltas(session: SessionId, seqs: std::ops::RangeInclusive<u64>, active: bool) -> Write {
    Write::Commit {
        session,
        batch: Batch {
            events: seqs
                .map(|seq| {
                    event(
                        session,
                        seq,
                        EventBody::MessageDelta {
                            text: format!("d{seq}"),
                        },
                    )
                })
                .collect(),
            active: active.then_some(true),
            ..Batch::default()
        },
    }
}

fn seqs(engine: &SledEngine, session: SessionId) -> Vec<u64> {
    engine
        .read_events(session, 0, 1000)
        .expect("read")
        .iter()
        .map(|e| e.seq)
        .collect()
}

#[test]
fn a_group_lands_in_one_transaction_with_each_write_answered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = SledEngine::open(dir.path(), None).expect("open");
    let ((create_a, a), (create_b, b), (create_c, c)) =
        (create(Some("k")), create(Some("k")), create(None));
    let answers = engine.apply_group(vec![
        create_a,
        deltas(a, 2..=3, true),
        deltas(a, 4..=4, false),
        create_b,
        create_c,
        deltas(c, 2..=2, false),
    ]);
    let answers: Vec<_> = answers.into_iter().map(|r| r.expect("lands")).collect();
    assert_eq!(
        answers,
        vec![
            Written::Created(CreateOutcome::Created),
            Written::Done,
            Written::Done,
            Written::Created(CreateOutcome::Existing(a)),
            Written::Created(CreateOutcome::Created),
            Written::Done,
        ]
    );
    assert_eq!(seqs(&engine, a), vec![1, 2, 3, 4]);
    assert!(seqs(&engine, b).is_empty(), "a taken key writes nothing");
    assert!(engine.get_session(b).expect("read").is_none());
    assert_eq!(seqs(&engine, c), vec![1, 2]);
    assert_eq!(engine.active_sessions().expect("active"), vec![a]);
}

#[test]
fn a_conflict_in_a_group_fails_only_its_own_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = SledEngine::open(dir.path(), None).expect("open");
    let ((create_a, a), b) = (create(None), SessionId::new());
    let answers = engine.apply_group(vec![
        create_a,
        deltas(a, 2..=3, true),
        // b has no log: an append at seq 5 leaves a gap.
        deltas(b, 5..=5, true),
        deltas(a, 4..=4, false),
        // and seq 3 of a is taken by now.
        deltas(a, 3..=3, true),
    ]);
    assert!(matches!(
        answers[0],
        Ok(Written::Created(CreateOutcome::Created))
    ));
    assert!(matches!(answers[1], Ok(Written::Done)));
    assert!(matches!(
        answers[2],
        Err(StoreError::SeqConflict {
            expected: 5,
            actual: 0,
            ..
        })
    ));
    assert!(matches!(answers[3], Ok(Written::Done)));
    assert!(matches!(
        answers[4],
        Err(StoreError::SeqConflict { actual: 4, .. })
    ));
    assert_eq!(seqs(&engine, a), vec![1, 2, 3, 4]);
    assert!(seqs(&engine, b).is_empty());
}

/// A create with the rest of a session (a fork, an import) lands whole, alone or in a group;
/// a rest that does not follow the first event lands nothing.
#[test]
fn a_create_with_its_rest_lands_whole_or_not_at_all() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = SledEngine::open(dir.path(), None).expect("open");
    let with_rest = |first_rest_seq: u64| {
        let (write, id) = create(None);
        let Write::Create {
            record, first, key, ..
        } = write
        else {
            unreachable!("create() makes a create")
        };
        let turn = crate::record::TurnRecord {
            id: crate::ids::TurnId::new(),
            session_id: id,
            content: "hi".into(),
            mode: Default::default(),
            client_message_id: None,
            options: serde_json::Value::Null,
            status: crate::record::TurnStatus::Completed,
            outcome: Some(crate::record::Outcome::Success),
            order: 1,
            attempts: 1,
            accepted_at: Timestamp::now(),
            started_at: None,
            completed_at: None,
            usage: Default::default(),
        };
        let Write::Commit { batch, .. } = deltas(id, first_rest_seq..=first_rest_seq + 2, false)
        else {
            unreachable!("deltas() makes a commit")
        };
        let rest = Batch {
            turns: vec![turn],
            ..batch
        };
        (
            Write::Create {
                record,
                first,
                key,
                rest: Box::new(rest),
            },
            id,
        )
    };
    let (alone, a) = with_rest(2);
    assert_eq!(
        engine.apply_one(alone).expect("create"),
        Written::Created(CreateOutcome::Created)
    );
    assert_eq!(seqs(&engine, a), vec![1, 2, 3, 4]);
    assert_eq!(engine.all_turns(a).expect("turns").len(), 1);

    let (grouped, b) = with_rest(2);
    let (broken, c) = with_rest(5);
    let answers = engine.apply_group(vec![grouped, broken]);
    assert!(matches!(
        answers[0],
        Ok(Written::Created(CreateOutcome::Created))
    ));
    assert!(matches!(answers[1], Err(StoreError::SeqConflict { .. })));
    assert_eq!(seqs(&engine, b), vec![1, 2, 3, 4]);
    assert!(seqs(&engine, c).is_empty());
    assert!(engine.get_session(c).expect("read").is_none());
    assert!(engine.all_turns(c).expect("turns").is_empty());
}
