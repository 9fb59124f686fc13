//! Rate limits that respect third parties' limits.
//!
//! Each named bucket is a GCRA limiter (the `governor` crate) with a steady
//! rate and a burst. A caller waits for a permit up to a bound, then gets a
//! rate-limited error carrying how long to wait. When an upstream answers
//! 429/503 with `Retry-After`, [`RateLimiter::pause_for`] holds the whole
//! bucket back, so every invocation of the connection backs off together.

use crate::policy::{Destination, EgressPolicy};
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A bucket's rate, as the operator grants it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitGrant {
    /// Sustained permits per second (fractions allowed: 0.5 is one every
    /// two seconds).
    pub per_second: f64,
    /// Permits available at once after a quiet spell. Default: 1.
    #[serde(default = "one")]
    pub burst: u32,
    /// Egress rules whose requests take a permit from this bucket before
    /// they leave (`["https://api.stripe.com"]`). Default: none, so the
    /// bucket paces only explicit `acquire` calls.
    #[serde(default)]
    pub destinations: Vec<String>,
}

fn one() -> u32 {
    1
}

impl RateLimitGrant {
    /// This host's share when `hosts` hosts spend one budget: `1 / hosts`
    /// of the rate and of the burst (rounded down, at least 1), so the
    /// hosts together never exceed the grant (but when `burst < hosts`,
    /// where each still needs one permit).
    pub fn share(&self, hosts: u32) -> RateLimitGrant {
        let hosts = hosts.max(1);
        RateLimitGrant {
            per_second: self.per_second / f64::from(hosts),
            burst: (self.burst / hosts).max(1),
            destinations: self.destinations.clone(),
        }
    }
}

/// A permit was not available within the wait bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limit `{bucket}` exhausted; retry in {} ms", retry_after.as_millis())]
pub struct RateLimited {
    pub bucket: String,
    pub retry_after: Duration,
}

/// One named bucket.
#[derive(Debug)]
pub struct RateLimiter {
    name: String,
    destinations: EgressPolicy,
    limiter: DefaultDirectRateLimiter,
    paused_until: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A bucket from its grant; refuses zero or non-finite rates.
    pub fn new(name: &str, grant: &RateLimitGrant) -> Result<Self, String> {
        let bad = |why: &str| format!("rate limit `{name}`: {why}");
        if !(grant.per_second.is_finite() && grant.per_second > 0.0) {
            return Err(bad("per_second must be a positive number"));
        }
        let burst = NonZeroU32::new(grant.burst).ok_or_else(|| bad("burst must be at least 1"))?;
        let period = Duration::from_secs_f64(1.0 / grant.per_second);
        let quota = Quota::with_period(period)
            .ok_or_else(|| bad("per_second is too large"))?
            .allow_burst(burst);
        let destinations = EgressPolicy::parse(&grant.destinations).map_err(|e| bad(&e))?;
        Ok(RateLimiter {
            name: name.to_owned(),
            destinations,
            limiter: DefaultDirectRateLimiter::direct(quota),
            paused_until: Mutex::new(None),
        })
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether requests to `destination` take permits from this bucket.
    pub fn paces(&self, destination: &Destination) -> bool {
        self.destinations
            .check_url(&destination.to_string())
            .is_ok()
    }

    /// Waits for one permit, at most `max_wait`; `Ok` carries how long it
    /// waited (zero when a permit was free at once).
    pub async fn acquire(&self, max_wait: Duration) -> Result<Duration, RateLimited> {
        let started = Instant::now();
        let deadline = started + max_wait;
        let mut waited = false;
        loop {
            let now = Instant::now();
            let wait = match self.pause_remaining(now) {
                Some(pause) => pause,
                None => match self.limiter.check() {
                    Ok(()) if waited => return Ok(started.elapsed()),
                    Ok(()) => return Ok(Duration::ZERO),
                    // The limiter's own clock: `DefaultClock::default()`
                    // would calibrate a new TSC clock (~17 µs) per wait.
                    Err(not_until) => not_until.wait_time_from(self.limiter.clock().now()),
                },
            };
            if now + wait > deadline {
                return Err(RateLimited {
                    bucket: self.name.clone(),
                    retry_after: wait,
                });
            }
            tokio::time::sleep(wait).await;
            waited = true;
        }
    }

    /// Holds every caller back for `duration` (an upstream's Retry-After).
    /// A shorter pause never cuts a longer one short.
    pub fn pause_for(&self, duration: Duration) {
        let until = Instant::now() + duration;
        let mut paused = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    fn pause_remaining(&self, now: Instant) -> Option<Duration> {
        let paused = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        paused.and_then(|until| until.checked_duration_since(now))
    }
}

/// The buckets of one connection.
#[derive(Debug, Default)]
pub struct ConnectionRateLimits {
    buckets: BTreeMap<String, Arc<RateLimiter>>,
}

impl ConnectionRateLimits {
    /// Builds each granted bucket, naming the first bad one.
    pub fn new(grants: &BTreeMap<String, RateLimitGrant>) -> Result<Self, String> {
        let buckets = grants
            .iter()
            .map(|(name, grant)| Ok((name.clone(), Arc::new(RateLimiter::new(name, grant)?))))
            .collect::<Result<_, String>>()?;
        Ok(ConnectionRateLimits { buckets })
    }

    /// The bucket called `name`, if granted.
    pub fn bucket(&self, name: &str) -> Option<&Arc<RateLimiter>> {
        self.buckets.get(name)
    }

    /// The buckets that pace requests to `destination`.
    pub fn pacing(&self, destination: &Destination) -> impl Iterator<Item = &Arc<RateLimiter>> {
        self.buckets.values().filter(|b| b.paces(destination))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32) -> RateLimiter {
        let grant = RateLimitGrant {
            per_second,
            burst,
            destinations: Vec::new(),
        };
        RateLimiter::new("api", &grant).unwrap()
    }

    #[tokio::test]
    async fn a_burst_passes_then_callers_wait_within_their_bound() {
        let bucket = limiter(20.0, 2);
        let quick = Duration::from_millis(1);
        bucket.acquire(quick).await.unwrap();
        bucket.acquire(quick).await.unwrap();
        let err = bucket.acquire(quick).await.unwrap_err();
        assert_eq!(err.bucket, "api");
        // One permit per 50 ms: the next is at most 50 ms away.
        assert!(err.retry_after > Duration::ZERO && err.retry_after <= Duration::from_millis(50));
        assert!(
            err.to_string()
                .starts_with("rate limit `api` exhausted; retry in")
        );
        // Waiting long enough gets the permit.
        bucket.acquire(Duration::from_secs(2)).await.unwrap();
    }

    /// Issue 16: N hosts each holding their share of one budget, all
    /// calling as fast as they may, stay within the budget together.
    #[tokio::test]
    async fn three_hosts_sharing_a_budget_stay_within_it_together() {
        let grant = RateLimitGrant {
            per_second: 30.0,
            burst: 6,
            destinations: Vec::new(),
        };
        let share = grant.share(3);
        assert_eq!((share.per_second, share.burst), (10.0, 2));
        assert_eq!(grant.share(10).burst, 1, "at least one permit each");
        let hosts: Vec<Arc<RateLimiter>> = (0..3)
            .map(|_| Arc::new(RateLimiter::new("api", &share).unwrap()))
            .collect();
        let window = Duration::from_millis(1_500);
        let started = Instant::now();
        let mut callers = Vec::new();
        for host in &hosts {
            // Four eager callers per host.
            for _ in 0..4 {
                let host = host.clone();
                callers.push(tokio::spawn(async move {
                    let mut got = 0u32;
                    while started.elapsed() < window {
                        if host.acquire(Duration::from_millis(20)).await.is_ok()
                            && started.elapsed() < window
                        {
                            got += 1;
                        }
                    }
                    got
                }));
            }
        }
        let mut total = 0;
        for caller in callers {
            total += caller.await.unwrap();
        }
        // The whole budget over the window: its burst plus its rate.
        let budget = f64::from(grant.burst) + grant.per_second * window.as_secs_f64();
        assert!(
            f64::from(total) <= budget + 1.0,
            "{total} permits > budget {budget}"
        );
        // And the shares are used, not starved.
        assert!(
            f64::from(total) >= budget * 0.7,
            "{total} permits of {budget}"
        );
    }

    #[tokio::test]
    async fn retry_after_pauses_the_whole_bucket() {
        let bucket = limiter(1000.0, 10);
        bucket.pause_for(Duration::from_secs(30));
        bucket.pause_for(Duration::from_secs(1)); // does not shorten the pause
        let err = bucket.acquire(Duration::from_millis(5)).await.unwrap_err();
        assert!(err.retry_after > Duration::from_secs(29), "{err:?}");
    }

    #[test]
    fn bad_grants_are_refused_by_name() {
        for (per_second, burst, why) in [
            (0.0, 1, "positive"),
            (f64::NAN, 1, "positive"),
            (1.0, 0, "burst"),
        ] {
            let grant = RateLimitGrant {
                per_second,
                burst,
                destinations: Vec::new(),
            };
            let err = RateLimiter::new("api", &grant).unwrap_err();
            assert!(
                err.starts_with("rate limit `api`") && err.contains(why),
                "{err}"
            );
        }
        let grants: BTreeMap<String, RateLimitGrant> =
            toml::from_str("slow = { per_second = 0.5 }\nfast = { per_second = 100, burst = 20 }")
                .unwrap();
        let limits = ConnectionRateLimits::new(&grants).unwrap();
        assert!(limits.bucket("slow").is_some() && limits.bucket("nope").is_none());
    }
}
