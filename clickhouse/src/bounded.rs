//! Every request to ClickHouse is bounded in time.

use std::future::Future;
use std::time::Duration;

use crate::StorageError;

/// Runs `work` for at most `timeout`; past it the request is dropped (its connection closed) and
/// [`StorageError::Timeout`] names `what`. ClickHouse may still finish a dropped INSERT: callers that
/// retry one find and kill it first (see [`crate::ledger::kill_queries`]).
pub async fn bounded<T, E>(
    what: &'static str,
    timeout: Duration,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, StorageError>
where
    StorageError: From<E>,
{
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result.map_err(StorageError::from),
        Err(_elapsed) => Err(StorageError::Timeout {
            what,
            after: timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_without_an_answer_fails_after_its_bound_naming_what() {
        let started = tokio::time::Instant::now();
        let never = std::future::pending::<Result<u8, StorageError>>();
        let err = bounded("reading the floors", Duration::from_millis(1500), never)
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_millis(1500));
        assert!(
            matches!(err, StorageError::Timeout { what: "reading the floors", after } if after == Duration::from_millis(1500)),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "clickhouse: reading the floors: no answer within 1.5s"
        );
    }

    #[tokio::test]
    async fn an_answer_in_time_passes_through_and_errors_convert() {
        let ok = bounded("x", Duration::from_secs(1), async {
            Ok::<_, clickhouse::error::Error>(7)
        });
        assert_eq!(ok.await.unwrap(), 7);
        let failed = bounded("x", Duration::from_secs(1), async {
            Err::<u8, _>(clickhouse::error::Error::TimedOut)
        });
        assert!(matches!(
            failed.await.unwrap_err(),
            StorageError::ClickHouse(clickhouse::error::Error::TimedOut)
        ));
    }
}
