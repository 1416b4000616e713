//! Rate limits: every request counts against its client IP, and a request with a bearer token
//! also against that token (keyed by the token's hash, never the token). Over the limit the
//! answer is `429` problem+json with `Retry-After`, before any authentication or database work.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::auth::hash_token;
use crate::http::error::problem;
use crate::state::AppState;

/// Requests between two sweeps of idle keys out of the limiters' maps.
const SWEEP_EVERY: u64 = 4096;

/// Requests per second allowed to one key; the burst is twice that.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// Per bearer token; 0: no limit.
    pub per_token: u32,
    /// Per client IP; 0: no limit.
    pub per_ip: u32,
}

impl Default for RateLimits {
    /// Far above what an honest worker (a few calls a second) or a dashboard needs. The per-IP
    /// limit is a flood guard, not a share: many volunteers may sit behind one NAT.
    fn default() -> Self {
        RateLimits {
            per_token: 100,
            per_ip: 1000,
        }
    }
}

fn quota(per_second: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

/// The limiters of one coordinator process.
pub struct Limiters {
    per_token: Option<DefaultKeyedRateLimiter<String>>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    requests: AtomicU64,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters").finish_non_exhaustive()
    }
}

impl Limiters {
    pub fn new(limits: RateLimits) -> Self {
        Limiters {
            per_token: quota(limits.per_token).map(DefaultKeyedRateLimiter::keyed),
            per_ip: quota(limits.per_ip).map(DefaultKeyedRateLimiter::keyed),
            requests: AtomicU64::new(0),
        }
    }

    /// `Err(wait)` when `ip` or `token` is over its limit.
    fn check(
        &self,
        ip: Option<IpAddr>,
        token: Option<&str>,
    ) -> Result<(), (&'static str, Duration)> {
        if self.requests.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        if let (Some(limiter), Some(ip)) = (&self.per_ip, ip) {
            limiter
                .check_key(&ip)
                .map_err(|n| ("this address", n.wait_time_from(limiter.clock().now())))?;
        }
        if let (Some(limiter), Some(token)) = (&self.per_token, token) {
            limiter
                .check_key(&hash_token(token))
                .map_err(|n| ("this token", n.wait_time_from(limiter.clock().now())))?;
        }
        Ok(())
    }

    /// Forgets keys whose buckets are full again, so the maps stay as small as the active set.
    fn sweep(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_token {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// The address a client is limited by: IPv6 clients by their /64, since one subscriber usually
/// has a whole /64 to pick addresses from.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// The middleware: counts the request, or answers 429 with `Retry-After`.
pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| client_key(addr.ip()));
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match state.limiters().check(ip, token) {
        Ok(()) => next.run(req).await,
        Err((who, wait)) => {
            // Whole seconds, rounded up: a client that waits this long gets through.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let secs = secs.max(1);
            metrics::counter!(crate::metrics::RATE_LIMITED).increment(1);
            let mut resp = problem(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many requests from {who}; retry in {secs} s"),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_token_is_limited_and_others_are_not() {
        let l = Limiters::new(RateLimits {
            per_token: 5,
            per_ip: 0,
        });
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        let refused = (0..50).filter(|_| l.check(ip, Some("a")).is_err()).count();
        assert!(refused >= 40, "only {refused} of 50 refused");
        assert!(l.check(ip, Some("b")).is_ok());
        let (who, wait) = l.check(ip, Some("a")).unwrap_err();
        assert_eq!(who, "this token");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), IpAddr::from([192, 0, 2, 1]));
        assert_eq!(
            client_key(IpAddr::from([10, 0, 0, 1])),
            IpAddr::from([10, 0, 0, 1])
        );
    }

    #[test]
    fn zero_means_no_limit() {
        let l = Limiters::new(RateLimits {
            per_token: 0,
            per_ip: 0,
        });
        for _ in 0..10_000 {
            assert!(
                l.check(Some(IpAddr::from([10, 0, 0, 1])), Some("a"))
                    .is_ok()
            );
        }
    }
}
