//! Sessions: the two-session conflict, the web-app flow, the switches.

use folio::{ConcurrencyChecks, Error, Expectation, SessionOptions};

use crate::harness::{Harness, Note, Person, conflicts, seed};

conformance!(
    two_sessions_editing_one_document,
    web_app_flow_with_change_vector_from_the_browser,
    disabled_session_overrides_type_opt_in,
    per_session_switch_on_type_without_opt_in,
    no_opt_in_means_last_write_wins,
);

async fn two_sessions_editing_one_document(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Person::new("people/1", "Ada")]).await;

    let mut first = store.open_session();
    let mut second = store.open_session();
    let mut by_first = first.load::<Person>("people/1").await.unwrap().unwrap();
    let mut by_second = second.load::<Person>("people/1").await.unwrap().unwrap();

    by_first.name = "Ada Lovelace".into();
    first.store(by_first).unwrap();
    first.save_changes().await.unwrap();

    by_second.name = "Ada King".into();
    second.store(by_second).unwrap();
    let result = second.save_changes().await;
    let error = result.as_ref().unwrap_err().to_string();
    assert_eq!(
        error,
        "Optimistic concurrency check failed for Person #people/1"
    );
    let conflicts = conflicts(result);
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].type_name(), "Person");
    assert_eq!(conflicts[0].collection(), "people");
    assert_eq!(conflicts[0].id(), "people/1");
    let current = store
        .open_session()
        .metadata_for::<Person>("people/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conflicts[0].actual(), Some(&current.change_vector));
    assert!(matches!(
        conflicts[0].expected(),
        Expectation::Version { .. }
    ));
    assert_ne!(
        conflicts[0].expected(),
        &Expectation::version(current.change_vector.clone())
    );

    let stored = store
        .open_session()
        .load::<Person>("people/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.name, "Ada Lovelace", "the first save is kept");
}

async fn web_app_flow_with_change_vector_from_the_browser(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Note::new("notes/1", "draft")]).await;

    // The page is rendered: the version goes to the browser.
    let mut render = store.open_session();
    let _ = render.load::<Note>("notes/1").await.unwrap().unwrap();
    let version_in_browser = render
        .change_vector_for::<Note>("notes/1")
        .await
        .unwrap()
        .unwrap();
    drop(render);

    // Minutes later, the form comes back with the version: a fresh session,
    // the right change vector: accepted.
    let mut submit = store.open_session();
    submit
        .store_with_change_vector(
            Note::new("notes/1", "edited in the browser"),
            version_in_browser.clone(),
        )
        .unwrap();
    submit.save_changes().await.unwrap();

    // The same stale version again (a second tab): refused, nothing written.
    let mut stale = store.open_session();
    stale
        .store_with_change_vector(
            Note::new("notes/1", "from a stale tab"),
            version_in_browser.clone(),
        )
        .unwrap();
    let conflicts = conflicts(stale.save_changes().await);
    assert_eq!(
        conflicts[0].expected(),
        &Expectation::version(version_in_browser)
    );
    let stored = store
        .open_session()
        .load::<Note>("notes/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.text, "edited in the browser");
}

async fn disabled_session_overrides_type_opt_in(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Note::new("n", "x")]).await;
    // Account opts in but has no change-vector field: only the session's rules apply.
    seed(
        &store,
        vec![crate::harness::Account {
            id: "a1".into(),
            balance: 10,
        }],
    )
    .await;

    let mut stale = store.open_session_with(SessionOptions {
        concurrency_checks: ConcurrencyChecks::Disabled,
        ..SessionOptions::default()
    });
    let mut account = stale
        .load::<crate::harness::Account>("a1")
        .await
        .unwrap()
        .unwrap();
    seed(
        &store,
        vec![crate::harness::Account {
            id: "a1".into(),
            balance: 99,
        }],
    )
    .await;
    account.balance = 20;
    stale.store(account).unwrap();
    stale
        .save_changes()
        .await
        .expect("checks are disabled for this session");
    let stored = store
        .open_session()
        .load::<crate::harness::Account>("a1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.balance, 20);
}

async fn per_session_switch_on_type_without_opt_in(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Note::new("notes/1", "v1")]).await;

    let mut session = store.open_session();
    session.advanced().set_use_optimistic_concurrency(true);
    let mut note = session.load::<Note>("notes/1").await.unwrap().unwrap();
    seed(&store, vec![Note::new("notes/1", "v2 by someone else")]).await;
    note.text = "v2 by me".into();
    session.store(note).unwrap();
    let conflicts = conflicts(session.save_changes().await);
    assert_eq!(conflicts[0].type_name(), "Note");
    let stored = store
        .open_session()
        .load::<Note>("notes/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.text, "v2 by someone else");
}

async fn no_opt_in_means_last_write_wins(h: Harness) {
    let store = h.store().await;
    seed(&store, vec![Note::new("notes/1", "v1")]).await;

    let mut first = store.open_session();
    let mut second = store.open_session();
    let mut a = first.load::<Note>("notes/1").await.unwrap().unwrap();
    let mut b = second.load::<Note>("notes/1").await.unwrap().unwrap();
    a.text = "first".into();
    b.text = "second".into();
    first.store(a).unwrap();
    first.save_changes().await.unwrap();
    second.store(b).unwrap();
    second
        .save_changes()
        .await
        .expect("no checks: the last write wins");
    let stored = store
        .open_session()
        .load::<Note>("notes/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.text, "second");
    let _ = Error::NotFound(String::new());
}
