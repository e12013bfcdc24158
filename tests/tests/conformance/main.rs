//! The cross-backend conformance suite. Every test runs on the backend the
//! matrix selects (`COCALC_DB`), and must behave identically on all of them.
#![allow(missing_docs, clippy::unwrap_used)]

mod api_adversarial;
mod changefeed;
mod changefeed_lifecycle;
mod copy;
mod crash_adversarial;
mod derive;
mod embedded_data;
mod errors;
mod fetch;
mod hub_slice;
mod json;
mod lifecycle;
mod locks;
mod migrate;
mod migrate_streaming;
mod notify;
mod pglite;
mod pool_settings;
mod pool_transactions;
mod query_as;
mod rows;
mod schema_adversarial;
mod schema_locks;
mod schema_namespaces;
mod schema_ownership;
mod schema_spec_safety;
mod schema_sync;
mod session_model;
mod sessions;
mod sessions_adversarial;
mod several_hubs;
mod stack_depth;
mod testing;
mod transactions;
mod types;
mod types_extra;

pub use conformance::TestDb;

/// The payload of the next notification on `events`, after the
/// `Reconnected` that a crash of the embedded backend announces first (a
/// crash replaces the backend under the listener, as a server's crash
/// restart replaces its connection), and only after a crash.
pub async fn notification_after(events: &mut db::NotificationStream, crashed: bool) -> String {
    use std::time::Duration;
    if crashed {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(db::ListenEvent::Reconnected)) => {}
            other => panic!("expected Reconnected after the crash, got {other:?}"),
        }
    }
    match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
        Ok(Ok(db::ListenEvent::Notification(n))) => n.payload.clone(),
        other => panic!("expected a notification, got {other:?}"),
    }
}
