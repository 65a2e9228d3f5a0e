//! Group commit: concurrent callers' items go to the server together, in one operation,
//! while each caller still returns only once its own item is done.

use std::future::Future;
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::error::{Error, ErrorChain, Result};

/// Where a caller learns its item's outcome: the error's text when it failed.
type Outcome = oneshot::Sender<std::result::Result<(), String>>;

/// Items waiting for the next operation, and the turn of the caller running one.
///
/// A caller queues its item and waits for the turn. While one caller's operation runs,
/// those that arrive queue; the first of them to get the turn takes every queued item and
/// runs one operation for all, then tells each caller its outcome. A caller whose item an
/// earlier turn took returns that turn's outcome without running anything.
pub(crate) struct GroupCommit<T> {
    waiting: Mutex<Vec<(T, Outcome)>>,
    turn: tokio::sync::Mutex<()>,
}

impl<T> Default for GroupCommit<T> {
    fn default() -> Self {
        Self { waiting: Mutex::new(Vec::new()), turn: tokio::sync::Mutex::new(()) }
    }
}

impl<T> GroupCommit<T> {
    /// Runs `item` through `run`, together with the items other callers submit meanwhile.
    /// `run` gets the items in submission order. Another caller's failure reaches this one
    /// as `failed(the error's text)`. A caller dropped while it ran the operation for others
    /// leaves them `interrupted()`: whether their items went through is unknown.
    pub(crate) async fn submit<F, Fut>(
        &self,
        item: T,
        run: F,
        failed: impl FnOnce(String) -> Error,
        interrupted: impl FnOnce() -> Error,
    ) -> Result<()>
    where
        F: FnOnce(Vec<T>) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let (done, mut outcome) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).push((item, done));
        let turn = self.turn.lock().await;
        match outcome.try_recv() {
            Ok(result) => return result.map_err(failed),
            Err(oneshot::error::TryRecvError::Closed) => return Err(interrupted()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let (items, senders): (Vec<T>, Vec<_>) =
            std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner)).into_iter().unzip();
        let result = run(items).await;
        let shared = result.as_ref().map(|_| ()).map_err(|e| ErrorChain(e).to_string());
        for sender in senders {
            let _ = sender.send(shared.clone());
        }
        drop(turn);
        // This caller's own item was in the batch it ran: its outcome is the batch's.
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_items_go_together_and_each_caller_gets_its_outcome() {
        let commit = Arc::new(GroupCommit::<u32>::default());
        let batches = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..64u32)
            .map(|i| {
                let (commit, batches) = (Arc::clone(&commit), Arc::clone(&batches));
                tokio::spawn(async move {
                    commit
                        .submit(
                            i,
                            |items| async move {
                                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                                let fail = items.contains(&13);
                                batches.lock().expect("batches").push(items);
                                if fail { Err(Error::backend("test", "item 13 fails its batch")) } else { Ok(()) }
                            },
                            |why| Error::backend("test", why),
                            || Error::backend("test", "interrupted"),
                        )
                        .await
                })
            })
            .collect();
        let mut failed = Vec::new();
        for (i, task) in tasks.into_iter().enumerate() {
            if task.await.expect("task").is_err() {
                failed.push(i as u32);
            }
        }
        let batches = batches.lock().expect("batches");
        let mut all: Vec<u32> = batches.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..64).collect::<Vec<_>>(), "every item once");
        assert!(batches.len() < 64, "some items went together: {} batches", batches.len());
        let with_13 = batches.iter().find(|b| b.contains(&13)).expect("13's batch");
        let mut expected = with_13.clone();
        expected.sort_unstable();
        assert_eq!(failed, expected, "exactly the callers of the failed batch fail");
    }

    fn waiting(commit: &GroupCommit<u32>) -> usize {
        commit.waiting.lock().expect("waiting").len()
    }

    #[tokio::test]
    async fn a_caller_dropped_mid_operation_leaves_the_others_of_its_batch_interrupted() {
        let commit = Arc::new(GroupCommit::<u32>::default());
        let gate = Arc::new(tokio::sync::Notify::new());
        let running = Arc::new(AtomicUsize::new(0));
        let spawn = |item: u32, hang: bool| {
            let (commit, gate, running) = (Arc::clone(&commit), Arc::clone(&gate), Arc::clone(&running));
            tokio::spawn(async move {
                commit
                    .submit(
                        item,
                        |_| async move {
                            running.fetch_add(1, Ordering::SeqCst);
                            if hang {
                                std::future::pending::<()>().await;
                            }
                            gate.notified().await;
                            Ok(())
                        },
                        |why| Error::backend("test", why),
                        || Error::backend("test", "interrupted"),
                    )
                    .await
            })
        };
        // A runs alone and waits at the gate; B and C queue meanwhile.
        let a = spawn(1, false);
        while running.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        let b = spawn(2, true);
        while waiting(&commit) < 1 {
            tokio::task::yield_now().await;
        }
        let c = spawn(3, false);
        while waiting(&commit) < 2 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        assert!(a.await.expect("a").is_ok());
        // B took B and C together, and hangs: dropping it leaves C's outcome unknown.
        while running.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        b.abort();
        let _ = b.await;
        let c = c.await.expect("c");
        assert!(c.as_ref().is_err_and(|e| ErrorChain(e).to_string().contains("interrupted")), "{c:?}");
        assert_eq!(running.load(Ordering::SeqCst), 2, "C's item was not run again by C");
    }
}
