//! Fork, export and import over REST: a fork at a middle turn (and a fork of the fork), an
//! export → import round trip that is equal except ids, the Markdown transcript, and the
//! errors of each door.

use crate::helpers::*;
use serde_json::{json, Value};

/// Sends `content` to session `id` and waits for its end; the turn id.
async fn turn(app: &TestApp, id: &str, body: Value) -> String {
    let (status, receipt) = app.send_turn(id, body).await;
    assert_eq!(status, 202, "{receipt}");
    let turn = receipt["turn_id"].as_str().unwrap().to_string();
    assert_eq!(app.wait_for_outcome(id, &turn).await, "success");
    turn
}

/// The export of session `id`: status, content type, body.
async fn export(app: &TestApp, id: &str, query: &str) -> (u16, String, String) {
    let resp = app
        .client
        .get(app.url(&format!("/api/v1/sessions/{id}/export{query}")))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, resp.text().await.unwrap())
}

fn lines(export: &str) -> Vec<Value> {
    export
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// An event without what differs between two sessions with the same history: ids, and the
/// session's usage totals and budget (a copy starts with nothing spent and the configured
/// budget; the turns keep their own usage).
fn without_ids(mut event: Value) -> Value {
    let object = event.as_object_mut().unwrap();
    object.remove("session_id");
    if let Some(session) = object
        .get_mut("data")
        .and_then(|d| d.get_mut("session"))
        .and_then(Value::as_object_mut)
    {
        for field in [
            "id",
            "updated_at",
            "created_at",
            "last_seq",
            "usage",
            "budget",
        ] {
            session.remove(field);
        }
    }
    event
}

#[actix_rt::test]
async fn a_fork_at_a_middle_turn_copies_up_to_it_and_the_source_stays() {
    let app = spawn_app().await;
    let source = app.create_session().await;
    let one = turn(&app, &source, json!({"content": "one"})).await;
    let two = turn(
        &app,
        &source,
        json!({"content": "two", "options": {"script": {"tool_use": true}}}),
    )
    .await;
    let three = turn(&app, &source, json!({"content": "three"})).await;
    let budget = json!({"budget": {"max_tokens": 100000}});
    let (status, patched) = app
        .patch(&format!("/api/v1/sessions/{source}"), budget)
        .await;
    assert_eq!(status, 200, "{patched}");
    let source_events = app.all_events(&source).await;

    let (status, body) = app
        .post(
            &format!("/api/v1/sessions/{source}/fork"),
            json!({"at_turn_id": two, "title": "the other way", "key": "fork-1"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // The spend and the budget were the source's: the fork starts with nothing spent, under
    // the configured budget.
    assert_eq!(body["session"]["usage"]["total"]["total_tokens"], 0);
    assert_eq!(body["session"]["budget"], Value::Null);
    assert!(patched["session"]["usage"]["total"]["total_tokens"].as_u64() > Some(0));
    let fork = body["session"]["id"].as_str().unwrap().to_string();
    assert_ne!(fork, source);
    assert_eq!(body["session"]["title"], "the other way");
    assert_eq!(body["session"]["key"], "fork-1");

    let events = app.all_events(&fork).await;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "renumbered from 1 without gaps");
        assert_eq!(e["session_id"], fork.as_str());
    }
    assert_eq!(body["session"]["last_seq"], events.len() as u64);
    assert_eq!(events[0]["kind"], "session.created");
    let end_of_two = source_events
        .iter()
        .find(|e| e["kind"] == "turn.completed" && e["turn_id"] == two.as_str())
        .unwrap()["seq"]
        .clone();
    assert_eq!(
        events[0]["data"]["origin"],
        json!({"kind": "fork", "session_id": source, "turn_id": two, "seq": end_of_two})
    );
    let of_turns = |events: &[Value], turns: &[&str]| -> Vec<Value> {
        events
            .iter()
            .filter(|e| turns.iter().any(|t| e["turn_id"] == *t))
            .map(|e| json!([e["turn_id"], e["kind"], e["data"]]))
            .collect()
    };
    assert_eq!(
        of_turns(&events, &[&one, &two, &three]),
        of_turns(&source_events, &[&one, &two]),
        "the fork holds turns one and two (the tool call too), not three"
    );
    let (_, turns) = app.get(&format!("/api/v1/sessions/{fork}/turns")).await;
    let ids: Vec<_> = turns["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["turn_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![one.clone(), two.clone()]);

    // The fork runs on; the source is untouched.
    turn(&app, &fork, json!({"content": "four"})).await;
    assert_eq!(app.all_events(&source).await, source_events);

    // A fork of the fork, at its latest turn, names the fork as its origin.
    let (status, body) = app
        .post(&format!("/api/v1/sessions/{fork}/fork"), json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    let again = body["session"]["id"].as_str().unwrap().to_string();
    let events = app.all_events(&again).await;
    assert_eq!(events[0]["data"]["origin"]["session_id"], fork.as_str());
    let (_, turns) = app.get(&format!("/api/v1/sessions/{again}/turns")).await;
    assert_eq!(turns["turns"].as_array().unwrap().len(), 3);

    // Errors: a turn that is not one of the session's, a taken key, another owner's session.
    let answer = app
        .post(
            &format!("/api/v1/sessions/{source}/fork"),
            json!({"at_turn_id": three.replace(&three[..8], "00000000")}),
        )
        .await;
    assert_error(&answer, 404, "turn_not_found");
    let answer = app
        .post(
            &format!("/api/v1/sessions/{source}/fork"),
            json!({"key": "fork-1"}),
        )
        .await;
    assert_error(&answer, 400, "invalid_session_key");
    let answer = app
        .post(
            "/api/v1/sessions/0193aaaa-aaaa-7aaa-8aaa-aaaaaaaaaaaa/fork",
            json!({}),
        )
        .await;
    assert_error(&answer, 404, "session_not_found");
}

#[actix_rt::test]
async fn an_export_imports_into_an_equal_session_with_new_ids() {
    let app = spawn_app().await;
    let (_, created) = app
        .post(
            "/api/v1/sessions",
            json!({"provider": "echo", "title": "to move", "model": "m1"}),
        )
        .await;
    let source = created["session"]["id"].as_str().unwrap().to_string();
    turn(&app, &source, json!({"content": "hello there"})).await;
    turn(
        &app,
        &source,
        json!({"content": "use a tool", "options": {"script": {"tool_use": true}}}),
    )
    .await;

    let (status, content_type, text) = export(&app, &source, "").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/x-ndjson");
    let exported = lines(&text);
    assert_eq!(exported[0]["type"], "session");
    assert_eq!(exported[0]["format"], "troupe.session");
    assert_eq!(exported[0]["version"], 1);
    assert_eq!(exported[0]["session"]["id"], source.as_str());
    let turn_lines = exported.iter().filter(|l| l["type"] == "turn").count();
    assert_eq!(turn_lines, 2);

    let resp = app
        .client
        .post(app.url("/api/v1/sessions/import?key=moved"))
        .header("content-type", "application/x-ndjson")
        .body(text.clone())
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 201, "{body}");
    let imported = body["session"]["id"].as_str().unwrap().to_string();
    assert_ne!(imported, source);
    assert_eq!(body["session"]["key"], "moved");
    assert_eq!(body["session"]["title"], "to move");
    assert_eq!(body["session"]["model"], "m1");
    assert_eq!(body["session"]["owner"], "local");
    assert_eq!(
        body["session"]["usage"],
        json!({"total": {"input_tokens": 0, "output_tokens": 0, "cached_tokens": 0,
            "total_tokens": 0, "cost_usd": 0.0}, "turn": null}),
        "an import has spent nothing here"
    );
    assert_eq!(exported[0]["session"]["usage"]["total"]["total_tokens"], 10);

    // Exported again, it is the same session but for its ids (and the new `session.created`).
    let (_, _, again) = export(&app, &imported, "").await;
    let again = lines(&again);
    let turns = |ls: &[Value]| -> Vec<Value> {
        ls.iter()
            .filter(|l| l["type"] == "turn")
            .map(|l| {
                let mut t = l["turn"].clone();
                t.as_object_mut().unwrap().remove("session_id");
                t
            })
            .collect()
    };
    assert_eq!(turns(&again), turns(&exported));
    let events = |ls: &[Value]| -> Vec<Value> {
        ls.iter()
            .filter(|l| l["type"] == "event" && l["event"]["seq"] != 1)
            .map(|l| without_ids(l["event"].clone()))
            .collect()
    };
    assert_eq!(events(&again), events(&exported));
    for event in again.iter().filter(|l| l["type"] == "event") {
        if let Some(usage) = event["event"]["data"]["session"].get("usage") {
            assert_eq!(
                usage["total"]["total_tokens"], 0,
                "no copied session object claims the source's spend: {event}"
            );
        }
    }
    let created = &again.iter().find(|l| l["type"] == "event").unwrap()["event"];
    assert_eq!(created["data"]["origin"]["kind"], "import");
    assert_eq!(created["data"]["origin"]["session_id"], source.as_str());

    // The imported session runs on with its history.
    turn(&app, &imported, json!({"content": "after the move"})).await;

    // The Markdown transcript, for people.
    let (status, content_type, markdown) = export(&app, &source, "?format=markdown").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/markdown"), "{content_type}");
    assert!(markdown.starts_with("# to move\n"), "{markdown}");
    assert!(markdown.contains("## User\n\nhello there\n\n## Assistant\n\nhello there\n"));
    assert!(markdown.contains("> tool `echo`"), "{markdown}");
}

#[actix_rt::test]
async fn an_import_refuses_what_is_not_an_export() {
    let app = spawn_app().await;
    let source = app.create_session().await;
    turn(&app, &source, json!({"content": "hi"})).await;
    let (_, _, text) = export(&app, &source, "").await;
    let import = |query: &'static str, content_type: &'static str, body: String| {
        let app = &app;
        async move {
            app.post_bytes(
                &format!("/api/v1/sessions/import{query}"),
                Some(content_type),
                body.into_bytes(),
            )
            .await
        }
    };

    let answer = import("", "application/json", text.clone()).await;
    assert_error(&answer, 400, "invalid_request");
    assert_eq!(answer.1["error"]["field"], "content-type");
    let answer = import("", "application/x-ndjson", "{\"type\":\"turn\"}\n".into()).await;
    assert_error(&answer, 400, "invalid_request");
    assert_eq!(answer.1["error"]["line"], 1);
    let newer = text.replacen("\"version\":1", "\"version\":99", 1);
    let answer = import("", "application/x-ndjson", newer).await;
    assert_error(&answer, 400, "invalid_request");
    let gap = text
        .lines()
        .filter(|l| !l.contains("\"seq\":2,"))
        .collect::<Vec<_>>()
        .join("\n");
    let answer = import("", "application/x-ndjson", gap).await;
    assert_error(&answer, 400, "invalid_request");
    let answer = import("?provider=nope", "application/x-ndjson", text.clone()).await;
    assert_error(&answer, 400, "unknown_provider");
    let answer = import("", "application/x-ndjson", String::new()).await;
    assert_error(&answer, 400, "invalid_request");
}
