//! The simulated app's capacity: a FIFO semaphore whose size can change mid-run.
//!
//! Growing adds permits; shrinking forgets idle permits at once and the rest as they come
//! back (a "debt" paid by permits on drop), so in-service work is never interrupted and
//! new admissions see the new capacity as soon as the old work drains.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Capacity books: the capacity asked for, and permits still to forget on return.
#[derive(Debug, Default)]
struct Books {
    capacity: usize,
    debt: usize,
}

/// A resizable FIFO concurrency gate with a bounded (or unbounded) waiting line.
#[derive(Debug)]
pub(crate) struct Gate {
    sem: Arc<Semaphore>,
    books: Mutex<Books>,
    pub(crate) in_service: AtomicUsize,
    pub(crate) queued: AtomicUsize,
    pub(crate) max_queued: AtomicUsize,
}

/// Why the gate did not admit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The waiting line was at its limit.
    QueueFull,
}

/// One in-service slot; returns (or forgets) its permit on drop.
pub(crate) struct Slot {
    gate: Arc<Gate>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Gate {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            sem: Arc::new(Semaphore::new(capacity)),
            books: Mutex::new(Books { capacity, debt: 0 }),
            in_service: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            max_queued: AtomicUsize::new(0),
        })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.books().capacity
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Change the capacity; takes effect for the next admissions.
    pub(crate) fn set_capacity(&self, capacity: usize) {
        let mut books = self.books();
        if capacity > books.capacity {
            let mut add = capacity - books.capacity;
            let paid = add.min(books.debt);
            books.debt -= paid;
            add -= paid;
            self.sem.add_permits(add);
        } else {
            let cut = books.capacity - capacity;
            let forgotten = self.sem.forget_permits(cut);
            books.debt += cut - forgotten;
        }
        books.capacity = capacity;
    }

    /// Wait in FIFO order for a slot. `queue_limit` 0 means the line is unbounded.
    pub(crate) async fn admit(self: &Arc<Self>, queue_limit: usize) -> Result<Slot, Refused> {
        let permit = match self.sem.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let waiting = self.queued.fetch_add(1, Ordering::SeqCst) + 1;
                let _line = Waiting(&self.queued);
                if queue_limit > 0 && waiting > queue_limit {
                    return Err(Refused::QueueFull);
                }
                self.max_queued.fetch_max(waiting, Ordering::SeqCst);
                match self.sem.clone().acquire_owned().await {
                    Ok(p) => p,
                    // The semaphore is never closed; treat it as a full line if it were.
                    Err(_) => return Err(Refused::QueueFull),
                }
            }
        };
        self.in_service.fetch_add(1, Ordering::SeqCst);
        Ok(Slot {
            gate: self.clone(),
            permit: Some(permit),
        })
    }
}

/// Decrements the waiting count when a waiter leaves the line, admitted or cancelled.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.in_service.fetch_sub(1, Ordering::SeqCst);
        let mut books = self.gate.books();
        if let Some(permit) = self.permit.take() {
            if books.debt > 0 {
                books.debt -= 1;
                permit.forget();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shrinking_forgets_idle_permits_then_returning_ones() {
        let gate = Gate::new(3);
        let a = gate.admit(0).await.unwrap();
        let b = gate.admit(0).await.unwrap();
        gate.set_capacity(1); // one idle permit forgotten, one owed
        assert!(gate.sem.available_permits() == 0);
        drop(a); // pays the debt
        assert_eq!(gate.sem.available_permits(), 0);
        drop(b); // back to the single slot
        assert_eq!(gate.sem.available_permits(), 1);
        gate.set_capacity(4);
        assert_eq!(gate.sem.available_permits(), 4);
        assert_eq!(gate.capacity(), 4);
    }

    #[tokio::test]
    async fn growing_pays_debt_first() {
        let gate = Gate::new(2);
        let a = gate.admit(0).await.unwrap();
        let b = gate.admit(0).await.unwrap();
        gate.set_capacity(0); // owes 2
        gate.set_capacity(1); // owes 1, adds nothing
        assert_eq!(gate.sem.available_permits(), 0);
        drop(a);
        drop(b);
        assert_eq!(gate.sem.available_permits(), 1);
    }

    #[tokio::test]
    async fn a_full_line_refuses_and_counts() {
        let gate = Gate::new(1);
        let _held = gate.admit(1).await.unwrap();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.admit(1).await.map(|_| ()) });
        while gate.queued.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.admit(1).await.err(), Some(Refused::QueueFull));
        assert_eq!(gate.max_queued.load(Ordering::SeqCst), 1);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(gate.queued.load(Ordering::SeqCst), 0);
    }
}
