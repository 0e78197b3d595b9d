//! Usage and budgets over the real server: usage counted per turn, session and owner day,
//! budgets checked before an attempt and while it streams, the owner's daily cap on every door
//! (REST, OpenAI, WebSocket), and `/metrics` and `GET /usage` agreeing with the turns.

use crate::helpers::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tokio_tungstenite::tungstenite::Message;
use troupe::config::{Secret, TokenConfig};
use troupe::providers::{ProviderConfig, ProviderKind};
use troupe_actors::usage::Price;
use troupe_actors::Budget;

/// An echo turn whose attempt reports `usage` with its result (or before a scripted failure).
fn costing(content: &str, usage: Value) -> Value {
    json!({"content": content, "options": {"script": {"usage": usage}}})
}

/// Sends a turn and waits for its outcome.
async fn run_turn(app: &TestApp, id: &str, body: Value) -> (String, String) {
    let (status, sent) = app.send_turn(id, body).await;
    assert_eq!(status, 202, "{sent}");
    let turn = sent["turn_id"].as_str().unwrap().to_string();
    let outcome = app.wait_for_outcome(id, &turn).await;
    (turn, outcome)
}

/// Waits (10 s at most) for the outcome of `turn` in session `id`, read with `token`.
async fn outcome_as(app: &TestApp, token: &str, id: &str, turn: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, page) = app
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/sessions/{id}/events?limit=1000"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        let ended = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "turn.completed" && e["turn_id"] == turn)
            .map(|e| e["data"]["outcome"].as_str().unwrap().to_string());
        if let Some(outcome) = ended {
            return outcome;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "turn {turn} never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn session(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body["session"].clone()
}

fn completion_of<'a>(events: &'a [Value], turn: &str) -> &'a Value {
    let ends: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "turn.completed" && e["turn_id"] == turn)
        .collect();
    assert_eq!(ends.len(), 1, "exactly one turn.completed for {turn}");
    ends[0]
}

/// The value of one sample of the OpenMetrics text.
fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name_and_labels} in\n{metrics}"))
}

#[actix_rt::test]
async fn a_session_budget_fails_the_next_turn_once_holds_the_queue_and_raising_it_resumes() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (status, body) = app
        .patch(
            &format!("/api/v1/sessions/{id}"),
            json!({"budget": {"max_cost_usd": 1.0}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["budget"]["max_cost_usd"], 1.0);

    let half = json!({"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.5});
    for n in 0..2 {
        let (_, outcome) = run_turn(&app, &id, costing(&format!("turn {n}"), half.clone())).await;
        assert_eq!(outcome, "success");
    }
    let spent = session(&app, &id).await;
    assert_eq!(spent["usage"]["total"]["cost_usd"], 1.0);
    assert_eq!(spent["usage"]["total"]["total_tokens"], 30);

    // The budget is spent: the next turn is accepted, fails once, and holds the one after it.
    let (status, third) = app.send_turn(&id, costing("third", half.clone())).await;
    assert_eq!(status, 202, "{third}");
    let third = third["turn_id"].as_str().unwrap().to_string();
    let (status, fourth) = app.send_turn(&id, costing("fourth", half.clone())).await;
    assert_eq!(status, 202, "{fourth}");
    let fourth = fourth["turn_id"].as_str().unwrap().to_string();
    assert_eq!(app.wait_for_outcome(&id, &third).await, "failed");
    let events = app.all_events(&id).await;
    let failed = completion_of(&events, &third);
    assert_eq!(failed["data"]["error"]["code"], "budget_exceeded");
    assert!(
        !events
            .iter()
            .any(|e| e["kind"] == "turn.started" && e["turn_id"] == third),
        "an over-budget turn never starts an attempt"
    );
    assert!(events.iter().any(|e| e["kind"] == "session.state"
        && e["data"]["state"] == "paused"
        && e["data"]["reason"] == "budget_exceeded"));
    let held = session(&app, &id).await;
    assert_eq!(held["state"], "paused");
    assert_eq!(held["queue_len"], 1);
    let (_, turns) = app.get(&format!("/api/v1/sessions/{id}/turns")).await;
    let queued: Vec<&Value> = turns["turns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "queued")
        .collect();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["turn_id"], fourth.as_str());

    // Raising the budget runs the held queue.
    let (status, body) = app
        .patch(
            &format!("/api/v1/sessions/{id}"),
            json!({"budget": {"max_cost_usd": 2.0}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.wait_for_outcome(&id, &fourth).await, "success");
    let after = session(&app, &id).await;
    assert_eq!(after["usage"]["total"]["cost_usd"], 1.5);
    assert_eq!(after["usage"]["turn"]["turn_id"], fourth.as_str());
    assert_eq!(after["state"], "idle");
    let events = app.all_events(&id).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["kind"] == "turn.completed" && e["turn_id"] == third)
            .count(),
        1,
        "the over-budget turn failed once, and only once"
    );
}

#[actix_rt::test]
async fn usage_past_the_budget_mid_stream_aborts_the_attempt_with_no_retry_and_no_fallback() {
    let app = spawn_app_with(|c| {
        let mut echo = ProviderConfig::of_kind(ProviderKind::Echo);
        echo.fallback = Some("backup".into());
        c.providers.insert("echo".into(), echo);
        c.providers
            .insert("backup".into(), ProviderConfig::of_kind(ProviderKind::Echo));
        c.budgets.session = Budget {
            max_cost_usd: None,
            max_tokens: Some(25),
        };
    })
    .await;
    let id = app.create_session().await;
    let content = vec!["word"; 20].join(" ");
    let body = json!({"content": content, "options": {"script": {
        "chunk_delay_ms": 20,
        "usage_per_chunk": {"input_tokens": 5, "output_tokens": 5, "cost_usd": 0.01}}}});
    let (turn, outcome) = run_turn(&app, &id, body).await;
    assert_eq!(outcome, "failed");
    let events = app.all_events(&id).await;
    let ended = completion_of(&events, &turn);
    assert_eq!(ended["data"]["error"]["code"], "budget_exceeded");
    // Three chunks of ten tokens pass 25: the attempt stopped there, with what it had used.
    assert_eq!(ended["data"]["usage"]["total_tokens"], 30);
    let of_turn = |kind: &str| {
        events
            .iter()
            .filter(|e| e["kind"] == kind && e["turn_id"] == turn.as_str())
            .count()
    };
    assert_eq!(of_turn("turn.started"), 1, "no retry");
    assert_eq!(of_turn("turn.retrying"), 0, "no retry");
    assert!(of_turn("message.delta") < 10, "the attempt was cut off");
    assert!(of_turn("status") >= 3, "each usage report is in the log");
    let after = session(&app, &id).await;
    assert_eq!(after["provider"], "echo", "no fallback");
    assert_eq!(after["state"], "paused");
    assert_eq!(after["usage"]["total"]["total_tokens"], 30);
    assert!(!events
        .iter()
        .any(|e| e["kind"] == "session.updated" && e["data"]["reason"] == "provider_fallback"));
}

/// Alice (token `ta`) may spend $0.5 a day; bob (`tb`) has no cap; `root` (`tr`) is admin.
fn capped_owners(c: &mut troupe::config::Config) {
    c.auth.tokens = vec![
        TokenConfig {
            token: Secret("ta".into()),
            owner: "alice".into(),
            admin: false,
        },
        TokenConfig {
            token: Secret("tb".into()),
            owner: "bob".into(),
            admin: false,
        },
        TokenConfig {
            token: Secret("tr".into()),
            owner: "root".into(),
            admin: true,
        },
    ];
    c.budgets.owners = BTreeMap::from([(
        "alice".to_string(),
        Budget {
            max_cost_usd: Some(0.5),
            max_tokens: None,
        },
    )]);
}

#[actix_rt::test]
async fn the_owners_daily_cap_refuses_new_turns_across_sessions_and_every_door() {
    let app = spawn_app_with(capped_owners).await;
    let post = |token: &'static str, path: String, body: Value| {
        let app = &app;
        async move {
            app.call(reqwest::Method::POST, &path, Some(token), Some(body))
                .await
        }
    };
    let create = |token: &'static str| {
        let post = &post;
        async move {
            let (status, body) = post(
                token,
                "/api/v1/sessions".into(),
                json!({"provider": "echo"}),
            )
            .await;
            assert_eq!(status, 201, "{body}");
            body["session"]["id"].as_str().unwrap().to_string()
        }
    };
    let first = create("ta").await;
    let (status, sent) = post(
        "ta",
        format!("/api/v1/sessions/{first}/turns"),
        costing("spend it", json!({"output_tokens": 3, "cost_usd": 0.5})),
    )
    .await;
    assert_eq!(status, 202, "{sent}");
    let turn = sent["turn_id"].as_str().unwrap();
    assert_eq!(outcome_as(&app, "ta", &first, turn).await, "success");

    // Another session of alice's: refused before anything is stored.
    let second = create("ta").await;
    let refused = post(
        "ta",
        format!("/api/v1/sessions/{second}/turns"),
        json!({"content": "more"}),
    )
    .await;
    assert_error(&refused, 429, "budget_exceeded");
    let (_, turns) = app
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/sessions/{second}/turns"),
            Some("ta"),
            None,
        )
        .await;
    assert_eq!(turns["turns"], json!([]));

    // The OpenAI doors answer in OpenAI's shape.
    let chat = post(
        "ta",
        "/v1/chat/completions".into(),
        json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(chat.0, 429, "{}", chat.1);
    assert_eq!(chat.1["error"]["code"], "budget_exceeded");
    assert_eq!(chat.1["error"]["type"], "insufficient_quota");
    let keyed = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth("ta")
        .header("X-Session-Key", "support")
        .json(&json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status().as_u16(), 429);
    let responses = post(
        "ta",
        "/v1/responses".into(),
        json!({"model": "echo", "input": "hi"}),
    )
    .await;
    assert_eq!(responses.0, 429, "{}", responses.1);
    assert_eq!(responses.1["error"]["code"], "budget_exceeded");

    // The WebSocket answers an error frame and stays open.
    let url = format!("ws://{}/api/v1/ws?access_token=ta", app.address);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let frame = json!({"type": "send", "id": "s1", "session_id": second, "content": "more"});
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    let answer = loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
            .await
            .expect("an answer")
            .expect("open")
            .unwrap();
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["id"] == "s1" {
                break value;
            }
        }
    };
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "budget_exceeded", "{answer}");
    socket
        .send(Message::Text(
            json!({"type": "ping", "id": "p"}).to_string().into(),
        ))
        .await
        .unwrap();

    // Bob is not capped by alice's spending.
    let bobs = create("tb").await;
    let (status, body) = post(
        "tb",
        format!("/api/v1/sessions/{bobs}/turns"),
        json!({"content": "fine"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let bobs_turn = body["turn_id"].as_str().unwrap();
    assert_eq!(outcome_as(&app, "tb", &bobs, bobs_turn).await, "success");

    // Alice sees her own day, not bob's; the admin sees both.
    let mine = app
        .call(reqwest::Method::GET, "/api/v1/usage", Some("ta"), None)
        .await;
    assert_eq!(mine.0, 200, "{}", mine.1);
    assert_eq!(mine.1["total"]["cost_usd"], 0.5);
    assert_eq!(mine.1["days"][0]["owner"], "alice");
    let theirs = app
        .call(
            reqwest::Method::GET,
            "/api/v1/usage?owner=bob",
            Some("ta"),
            None,
        )
        .await;
    assert_error(&theirs, 403, "forbidden");
    let bad_day = app
        .call(
            reqwest::Method::GET,
            "/api/v1/usage?from=yesterday",
            Some("ta"),
            None,
        )
        .await;
    assert_error(&bad_day, 400, "invalid_request");
    let all = app
        .call(reqwest::Method::GET, "/api/v1/usage", Some("tr"), None)
        .await;
    assert_eq!(all.0, 200, "{}", all.1);
    let owners: Vec<&str> = all.1["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["owner"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["alice", "bob"]);

    // A non-admin may lower a session budget but not raise it above the configured one.
    let patch = |token: &'static str, budget: Value| {
        let app = &app;
        let path = format!("/api/v1/sessions/{second}");
        async move {
            app.call(
                reqwest::Method::PATCH,
                &path,
                Some(token),
                Some(json!({"budget": budget})),
            )
            .await
        }
    };
    let lowered = patch("ta", json!({"max_tokens": 100})).await;
    assert_eq!(lowered.0, 200, "{}", lowered.1);
    assert_eq!(lowered.1["session"]["budget"]["max_tokens"], 100);
    let negative = patch("ta", json!({"max_cost_usd": -1})).await;
    assert_error(&negative, 400, "invalid_request");
    let back = patch("ta", Value::Null).await;
    assert_eq!(back.0, 200, "{}", back.1);
    assert_eq!(back.1["session"]["budget"], Value::Null);
}

#[actix_rt::test]
async fn only_an_admin_raises_a_session_budget_above_the_configured_one() {
    let app = spawn_app_with(|c| {
        capped_owners(c);
        c.budgets.session = Budget {
            max_cost_usd: Some(1.0),
            max_tokens: None,
        };
    })
    .await;
    let (status, created) = app
        .call(
            reqwest::Method::POST,
            "/api/v1/sessions",
            Some("tb"),
            Some(json!({"provider": "echo"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["session"]["id"].as_str().unwrap();
    let path = format!("/api/v1/sessions/{id}");
    let raise = json!({"budget": {"max_cost_usd": 5.0}});
    let refused = app
        .call(
            reqwest::Method::PATCH,
            &path,
            Some("tb"),
            Some(raise.clone()),
        )
        .await;
    assert_error(&refused, 403, "forbidden");
    let lower = json!({"budget": {"max_cost_usd": 0.5}});
    let lowered = app
        .call(reqwest::Method::PATCH, &path, Some("tb"), Some(lower))
        .await;
    assert_eq!(lowered.0, 200, "{}", lowered.1);
}

#[actix_rt::test]
async fn metrics_and_the_usage_route_agree_with_the_sum_of_the_turns() {
    let app = spawn_app_with(|c| {
        c.providers
            .insert("echo".into(), ProviderConfig::of_kind(ProviderKind::Echo));
        // Reports tokens but no cost: the price table fills it in ($1 per 1,000 tokens).
        let mut priced = ProviderConfig::of_kind(ProviderKind::Echo);
        priced.price = Some(Price {
            input_per_mtok: 1000.0,
            output_per_mtok: 1000.0,
            cached_per_mtok: None,
        });
        c.providers.insert("priced".into(), priced);
    })
    .await;
    let id = app.create_session().await;
    let turns = [
        costing(
            "plain",
            json!({"input_tokens": 7, "output_tokens": 3, "cached_tokens": 2, "cost_usd": 0.125}),
        ),
        // A transient failure that cost money, then a success: both attempts count.
        json!({"content": "retried", "options": {"script": {"fail": "transient", "fail_attempts": 1,
            "usage": {"input_tokens": 100, "output_tokens": 10, "cost_usd": 0.25}}}}),
        json!({"content": "one two three four", "options": {"script": {
            "usage_per_chunk": {"input_tokens": 1, "output_tokens": 2, "cost_usd": 0.0625}}}}),
    ];
    for body in turns {
        let (_, outcome) = run_turn(&app, &id, body).await;
        assert_eq!(outcome, "success");
    }
    let (status, priced) = app
        .post("/api/v1/sessions", json!({"provider": "priced"}))
        .await;
    assert_eq!(status, 201, "{priced}");
    let priced = priced["session"]["id"].as_str().unwrap().to_string();
    let (_, outcome) = run_turn(&app, &priced, json!({"content": "a b c d e"})).await;
    assert_eq!(outcome, "success");

    let mut sum = (0u64, 0u64, 0u64, 0f64);
    let mut by_session = Vec::new();
    for session_id in [&id, &priced] {
        let events = app.all_events(session_id).await;
        let mut total = 0f64;
        for e in events.iter().filter(|e| e["kind"] == "turn.completed") {
            let usage = &e["data"]["usage"];
            sum.0 += usage["input_tokens"].as_u64().unwrap();
            sum.1 += usage["output_tokens"].as_u64().unwrap();
            sum.2 += usage["cached_tokens"].as_u64().unwrap();
            sum.3 += usage["cost_usd"].as_f64().unwrap();
            total += e["data"]["cost_usd"].as_f64().unwrap();
        }
        by_session.push(total);
    }
    // 0.125 + 2 × 0.25 + 2 × 0.0625; then 10 tokens at $0.001.
    assert!((by_session[0] - 0.75).abs() < 1e-9, "{by_session:?}");
    assert!((by_session[1] - 0.01).abs() < 1e-9, "{by_session:?}");
    assert_eq!((sum.0, sum.1, sum.2), (7 + 200 + 2 + 5, 3 + 20 + 4 + 5, 2));
    assert!((sum.3 - 0.76).abs() < 1e-9);
    assert_eq!(session(&app, &id).await["usage"]["total"]["cost_usd"], 0.75);

    // The owner feed's news: a `session.updated` with reason `usage` and the new totals.
    let events = app.all_events(&id).await;
    let news = events
        .iter()
        .rfind(|e| e["kind"] == "session.updated" && e["data"]["reason"] == "usage")
        .expect("a session.updated with reason usage");
    assert_eq!(news["data"]["session"]["usage"]["total"]["cost_usd"], 0.75);

    let (status, report) = app.get("/api/v1/usage").await;
    assert_eq!(status, 200, "{report}");
    let total = &report["total"];
    assert_eq!(total["input_tokens"], sum.0);
    assert_eq!(total["output_tokens"], sum.1);
    assert_eq!(total["cached_tokens"], sum.2);
    assert!((total["cost_usd"].as_f64().unwrap() - sum.3).abs() < 1e-9);

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let tokens = |provider: &str, kind: &str| {
        sample(
            &metrics,
            &format!("troupe_tokens_total{{provider=\"{provider}\",kind=\"{kind}\"}}"),
        )
    };
    let cost = |provider: &str| {
        sample(
            &metrics,
            &format!("troupe_cost_usd_total{{provider=\"{provider}\"}}"),
        )
    };
    assert_eq!(
        tokens("echo", "input") + tokens("priced", "input"),
        sum.0 as f64
    );
    assert_eq!(
        tokens("echo", "output") + tokens("priced", "output"),
        sum.1 as f64
    );
    assert_eq!(tokens("echo", "cached"), sum.2 as f64);
    assert!((cost("echo") - 0.75).abs() < 1e-9);
    assert!((cost("priced") - 0.01).abs() < 1e-9);
}
