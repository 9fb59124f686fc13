//! Where batch syncs keep their progress: a committed cursor per (sync,
//! stream) and the reports of finished runs.
//!
//! Backends: [`SqliteQueue`](crate::queue::SqliteQueue) keeps them in the
//! queue's database (the embedded default).

use crate::queue::QueueError;

/// Sync cursors and run reports.
#[async_trait::async_trait]
pub trait CursorStore: Send + Sync + std::fmt::Debug + 'static {
    /// The committed cursor of a sync's stream.
    async fn cursor(&self, sync: &str, stream: &str) -> Result<Option<String>, QueueError>;

    /// Commits a sync stream's cursor; call only once the sink has
    /// acknowledged everything read up to it.
    async fn commit_cursor(&self, sync: &str, stream: &str, cursor: &str)
    -> Result<(), QueueError>;

    /// Forgets a sync stream's cursor (a full refresh starts over).
    async fn reset_cursor(&self, sync: &str, stream: &str) -> Result<(), QueueError>;

    /// Records a sync run's report (JSON), replacing what the same run
    /// (`sync`, `started_at_ms`) recorded before: runs record progress
    /// after every committed page, then their final report.
    async fn record_run(
        &self,
        sync: &str,
        started_at_ms: u64,
        report: &str,
    ) -> Result<(), QueueError>;

    /// The latest `limit` run reports of a sync, newest first.
    async fn runs(&self, sync: &str, limit: usize) -> Result<Vec<String>, QueueError>;
}
