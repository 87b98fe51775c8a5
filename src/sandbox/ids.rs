//! The uids workers run as: `uid_base + slot`, one slot per live worker, so
//! two concurrent jobs never share a uid (per-uid limits such as
//! RLIMIT_NPROC stay per job, and one job cannot signal or ptrace another).

use std::ops::Range;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Uids per worker slot for workers that exited but whose uid is not back
/// yet: the zygote holds clean exits up to 10 ms to report them together
/// (`EXIT_HOLD_NS` in `worker/native/zygote.c`), and a slot's worker lives
/// over 1.25 ms (fork, confinement, its job), so a slot ends at most 8
/// workers in one hold. Too few uids and every spawn waits for a batch: with
/// 4 spare uids in all, a 2-core host sat ~30 % idle under load.
const HELD_EXITS_PER_WORKER: usize = 8;

/// The uids a pool of `workers` leases from, starting at `base`: enough for
/// idle and running workers and the exits the zygote holds back.
pub fn worker_uids(base: u32, workers: usize) -> Range<u32> {
    base..base + (workers * (2 + HELD_EXITS_PER_WORKER)) as u32
}

/// A pool of uids; a [`UidLease`] returns its uid when dropped.
#[derive(Clone)]
pub struct UidPool {
    free: Arc<Mutex<Vec<u32>>>,
    available: Arc<Semaphore>,
}

impl UidPool {
    pub fn new(uids: Range<u32>) -> Self {
        let slots = uids.len();
        let free = uids.rev().collect();
        Self { free: Arc::new(Mutex::new(free)), available: Arc::new(Semaphore::new(slots)) }
    }

    /// Waits until a uid is free.
    pub async fn lease(&self) -> UidLease {
        let permit = Arc::clone(&self.available).acquire_owned().await.expect("never closed");
        let uid = self.free.lock().expect("uid pool lock").pop().expect("a permit means a free uid");
        UidLease { uid, free: Arc::clone(&self.free), _permit: permit }
    }
}

/// Exclusive use of one uid (used as the gid too).
#[derive(Debug)]
pub struct UidLease {
    uid: u32,
    free: Arc<Mutex<Vec<u32>>>,
    _permit: OwnedSemaphorePermit,
}

impl UidLease {
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        // Pushed back before the permit is released (fields drop after this).
        self.free.lock().expect("uid pool lock").push(self.uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn leases_are_distinct_and_come_back() {
        let pool = UidPool::new(1000..1002);
        let a = pool.lease().await;
        let b = pool.lease().await;
        assert_ne!(a.uid(), b.uid());
        assert!((1000..1002).contains(&a.uid()) && (1000..1002).contains(&b.uid()));
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.lease().await.uid() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no third uid while two are out");
        let freed = a.uid();
        drop(a);
        assert_eq!(waiting.await.expect("join"), freed);
    }
}
