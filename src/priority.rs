//! Request priority: the order in which admission serves waiters and the order in
//! which degradation sheds them (background first, critical last).
//!
//! Only the operator's route rules assign a priority; a client never picks its own.

use std::fmt;
use std::str::FromStr;

/// How much a request matters. `Ord` follows importance: `Critical` is the greatest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Work nobody waits for (admin jobs, background task deliveries). Shed first.
    Background = 0,
    /// Heavy or deferrable reads; external calls.
    Low = 1,
    /// Ordinary browsing.
    Normal = 2,
    /// A user in the middle of something (a test in progress, sign-up).
    High = 3,
    /// Writes that carry a user's work, and authentication. Shed last.
    Critical = 4,
}

impl Priority {
    /// Every priority, most important first: the order a queue serves them in.
    pub const ALL: [Priority; 5] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
        Priority::Background,
    ];

    /// The lowercase name used in the config file and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Background => "background",
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// A dense index in `0..5` (`Background` = 0, `Critical` = 4), for per-priority arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A per-priority array, `f(p)` at `p.index()`. (Not `ALL.map(f)`: `ALL` is in
    /// serving order, the reverse of the index.)
    pub fn by_index<T>(f: impl FnMut(Priority) -> T) -> [T; 5] {
        [
            Priority::Background,
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Critical,
        ]
        .map(f)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A priority name that is not one of the five lowercase names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority {0:?}: expected one of critical, high, normal, low, background")]
pub struct ParsePriorityError(pub String);

impl FromStr for Priority {
    type Err = ParsePriorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| ParsePriorityError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_names_round_trip() {
        assert!(Priority::Critical > Priority::High);
        assert!(Priority::Low > Priority::Background);
        for (i, p) in Priority::ALL.into_iter().enumerate() {
            assert_eq!(p.index(), 4 - i);
            assert_eq!(p.as_str().parse::<Priority>(), Ok(p));
        }
        let mut sorted = Priority::ALL;
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(sorted, Priority::ALL);
        for (i, p) in Priority::by_index(|p| p).into_iter().enumerate() {
            assert_eq!(p.index(), i);
        }
    }

    #[test]
    fn unknown_name_lists_allowed_values() {
        let err = "Critical".parse::<Priority>().err().map(|e| e.to_string());
        let msg = err.unwrap_or_default();
        assert!(msg.contains("\"Critical\""), "{msg}");
        assert!(
            msg.contains("critical, high, normal, low, background"),
            "{msg}"
        );
    }
}
