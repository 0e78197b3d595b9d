//! Embedding Troupe without HTTP: run a session on the echo provider in a sled store under a
//! temp dir, print the streamed events, restart the runtime on the same directory and show the
//! history replayed with the same seqs.
//!
//! ```sh
//! cargo run --example embed
//! ```

use std::sync::Arc;
use troupe::actors::{
    BusyMode, EchoProvider, Event, EventBody, NewSession, Runtime, SledStore, Store,
};

fn describe(event: &Event) -> String {
    let data = match &event.body {
        EventBody::MessageDelta { text } => format!("{text:?}"),
        EventBody::Message { role, text } => format!("{role}: {text:?}"),
        EventBody::TurnCompleted { outcome, .. } => format!("{outcome:?}"),
        EventBody::SessionStateChanged { state, .. } => state.as_str().to_string(),
        _ => String::new(),
    };
    format!("{:>3} {:<16} {data}", event.seq, event.kind())
}

/// One runtime lifetime: open the store, optionally send a turn, print what the log holds.
async fn run_once(dir: &std::path::Path, send: Option<&str>) -> anyhow::Result<Vec<u64>> {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir)?);
    let runtime = Runtime::builder()
        .shared_store(store)
        .provider("echo", EchoProvider::new())
        .start();
    let (session, created) = runtime
        .get_or_create(NewSession {
            owner: "embedder".into(),
            key: Some("example".into()),
            provider: "echo".into(),
            ..NewSession::default()
        })
        .await?;
    println!("session {} (created: {created})", session.id());
    let mut subscription = session.subscribe(0).await?;
    if let Some(text) = send {
        session.send_text(text, BusyMode::Enqueue).await?;
    }
    let mut seqs = Vec::new();
    while let Some(event) = subscription.next().await {
        println!("{}", describe(&event));
        seqs.push(event.seq);
        let done = matches!(event.body, EventBody::TurnCompleted { .. });
        if done || (send.is_none() && event.seq == subscription.last_seq) {
            break;
        }
    }
    runtime.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(seqs)
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    println!(
        "store: {}\n-- first run: a turn streams --",
        dir.path().display()
    );
    let first = actix::System::new().block_on(run_once(
        dir.path(),
        Some("Hello from an embedded Troupe runtime"),
    ))?;
    println!("\n-- second run on the same directory: the history replays --");
    let second = actix::System::new().block_on(run_once(dir.path(), None))?;
    assert_eq!(first, second, "the replay has the same seqs");
    println!(
        "\nsame {} seqs after the restart: {:?}",
        second.len(),
        second
    );
    Ok(())
}
