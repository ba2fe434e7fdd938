//! Test support for the store's own tests: the same check on each kind of database.

use std::future::Future;

/// Runs `check` with the URL of a fresh SQLite file, then of a fresh PostgreSQL database when
/// `CXLOOP_TEST_DATABASE_URL` is set (as `.ci/run` does).
pub(crate) async fn on_each<F, Fut>(check: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let file = std::env::temp_dir().join(format!("cxloop-test-{}.db", uuid::Uuid::now_v7()));
    check(format!("sqlite://{}?mode=rwc", file.display())).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    if let Ok(admin) = std::env::var("CXLOOP_TEST_DATABASE_URL")
        && !admin.is_empty()
    {
        let name = format!("cxloop_t_{}", uuid::Uuid::now_v7().simple());
        let url = cxloop_platform::db::create_postgres_database(&admin, &name)
            .await
            .unwrap_or_else(|e| panic!("create test database: {e}"));
        check(url).await;
    }
}
