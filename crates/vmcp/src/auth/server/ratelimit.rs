//! Per-client-IP token buckets for `/oauth/register`, in a bounded map.
//!
//! The IP is the TCP peer (`ConnectInfo<SocketAddr>` in the request's extensions; IPv6 by
//! its /64);
//! `X-Forwarded-For` is not trusted (anyone can set it). Without a peer address every request
//! shares one bucket, which is ToolHive's per-process limit. When the map is full, IPs whose
//! bucket has filled up again (as good as unknown) are forgotten; if none has, new IPs share
//! one overflow bucket, so a flood of addresses cannot grow the map or starve known IPs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Key of the bucket shared by requests without a usable peer address or beyond the map's
/// capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Shared,
}

/// The limiter.
pub struct RateLimiter {
    burst: f64,
    per_token: Duration,
    max_keys: usize,
    buckets: Mutex<HashMap<Key, Bucket>>,
}

impl RateLimiter {
    /// `burst` requests at once per IP, one more each `per_token`, at most `max_keys` IPs.
    pub fn new(burst: u32, per_token: Duration, max_keys: usize) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_token: per_token.max(Duration::from_millis(1)),
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip` (`None`: the shared bucket). `Err` carries the wait until the
    /// next token, for `Retry-After`.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let earned =
            now.saturating_duration_since(b.at).as_secs_f64() / self.per_token.as_secs_f64();
        b.tokens = (b.tokens + earned).min(self.burst);
        b.at = now;
    }

    fn check_at(&self, ip: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = ip.map_or(Key::Shared, |ip| Key::Ip(prefix(ip)));
        if !map.contains_key(&key) && map.len() >= self.max_keys {
            // Forget buckets that are full again: they are as good as new.
            let full: Vec<Key> = map
                .iter_mut()
                .filter_map(|(k, b)| {
                    self.refill(b, now);
                    (b.tokens >= self.burst && *k != Key::Shared).then_some(*k)
                })
                .collect();
            for k in full {
                map.remove(&k);
            }
            if map.len() >= self.max_keys {
                key = Key::Shared;
            }
        }
        let b = map.entry(key).or_insert(Bucket { tokens: self.burst, at: now });
        self.refill(b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.per_token.mul_f64(1.0 - b.tokens))
        }
    }
}

/// The address a bucket is kept for: an IPv6 client counts by its /64 (one host usually has a
/// whole /64 to pick addresses from), an IPv4 client by its address.
fn prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn burst_then_refill() {
        let l = RateLimiter::new(2, Duration::from_secs(1), 10);
        let t0 = Instant::now();
        assert!(l.check_at(ip(1), t0).is_ok());
        assert!(l.check_at(ip(1), t0).is_ok());
        let wait = l.check_at(ip(1), t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        // Another IP has its own bucket.
        assert!(l.check_at(ip(2), t0).is_ok());
        assert!(l.check_at(ip(1), t0 + Duration::from_millis(1100)).is_ok());
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let l = RateLimiter::new(1, Duration::from_secs(60), 10);
        let t0 = Instant::now();
        assert!(l.check_at(Some("2001:db8:1:2::1".parse().unwrap()), t0).is_ok());
        assert!(l.check_at(Some("2001:db8:1:2::ffff".parse().unwrap()), t0).is_err());
        assert!(l.check_at(Some("2001:db8:1:3::1".parse().unwrap()), t0).is_ok());
    }

    #[test]
    fn the_map_is_bounded() {
        let l = RateLimiter::new(1, Duration::from_secs(60), 2);
        let t0 = Instant::now();
        assert!(l.check_at(ip(1), t0).is_ok());
        assert!(l.check_at(ip(2), t0).is_ok());
        // Full, and no bucket is full again: new IPs share one bucket.
        assert!(l.check_at(ip(3), t0).is_ok());
        assert!(l.check_at(ip(4), t0).is_err());
        assert!(l.buckets.lock().unwrap().len() <= 3);
        // Much later every bucket is full again and is forgotten for a new IP.
        assert!(l.check_at(ip(5), t0 + Duration::from_secs(3600)).is_ok());
        assert!(l.buckets.lock().unwrap().len() <= 2);
    }
}
