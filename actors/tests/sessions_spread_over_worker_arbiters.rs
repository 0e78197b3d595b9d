//! With `workers = 2`, session actors run on two worker threads (not the thread that started
//! the runtime), so sessions use more than one core.
mod common;

use common::*;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use troupe_actors::{
    AttemptRequest, BusyMode, Capabilities, EchoProvider, MemoryStore, NewSession, Provider,
    ProviderRun, Runtime, Settings,
};

/// The echo provider, noting the thread each attempt was started on (the session's thread).
struct ThreadNoting {
    echo: EchoProvider,
    threads: Arc<Mutex<HashSet<ThreadId>>>,
}

impl Provider for ThreadNoting {
    fn capabilities(&self) -> Capabilities {
        self.echo.capabilities()
    }

    fn start(&self, request: AttemptRequest) -> ProviderRun {
        self.threads
            .lock()
            .unwrap()
            .insert(std::thread::current().id());
        self.echo.start(request)
    }

    fn kind(&self) -> &str {
        "thread-noting-echo"
    }
}

#[actix_rt::test]
async fn sessions_run_on_more_than_one_worker_thread() {
    let threads = Arc::new(Mutex::new(HashSet::new()));
    let rt = Runtime::builder()
        .store(MemoryStore::new())
        .provider(
            "echo",
            ThreadNoting {
                echo: EchoProvider::new(),
                threads: threads.clone(),
            },
        )
        .settings(Settings {
            workers: 2,
            ..fast_settings()
        })
        .start();
    assert_eq!(rt.shared().workers.len(), 2);
    let mut subs = Vec::new();
    for i in 0..8 {
        let (handle, _) = rt
            .get_or_create(NewSession {
                owner: "local".into(),
                provider: "echo".into(),
                key: Some(format!("k{i}")),
                ..NewSession::default()
            })
            .await
            .unwrap();
        let sub = live_events(&handle).await;
        handle.send_text("hello", BusyMode::Enqueue).await.unwrap();
        subs.push(sub);
    }
    for sub in subs.iter_mut() {
        until_completed(sub, 1).await;
    }
    let threads = threads.lock().unwrap().clone();
    assert_eq!(threads.len(), 2, "two worker threads ran sessions");
    assert!(!threads.contains(&std::thread::current().id()));
    rt.shutdown(std::time::Duration::ZERO).await;
}
