//! Token-bucket rate limits: pure buckets, and a bounded per-key table of them.

use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

/// A bucket's shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: rate.burst,
            last: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.last = now;
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            Err(Duration::from_secs_f64(missing / rate.per_second.max(1e-9)))
        }
    }

    /// True when the bucket has refilled completely (it can be forgotten).
    fn is_full(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= rate.burst
    }
}

/// Buckets by key (one per client, say), at most `max_keys` of them. When full, buckets
/// that have refilled completely are dropped (forgetting them changes nothing); if none
/// has, the new key shares an overflow bucket rather than growing the table.
#[derive(Debug)]
pub struct KeyedBuckets {
    rate: Rate,
    max_keys: usize,
    buckets: HashMap<u64, TokenBucket>,
    overflow: TokenBucket,
}

impl KeyedBuckets {
    pub fn new(rate: Rate, max_keys: usize, now: Instant) -> KeyedBuckets {
        KeyedBuckets {
            rate,
            max_keys,
            buckets: HashMap::new(),
            overflow: TokenBucket::new(rate, now),
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    pub fn try_take(&mut self, key: u64, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_keys {
            self.buckets.retain(|_, b| !b.is_full(rate, now));
            if self.buckets.len() >= self.max_keys {
                return self.overflow.try_take(rate, now);
            }
        }
        self.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::new(rate, now))
            .try_take(rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_second: 10.0,
        burst: 3.0,
    };

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_rate_and_says_when() {
        let start = Instant::now();
        let mut b = TokenBucket::new(RATE, start);
        for _ in 0..3 {
            assert!(b.try_take(RATE, start).is_ok());
        }
        let wait = b.try_take(RATE, start).err().unwrap_or_default();
        assert_eq!(wait, Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(50)).await;
        let wait = b.try_take(RATE, Instant::now()).err().unwrap_or_default();
        assert!((wait.as_secs_f64() - 0.05).abs() < 1e-6, "{wait:?}");
        tokio::time::advance(Duration::from_millis(50)).await;
        assert!(b.try_take(RATE, Instant::now()).is_ok());
        assert!(b.try_take(RATE, Instant::now()).is_err());
        // Never more than the burst, however long it rests.
        tokio::time::advance(Duration::from_secs(60)).await;
        let now = Instant::now();
        let taken = (0..10).filter(|_| b.try_take(RATE, now).is_ok()).count();
        assert_eq!(taken, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_have_their_own_buckets_and_the_table_stays_bounded() {
        let now = Instant::now();
        let mut k = KeyedBuckets::new(RATE, 2, now);
        for _ in 0..3 {
            assert!(k.try_take(1, now).is_ok());
        }
        assert!(k.try_take(1, now).is_err(), "key 1 is out of tokens");
        assert!(k.try_take(2, now).is_ok(), "key 2 is not affected");
        // Table full of non-full buckets: key 3 uses the overflow bucket.
        assert!(k.try_take(3, now).is_ok());
        assert_eq!(k.len(), 2);
        // Once buckets refill they are forgotten and new keys get their own.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(k.try_take(4, Instant::now()).is_ok());
        assert!(k.len() <= 2);
    }
}
