//! Splitting an integer range `[start, end)` into units of a fixed size, the last one shorter;
//! shared by the apps whose units are plain ranges (`prime-count`, `collatz`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AppError, MAX_UNITS, parse_value};

/// A half-open range `[start, end)`: the unit of a range-split job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

impl Span {
    /// Number of integers in the span.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn to_value(self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// A checked split of `[start, end)` into `unit_size` pieces: no integer is lost or counted
/// twice, whether or not `unit_size` divides the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeSplit {
    start: u64,
    end: u64,
    unit_size: u64,
    count: u64,
}

impl RangeSplit {
    /// Checks `end > start`, `unit_size > 0` and the unit count; `app` prefixes the messages.
    pub fn new(app: &str, start: u64, end: u64, unit_size: u64) -> Result<Self, AppError> {
        if end <= start {
            return Err(AppError(format!(
                "{app}: end ({end}) must be greater than start ({start})"
            )));
        }
        if unit_size == 0 {
            return Err(AppError(format!("{app}: unit_size must be at least 1")));
        }
        let count = (end - start).div_ceil(unit_size);
        if count > MAX_UNITS {
            return Err(AppError(format!(
                "{app}: unit_size ({unit_size}) splits the range into {count} units, more than \
                 the maximum of {MAX_UNITS}; use a larger unit_size"
            )));
        }
        Ok(RangeSplit {
            start,
            end,
            unit_size,
            count,
        })
    }

    pub fn unit_count(&self) -> u64 {
        self.count
    }

    /// The range of unit `seq`; empty when `seq` is out of bounds.
    pub fn span(&self, seq: u64) -> Span {
        if seq >= self.count {
            return Span {
                start: self.end,
                end: self.end,
            };
        }
        let start = self.start + seq * self.unit_size;
        Span {
            start,
            end: start.saturating_add(self.unit_size).min(self.end),
        }
    }

    /// The sequence number of `span` if it is exactly one of this split's units.
    pub fn seq_of(&self, span: Span) -> Option<u64> {
        let offset = span.start.checked_sub(self.start)?;
        if offset % self.unit_size != 0 {
            return None;
        }
        let seq = offset / self.unit_size;
        (seq < self.count && self.span(seq) == span).then_some(seq)
    }

    /// Parses a unit and checks that it belongs to this split.
    pub fn parse_unit(&self, app: &str, unit: &Value) -> Result<Span, AppError> {
        let span: Span = parse_value(&format!("{app} unit"), unit)?;
        if self.seq_of(span).is_none() {
            return Err(AppError(format!(
                "{app}: unit [{}, {}) is not a unit of this job",
                span.start, span.end
            )));
        }
        Ok(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uneven_split_covers_the_range_once() {
        let split = RangeSplit::new("t", 3, 20, 5).unwrap();
        assert_eq!(split.unit_count(), 4);
        let spans: Vec<Span> = (0..4).map(|s| split.span(s)).collect();
        assert_eq!(spans[0], Span { start: 3, end: 8 });
        assert_eq!(spans[3], Span { start: 18, end: 20 });
        for w in spans.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        assert_eq!(spans.iter().map(Span::len).sum::<u64>(), 17);
        for (seq, span) in spans.iter().enumerate() {
            assert_eq!(split.seq_of(*span), Some(seq as u64));
        }
        assert_eq!(split.seq_of(Span { start: 3, end: 7 }), None);
        assert_eq!(split.seq_of(Span { start: 4, end: 9 }), None);
        assert_eq!(split.seq_of(Span { start: 20, end: 25 }), None);
    }

    #[test]
    fn refuses_bad_splits() {
        let err = RangeSplit::new("prime-count", 10, 5, 1).unwrap_err();
        assert_eq!(
            err.0,
            "prime-count: end (5) must be greater than start (10)"
        );
        assert!(
            RangeSplit::new("t", 0, 10, 0)
                .unwrap_err()
                .0
                .contains("unit_size")
        );
        assert!(RangeSplit::new("t", 0, u64::MAX, 1).is_err());
        let huge = RangeSplit::new("t", 0, u64::MAX, u64::MAX).unwrap();
        assert_eq!(
            huge.span(0),
            Span {
                start: 0,
                end: u64::MAX
            }
        );
    }
}
