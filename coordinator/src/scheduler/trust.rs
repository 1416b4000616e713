//! Worker reputation (pure): when a worker is trusted to compute units alone, how many tasks
//! it may hold, when it is banned, and its recent average credit.

use sparecycles_protocol::Millis;

/// The knobs of adaptive replication and reputation.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    /// Consecutive valid results after which a worker's units may go out alone (BOINC: 10).
    pub streak_to_trust: u64,
    /// Fraction of a trusted worker's units still replicated as a spot check.
    pub spot_check: f64,
    /// A worker with at least this many invalid results…
    pub ban_min_invalid: u64,
    /// …and an invalid rate above this is banned.
    pub ban_invalid_rate: f64,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        TrustPolicy {
            streak_to_trust: 10,
            spot_check: 0.1,
            ban_min_invalid: 3,
            ban_invalid_rate: 0.2,
        }
    }
}

impl TrustPolicy {
    pub fn is_trusted(&self, streak: u64, banned: bool) -> bool {
        !banned && streak >= self.streak_to_trust
    }

    pub fn should_ban(&self, valid: u64, invalid: u64) -> bool {
        let judged = valid + invalid;
        invalid >= self.ban_min_invalid && invalid as f64 > self.ban_invalid_rate * judged as f64
    }
}

/// Tasks a new worker may hold at once.
pub fn initial_quota(cores: u32) -> u32 {
    (2 * cores + 4).min(max_quota(cores))
}

/// The most tasks a worker may ever hold: enough for a buffer of short units (a worker leases
/// about half a second of work at a time) without a call per unit.
pub fn max_quota(cores: u32) -> u32 {
    (64 * cores + 64).min(1000)
}

/// BOINC's daily-quota idea: each valid result earns room (2 tasks, or a quarter of the quota
/// when that is more, so a good worker reaches its maximum after a few dozen results), a failure
/// halves it.
pub fn quota_after_valid(quota: u32, valid: u64, cores: u32) -> u32 {
    let max = max_quota(cores);
    let mut quota = quota.min(max);
    for _ in 0..valid {
        if quota >= max {
            break;
        }
        quota = (quota + (quota / 4).max(2)).min(max);
    }
    quota
}

pub fn quota_after_failure(quota: u32) -> u32 {
    (quota / 2).max(1)
}

/// Half-life of recent average credit.
pub const RAC_HALF_LIFE_MS: f64 = 7.0 * 24.0 * 3600.0 * 1000.0;

/// A decaying credit sum brought from `from` to `to`.
pub fn decay(sum: f64, from: Millis, to: Millis) -> f64 {
    if to <= from {
        return sum;
    }
    sum * 0.5f64.powf((to - from) as f64 / RAC_HALF_LIFE_MS)
}

/// The decaying sum as credit per day: a steady rate r per day converges to r.
pub fn per_day(sum: f64) -> f64 {
    sum * std::f64::consts::LN_2 / (RAC_HALF_LIFE_MS / 86_400_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_needs_a_streak_and_no_ban() {
        let p = TrustPolicy::default();
        assert!(!p.is_trusted(9, false));
        assert!(p.is_trusted(10, false));
        assert!(!p.is_trusted(50, true));
    }

    #[test]
    fn bans_need_enough_evidence() {
        let p = TrustPolicy::default();
        assert!(!p.should_ban(0, 2), "two invalid results are not enough");
        assert!(p.should_ban(0, 3));
        assert!(!p.should_ban(100, 3), "3% invalid is bad luck, not lying");
        assert!(p.should_ban(8, 3));
    }

    #[test]
    fn quota_halves_on_failure_and_grows_back() {
        let q = initial_quota(2);
        assert_eq!(q, 8);
        assert_eq!(quota_after_failure(q), 4);
        assert_eq!(quota_after_failure(1), 1);
        assert_eq!(quota_after_valid(4, 1, 2), 6);
        assert_eq!(quota_after_valid(8, 1, 2), 10);
        assert_eq!(quota_after_valid(100, 1, 2), 125);
        assert_eq!(quota_after_valid(190, 1, 2), max_quota(2));
        assert_eq!(quota_after_valid(8, 1_000_000, 2), max_quota(2));
        assert_eq!(max_quota(2), 192);
    }

    #[test]
    fn recent_credit_halves_in_a_week_and_tracks_a_steady_rate() {
        let week = RAC_HALF_LIFE_MS as i64;
        assert!((decay(100.0, 0, week) - 50.0).abs() < 1e-9);
        // 10 credits a day for a year: the per-day figure converges to 10.
        let day = 86_400_000;
        let mut sum = 0.0;
        for d in 0..365 {
            sum = decay(sum, d * day, (d + 1) * day) + 10.0;
        }
        assert!((per_day(sum) - 10.0).abs() < 0.6, "{}", per_day(sum));
    }
}
