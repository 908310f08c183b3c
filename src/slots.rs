//! The `poll.concurrency` slots, held by a poll while it works and given back
//! while it only waits to retry, so that a tenant whose requests time out
//! does not keep the others from being polled.
//!
//! The poll's slot lives in a task-local, so the retry loops deep in `api`
//! and `auth` can lend it out ([`idle`]) without the slot being passed down
//! through every call. Outside a slot (`check`, unit tests) [`idle`] simply
//! runs its future.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A slot taken, to be worked in with [`Slot::run`].
pub(crate) struct Slot {
    semaphore: Arc<Semaphore>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

tokio::task_local! {
    static SLOT: Slot;
}

/// Waits for a slot of `semaphore`.
pub(crate) async fn take(semaphore: Arc<Semaphore>) -> Slot {
    let permit = Arc::clone(&semaphore)
        .acquire_owned()
        .await
        .expect("semaphore never closed");
    Slot {
        semaphore,
        permit: Mutex::new(Some(permit)),
    }
}

impl Slot {
    /// Runs `work` holding the slot, except while `work` is [`idle`].
    pub(crate) async fn run<F: Future>(self, work: F) -> F::Output {
        SLOT.scope(self, work).await
    }
}

/// [`take`] then [`Slot::run`].
#[cfg(test)]
pub(crate) async fn hold<F: Future>(semaphore: Arc<Semaphore>, work: F) -> F::Output {
    take(semaphore).await.run(work).await
}

/// Runs `wait` (a backoff sleep) with the current slot given back, then
/// queues for a slot again. The semaphore is fair: tenants that were waiting
/// go first, so a retrying tenant lets every waiting one have its turn.
pub(crate) async fn idle<F: Future>(wait: F) -> F::Output {
    let lent = SLOT
        .try_with(|s| {
            let permit = s.permit.lock().expect("slot lock").take();
            permit.map(|p| {
                drop(p);
                Arc::clone(&s.semaphore)
            })
        })
        .ok()
        .flatten();
    let out = wait.await;
    if let Some(semaphore) = lent {
        let permit = semaphore
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let _ = SLOT.try_with(|s| *s.permit.lock().expect("slot lock") = Some(permit));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_task_waiting_to_retry_lets_a_waiting_task_have_the_slot() {
        let slots = Arc::new(Semaphore::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (o1, o2) = (Arc::clone(&order), Arc::clone(&order));
        let retrying = tokio::spawn(hold(Arc::clone(&slots), async move {
            o1.lock().unwrap().push("retrying: first try");
            idle(tokio::time::sleep(Duration::from_secs(1))).await;
            o1.lock().unwrap().push("retrying: second try");
        }));
        tokio::task::yield_now().await;
        let waiting = tokio::spawn(hold(Arc::clone(&slots), async move {
            o2.lock().unwrap().push("waiting: polled");
            // Work that lasts past the other's backoff: it must wait for it.
            tokio::time::sleep(Duration::from_secs(5)).await;
            o2.lock().unwrap().push("waiting: done");
        }));
        retrying.await.unwrap();
        waiting.await.unwrap();
        assert_eq!(
            *order.lock().unwrap(),
            [
                "retrying: first try",
                "waiting: polled",
                "waiting: done",
                "retrying: second try"
            ]
        );
        assert_eq!(slots.available_permits(), 1);
    }

    #[tokio::test]
    async fn idle_outside_a_slot_just_waits() {
        assert_eq!(idle(async { 7 }).await, 7);
    }
}
