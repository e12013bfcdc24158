//! A slice of the hub (`crates/hub-slice`), written only against the public
//! APIs, on the fixture schema: accounts, projects, collaborators, states,
//! heartbeats, the projects of a user, and a live list of them kept current
//! by the change feed.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use ::hub_slice::{
    Error, Group, Heartbeat, HostCapacity, Hub, LiveProjects, NewAccount, Project, RunState,
};
use db::{AnyPool, Pool, params};
use uuid::Uuid;

use crate::TestDb;

const WAIT: Duration = Duration::from_secs(30);

fn fixture() -> schema_sync::Schema {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/cocalc-control-plane-schema.json");
    schema_sync::Schema::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A fresh database with the slice's tables of the fixture, and the hub on it.
async fn hub() -> (TestDb, Hub<AnyPool>) {
    let db = TestDb::new().await;
    ::hub_slice::sync_schema(&db.pool, &fixture())
        .await
        .unwrap();
    let options = changefeed::Options::new().poll_interval(Duration::from_millis(50));
    let hub = Hub::start_with(db.pool.clone(), options).await.unwrap();
    (db, hub)
}

async fn account(hub: &Hub<AnyPool>, name: &str) -> Uuid {
    hub.create_account(&NewAccount {
        email_address: format!("{name}@example.com"),
        first_name: name.to_owned(),
        last_name: "Example".into(),
    })
    .await
    .unwrap()
    .account_id
}

fn ids(projects: &[Project]) -> Vec<Uuid> {
    projects.iter().map(|p| p.project_id).collect()
}

/// Waits until the live list holds exactly `want` (by id).
async fn live_holds(live: &LiveProjects, want: &[Uuid]) {
    let want: BTreeSet<Uuid> = want.iter().copied().collect();
    let reached = tokio::time::timeout(
        WAIT,
        live.wait(|projects| projects.keys().copied().collect::<BTreeSet<_>>() == want),
    )
    .await;
    match reached {
        Ok(Ok(())) => {}
        other => panic!(
            "live list of {} never held {want:?}: holds {:?} ({other:?}, last error {:?})",
            live.account(),
            ids(&live.projects()),
            live.last_error()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_created_once_per_email_address() {
    let (_db, hub) = hub().await;
    let ada = hub
        .create_account(&NewAccount {
            email_address: " Ada@Example.com".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
        })
        .await
        .unwrap();
    assert_eq!(ada.email_address.as_deref(), Some("ada@example.com"));
    assert!(ada.created.is_some());
    assert_eq!(hub.get_account(ada.account_id).await.unwrap(), Some(ada));

    let again = hub
        .create_account(&NewAccount {
            email_address: "ADA@example.com".into(),
            first_name: "Other".into(),
            last_name: "Ada".into(),
        })
        .await;
    assert!(
        matches!(&again, Err(Error::EmailTaken(e)) if e == "ada@example.com"),
        "{again:?}"
    );
    assert_eq!(hub.get_account(Uuid::new_v4()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_belong_to_their_owner_and_collaborators() {
    let (db, hub) = hub().await;
    let (ada, bob, carol) = (
        account(&hub, "ada").await,
        account(&hub, "bob").await,
        account(&hub, "carol").await,
    );
    let thesis = hub
        .create_project(ada, "Thesis", "chapter one")
        .await
        .unwrap();
    assert_eq!(thesis.owner(), Some(ada));
    assert_eq!(thesis.run_state(), Some(RunState::Opened));
    assert_eq!(thesis.title.as_deref(), Some("Thesis"));
    let notes = hub.create_project(ada, "Notes", "").await.unwrap();
    let lab = hub.create_project(bob, "Lab", "").await.unwrap();
    assert_eq!(
        hub.get_project(thesis.project_id).await.unwrap().as_ref(),
        Some(&thesis)
    );

    assert!(hub.add_collaborator(thesis.project_id, bob).await.unwrap());
    assert!(!hub.add_collaborator(thesis.project_id, bob).await.unwrap());
    // The map is the fixture's: account id to {"group": ...}.
    let group: String = db
        .pool
        .query_one_scalar(
            "SELECT users -> $2 ->> 'group' FROM projects WHERE project_id = $1",
            &params![thesis.project_id, bob.to_string()],
        )
        .await
        .unwrap();
    assert_eq!(group, "collaborator");

    // The most recently edited first: adding bob edited the thesis.
    let of_ada = hub.list_projects(ada).await.unwrap();
    assert_eq!(ids(&of_ada), [thesis.project_id, notes.project_id]);
    assert_eq!(of_ada[0].users[&bob].group, Group::Collaborator);
    let of_bob = ids(&hub.list_projects(bob).await.unwrap());
    assert_eq!(
        of_bob.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([thesis.project_id, lab.project_id])
    );
    assert!(hub.list_projects(carol).await.unwrap().is_empty());

    // Removing: a collaborator leaves, twice is a no-op, the owner stays.
    assert!(
        hub.remove_collaborator(thesis.project_id, bob)
            .await
            .unwrap()
    );
    assert!(
        !hub.remove_collaborator(thesis.project_id, bob)
            .await
            .unwrap()
    );
    assert_eq!(
        ids(&hub.list_projects(bob).await.unwrap()),
        [lab.project_id]
    );
    let owner = hub.remove_collaborator(thesis.project_id, ada).await;
    assert!(
        matches!(owner, Err(Error::OwnerCannotBeRemoved { account, .. }) if account == ada),
        "{owner:?}"
    );

    // Unknown accounts and projects are refused, and nothing is written.
    let nobody = Uuid::new_v4();
    let refused = hub.create_project(nobody, "Ghost", "").await;
    assert!(
        matches!(refused, Err(Error::NoSuchAccount(a)) if a == nobody),
        "{refused:?}"
    );
    let refused = hub.add_collaborator(thesis.project_id, nobody).await;
    assert!(
        matches!(refused, Err(Error::NoSuchAccount(_))),
        "{refused:?}"
    );
    let refused = hub.add_collaborator(nobody, carol).await;
    assert!(
        matches!(refused, Err(Error::NoSuchProject(_))),
        "{refused:?}"
    );
    let count: i64 = db
        .pool
        .query_one_scalar("SELECT count(*) FROM projects", &[])
        .await
        .unwrap();
    assert_eq!(count, 3);

    // A deleted project is no one's any more.
    db.pool
        .execute(
            "UPDATE projects SET deleted = true WHERE project_id = $1",
            &params![notes.project_id],
        )
        .await
        .unwrap();
    assert_eq!(
        ids(&hub.list_projects(ada).await.unwrap()),
        [thesis.project_id]
    );
    let deleted = hub.add_collaborator(notes.project_id, carol).await;
    assert!(
        matches!(deleted, Err(Error::NoSuchProject(_))),
        "{deleted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_move_through_their_states() {
    let (db, hub) = hub().await;
    let ada = account(&hub, "ada").await;
    let p = hub.create_project(ada, "Thesis", "").await.unwrap();
    let opened = p.state.clone().unwrap();

    let running = hub
        .set_state(p.project_id, RunState::Running, Some(ada))
        .await
        .unwrap();
    assert_eq!(running.state, RunState::Running);
    assert!(running.time >= opened.time);
    let read = hub.get_project(p.project_id).await.unwrap().unwrap();
    assert_eq!(read.state.as_ref(), Some(&running));
    // Starting records who and when, in the fixture's columns.
    let (by, started): (Option<Uuid>, Option<chrono::NaiveDateTime>) = db
        .pool
        .query_one_as(
            "SELECT last_started_by, last_started FROM projects WHERE project_id = $1",
            &params![p.project_id],
        )
        .await
        .unwrap();
    assert_eq!(by, Some(ada));
    assert!(started.is_some());

    let stopped = hub
        .set_state(p.project_id, RunState::Stopped, None)
        .await
        .unwrap();
    assert!(stopped.time >= running.time);
    // What the hub's other readers use: the fixture indexes `state ->> 'state'`.
    let state: String = db
        .pool
        .query_one_scalar(
            "SELECT state ->> 'state' FROM projects WHERE project_id = $1",
            &params![p.project_id],
        )
        .await
        .unwrap();
    assert_eq!(state, "stopped");

    let again = hub.set_state(p.project_id, RunState::Stopped, None).await;
    match again {
        Err(Error::InvalidTransition { from, to, .. }) => {
            assert_eq!((from.0, to), (Some(RunState::Stopped), RunState::Stopped));
        }
        other => panic!("expected an invalid transition, got {other:?}"),
    }
    let back = hub.set_state(p.project_id, RunState::Opened, None).await;
    assert!(
        matches!(back, Err(Error::InvalidTransition { .. })),
        "{back:?}"
    );
    // The refused transitions changed nothing.
    let read = hub.get_project(p.project_id).await.unwrap().unwrap();
    assert_eq!(read.state.as_ref(), Some(&stopped));
    // A state some other component wrote is read, and can be left.
    db.pool
        .execute(
            "UPDATE projects SET state = '{\"state\": \"archived\", \"time\": \"2026-01-01T00:00:00Z\"}'
             WHERE project_id = $1",
            &params![p.project_id],
        )
        .await
        .unwrap();
    let read = hub.get_project(p.project_id).await.unwrap().unwrap();
    assert_eq!(read.run_state(), Some(RunState::Unknown));
    hub.set_state(p.project_id, RunState::Running, None)
        .await
        .unwrap();
    let missing = hub.set_state(Uuid::new_v4(), RunState::Running, None).await;
    assert!(
        matches!(missing, Err(Error::NoSuchProject(_))),
        "{missing:?}"
    );
}

fn beat(host_id: Uuid, name: &str, projects: u32) -> Heartbeat {
    Heartbeat {
        host_id,
        name: name.to_owned(),
        region: "us-west1".into(),
        status: "running".into(),
        version: "1.2.3".into(),
        capacity: HostCapacity {
            cores: 8,
            memory_mb: 32_768,
            projects,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_record_heartbeats() {
    let (db, hub) = hub().await;
    let (a, b, old) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let first = hub.heartbeat(&beat(a, "host-a", 1)).await.unwrap();
    hub.heartbeat(&beat(b, "host-b", 0)).await.unwrap();
    hub.heartbeat(&beat(old, "host-old", 0)).await.unwrap();
    db.pool
        .execute(
            "UPDATE project_hosts SET last_seen = '2000-01-01' WHERE id = $1",
            &params![old],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = hub.heartbeat(&beat(a, "host-a", 7)).await.unwrap();
    assert!(second > first, "{second} after {first}");

    let hosts = hub.live_hosts(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        hosts.iter().map(|h| h.id).collect::<Vec<_>>(),
        [a, b],
        "the most recent first, the silent host left out"
    );
    assert_eq!(hosts[0].last_seen, Some(second));
    assert_eq!(hosts[0].capacity.as_ref().map(|c| c.projects), Some(7));
    assert_eq!(hosts[0].name.as_deref(), Some("host-a"));
    let rows: i64 = db
        .pool
        .query_one_scalar("SELECT count(*) FROM project_hosts", &[])
        .await
        .unwrap();
    assert_eq!(rows, 3, "one row per host, however many heartbeats");

    // A hub without a feed records heartbeats too, and keeps no live lists.
    let plain = Hub::without_feed(db.pool.clone());
    let third = plain.heartbeat(&beat(a, "host-a", 8)).await.unwrap();
    assert!(third > second);
    let refused = plain.live_projects(Uuid::new_v4()).await;
    assert!(matches!(refused, Err(Error::NoFeed)), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_list_follows_inserts_updates_and_projects_leaving_it() {
    let (db, hub) = hub().await;
    let (ada, bob) = (account(&hub, "ada").await, account(&hub, "bob").await);
    let before = hub.create_project(ada, "Before", "").await.unwrap();

    // The snapshot: what exists when the list starts.
    let of_ada = hub.live_projects(ada).await.unwrap();
    let of_bob = hub.live_projects(bob).await.unwrap();
    tokio::time::timeout(WAIT, of_ada.ready())
        .await
        .unwrap()
        .unwrap();
    assert!(of_ada.is_ready());
    live_holds(&of_ada, &[before.project_id]).await;
    live_holds(&of_bob, &[]).await;

    // An insert.
    let thesis = hub.create_project(ada, "Thesis", "").await.unwrap();
    live_holds(&of_ada, &[before.project_id, thesis.project_id]).await;
    // An update that brings a project into bob's list.
    assert!(hub.add_collaborator(thesis.project_id, bob).await.unwrap());
    live_holds(&of_bob, &[thesis.project_id]).await;
    // An update of a project in the list.
    let running = hub
        .set_state(thesis.project_id, RunState::Running, Some(bob))
        .await
        .unwrap();
    let reached = tokio::time::timeout(
        WAIT,
        of_bob.wait(|p| p.get(&thesis.project_id).and_then(|p| p.state.as_ref()) == Some(&running)),
    )
    .await;
    assert!(matches!(reached, Ok(Ok(()))), "{reached:?}");
    // The list holds what a query gives, column for column.
    assert_eq!(of_bob.projects(), hub.list_projects(bob).await.unwrap());
    // A project leaving the list: bob is no longer a collaborator.
    assert!(
        hub.remove_collaborator(thesis.project_id, bob)
            .await
            .unwrap()
    );
    live_holds(&of_bob, &[]).await;
    live_holds(&of_ada, &[before.project_id, thesis.project_id]).await;

    // Deleted (flag) and deleted (row) projects leave too.
    db.pool
        .execute(
            "UPDATE projects SET deleted = true WHERE project_id = $1",
            &params![before.project_id],
        )
        .await
        .unwrap();
    live_holds(&of_ada, &[thesis.project_id]).await;
    db.pool
        .execute(
            "DELETE FROM projects WHERE project_id = $1",
            &params![thesis.project_id],
        )
        .await
        .unwrap();
    live_holds(&of_ada, &[]).await;
    let lab = hub.create_project(bob, "Lab", "").await.unwrap();
    live_holds(&of_bob, &[lab.project_id]).await;
    assert_eq!(of_bob.projects(), hub.list_projects(bob).await.unwrap());
    assert_eq!(of_ada.last_error(), None);
    assert_eq!(of_ada.resubscriptions(), 0);
    assert!(of_bob.offset().is_some());
}

// One thread: the feed's poller hands out the whole burst before the list's
// task runs again, so the list falls behind for sure.
#[tokio::test(flavor = "current_thread")]
async fn a_live_list_catches_up_with_a_burst_bigger_than_its_buffer() {
    let db = TestDb::new().await;
    ::hub_slice::sync_schema(&db.pool, &fixture())
        .await
        .unwrap();
    // A buffer of 4 events: a burst of 200 changes in one statement
    // overflows it, and the list resumes after the last offset it applied.
    let options = changefeed::Options::new()
        .poll_interval(Duration::from_millis(50))
        .subscriber_buffer(4);
    let hub = Hub::start_with(db.pool.clone(), options).await.unwrap();
    let ada = account(&hub, "ada").await;
    let live = hub.live_projects(ada).await.unwrap();
    tokio::time::timeout(WAIT, live.ready())
        .await
        .unwrap()
        .unwrap();
    db.pool
        .execute(
            "INSERT INTO projects (project_id, title, users, last_edited)
             SELECT gen_random_uuid(), 'p' || g,
                    CASE WHEN g % 2 = 0 THEN jsonb_build_object($1::text, '{\"group\": \"owner\"}'::jsonb)
                         ELSE '{}'::jsonb END,
                    now()
             FROM generate_series(1, 200) g",
            &params![ada.to_string()],
        )
        .await
        .unwrap();
    let want = ids(&hub.list_projects(ada).await.unwrap());
    assert_eq!(want.len(), 100);
    live_holds(&live, &want).await;
    assert_eq!(live.projects(), hub.list_projects(ada).await.unwrap());
    assert!(
        live.resubscriptions() >= 1,
        "the list fell behind and resumed"
    );

    // A truncate empties it.
    db.pool.execute("TRUNCATE projects", &[]).await.unwrap();
    live_holds(&live, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slice_runs_on_the_whole_fixture_schema() {
    let db = TestDb::new().await;
    schema_sync::sync(&db.pool, &fixture(), &schema_sync::Options::new())
        .await
        .unwrap();
    // Its own sync then finds nothing to do.
    ::hub_slice::sync_schema(&db.pool, &fixture())
        .await
        .unwrap();
    let hub = Hub::start(db.pool.clone()).await.unwrap();
    let ada = account(&hub, "ada").await;
    let live = hub.live_projects(ada).await.unwrap();
    let p = hub.create_project(ada, "Thesis", "").await.unwrap();
    live_holds(&live, &[p.project_id]).await;
    hub.heartbeat(&beat(Uuid::new_v4(), "host", 1))
        .await
        .unwrap();
    assert_eq!(ids(&hub.list_projects(ada).await.unwrap()), [p.project_id]);

    // A spec without one of the slice's tables is refused before any DDL.
    let mut partial = fixture();
    partial.tables.retain(|t| t.name != "project_hosts");
    let refused = ::hub_slice::sync_schema(&db.pool, &partial).await;
    assert!(
        matches!(refused, Err(Error::MissingTable("project_hosts"))),
        "{refused:?}"
    );
}
