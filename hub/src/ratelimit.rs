//! Rate limits: token buckets per API token and per client address, one
//! set for downloads and one for triggers (rebuilds). A bucket holds a
//! minute's worth of requests and refills continuously; a request finding
//! it empty gets `429 Too Many Requests` with `Retry-After`.
//!
//! The client address is the connection's peer. Behind a reverse proxy
//! every request comes from the proxy, so when the peer is one of the
//! configured `trusted_proxies` the address is read from
//! `X-Forwarded-For` instead: the right-most entry that is not itself a
//! trusted proxy (entries left of it are whatever the client claimed).
//!
//! Memory is bounded: a bucket that refilled completely is the same as no
//! bucket, so such buckets are swept out, and past [`MAX_BUCKETS`] the
//! longest idle ones go first.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::access::{Via, Viewer};

/// Buckets one limiter keeps at most (about 100 bytes each).
pub const MAX_BUCKETS: usize = 100_000;
/// Sweep out full buckets after this many new ones.
const SWEEP_EVERY: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error("invalid trusted proxy {value:?}: expected an IP address or ADDRESS/PREFIX")]
    BadProxy { value: String },
}

/// Whose bucket a request takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An API token, by id: its owner's scripts share one allowance
    /// wherever they run.
    Token(i64),
    /// Everyone else, by address.
    Address(IpAddr),
    /// No address known (a request not from a socket, e.g. in-process).
    Unknown,
}

impl ClientKey {
    /// A token's own bucket when the request came with one, else its address's.
    pub fn of(viewer: &Viewer, client: ClientAddr) -> Self {
        match (viewer.via, client.0) {
            (Via::Token { id, .. }, _) => ClientKey::Token(id),
            (_, Some(addr)) => ClientKey::Address(addr),
            (_, None) => ClientKey::Unknown,
        }
    }
}

/// A request over the limit, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit of {per_minute} {what} per minute exceeded: retry in {retry_after_secs} s")]
pub struct RateLimited {
    pub what: &'static str,
    pub per_minute: u32,
    pub retry_after_secs: u64,
}

impl IntoResponse for RateLimited {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": "rate_limited", "message": self.to_string() }
        });
        let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.retry_after_secs),
        );
        response
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests left, fractional while refilling.
    tokens: f64,
    updated: Instant,
}

/// One kind of limit (downloads, triggers): a bucket per [`ClientKey`].
#[derive(Debug)]
pub struct RateLimiter {
    what: &'static str,
    per_minute: u32,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    map: HashMap<ClientKey, Bucket>,
    created_since_sweep: usize,
}

impl RateLimiter {
    /// `per_minute` requests a minute, in bursts of up to as many; 0 turns
    /// the limit off.
    pub fn new(what: &'static str, per_minute: u32) -> Self {
        Self {
            what,
            per_minute,
            buckets: Mutex::new(Buckets::default()),
        }
    }

    /// Takes one request from `key`'s bucket, or says when one is next there.
    pub fn check(&self, key: ClientKey) -> Result<(), RateLimited> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: ClientKey, now: Instant) -> Result<(), RateLimited> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        // A poisoned lock only means another request panicked mid-update;
        // the buckets are still plain numbers.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.map.contains_key(&key) {
            buckets.created_since_sweep += 1;
            if buckets.created_since_sweep >= SWEEP_EVERY || buckets.map.len() >= MAX_BUCKETS {
                buckets.created_since_sweep = 0;
                sweep(&mut buckets.map, now, capacity, per_second);
            }
        }
        let bucket = buckets.map.entry(key).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / per_second;
        Err(RateLimited {
            what: self.what,
            per_minute: self.per_minute,
            // Whole seconds, rounded up: at that time a request fits.
            retry_after_secs: wait.ceil().max(1.0) as u64,
        })
    }

    /// How many buckets it holds now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }
}

/// Drops buckets that have refilled (they are as good as new), then, if
/// still too many, the longest idle ones down to three quarters of the cap.
fn sweep(map: &mut HashMap<ClientKey, Bucket>, now: Instant, capacity: f64, per_second: f64) {
    let full_after = Duration::from_secs_f64(capacity / per_second);
    map.retain(|_, bucket| {
        let idle = now.saturating_duration_since(bucket.updated);
        idle < full_after && bucket.tokens + idle.as_secs_f64() * per_second < capacity
    });
    if map.len() >= MAX_BUCKETS {
        let mut by_age: Vec<(Instant, ClientKey)> =
            map.iter().map(|(key, b)| (b.updated, *key)).collect();
        by_age.sort_unstable_by_key(|(updated, _)| *updated);
        let excess = map.len() - MAX_BUCKETS * 3 / 4;
        for (_, key) in by_age.into_iter().take(excess) {
            map.remove(&key);
        }
    }
}

/// The hub's limits, shared by every handler.
#[derive(Debug)]
pub struct RateLimits {
    /// Image downloads through every API.
    pub downloads: RateLimiter,
    /// Builds a person or script asks for (webhooks are not limited).
    pub triggers: RateLimiter,
    trusted_proxies: Vec<IpNet>,
}

impl RateLimits {
    pub fn new(
        download_per_minute: u32,
        trigger_per_minute: u32,
        trusted_proxies: &[String],
    ) -> Result<Self, RateLimitError> {
        Ok(Self {
            downloads: RateLimiter::new("downloads", download_per_minute),
            triggers: RateLimiter::new("build triggers", trigger_per_minute),
            trusted_proxies: trusted_proxies
                .iter()
                .map(|value| IpNet::parse(value))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Takes one image download from the caller's allowance. Every API's
    /// image routes call this (`/download/…`, library imagefiles, OCI
    /// blobs, shub images).
    pub fn download(&self, viewer: &Viewer, client: ClientAddr) -> Result<(), RateLimited> {
        self.downloads.check(ClientKey::of(viewer, client))
    }

    /// Takes one build request (a rebuild) from the caller's allowance.
    pub fn trigger(&self, viewer: &Viewer, client: ClientAddr) -> Result<(), RateLimited> {
        self.triggers.check(ClientKey::of(viewer, client))
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(addr))
    }

    /// The client's address: the peer, or what trusted proxies forwarded.
    pub fn client_address(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| canonical(addr.ip()))?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        let forwarded: Vec<IpAddr> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
            .map(canonical)
            .collect();
        let client = forwarded
            .iter()
            .rev()
            .find(|addr| !self.trusts(**addr))
            .or(forwarded.first())
            .copied();
        Some(client.unwrap_or(peer))
    }
}

/// IPv4 addresses arriving on an IPv6 socket as `::ffff:a.b.c.d` are the
/// same clients as plain IPv4 ones.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The client's address as [`RateLimits::client_address`] finds it; an
/// extractor that never fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<crate::serve::AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::serve::AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(state.rate_limits.client_address(parts)))
    }
}

/// An address block, `ADDRESS/PREFIX`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    fn parse(value: &str) -> Result<Self, RateLimitError> {
        let bad = || RateLimitError::BadProxy {
            value: value.to_owned(),
        };
        let (addr, prefix) = match value.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (value.trim(), None),
        };
        let addr = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(|_| bad())?,
            None => bits,
        };
        if prefix > bits {
            return Err(bad());
        }
        Ok(IpNet { addr, prefix })
    }

    fn contains(&self, addr: IpAddr) -> bool {
        let shift_mask = |bits: u32, prefix: u8| -> u128 {
            if prefix == 0 {
                0
            } else {
                u128::MAX << (bits - u32::from(prefix))
            }
        };
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => {
                let mask = shift_mask(32, self.prefix);
                (u128::from(u32::from(net)) & mask) == (u128::from(u32::from(addr)) & mask)
            }
            (IpAddr::V6(net), IpAddr::V6(addr)) => {
                let mask = shift_mask(128, self.prefix);
                (u128::from(net) & mask) == (u128::from(addr) & mask)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_and_refills() {
        let limiter = RateLimiter::new("downloads", 60);
        let start = Instant::now();
        let key = ClientKey::Address("192.0.2.1".parse().unwrap());
        for _ in 0..60 {
            limiter.check_at(key, start).unwrap();
        }
        let limited = limiter.check_at(key, start).unwrap_err();
        assert_eq!(limited.retry_after_secs, 1);
        // Another client has its own bucket.
        limiter.check_at(ClientKey::Token(7), start).unwrap();
        // One a second comes back.
        limiter
            .check_at(key, start + Duration::from_millis(1_000))
            .unwrap();
        assert!(limiter
            .check_at(key, start + Duration::from_millis(1_000))
            .is_err());
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limiter = RateLimiter::new("downloads", 0);
        for _ in 0..1_000 {
            limiter.check(ClientKey::Unknown).unwrap();
        }
        assert_eq!(limiter.len(), 0);
    }

    #[test]
    fn full_and_idle_buckets_are_swept() {
        let limiter = RateLimiter::new("downloads", 6);
        let start = Instant::now();
        for n in 0..(SWEEP_EVERY as u32 - 1) {
            limiter
                .check_at(ClientKey::Address(IpAddr::from(n.to_be_bytes())), start)
                .unwrap();
        }
        assert_eq!(limiter.len(), SWEEP_EVERY - 1);
        // A minute later they are all full again: the next new key sweeps them.
        limiter
            .check_at(ClientKey::Token(1), start + Duration::from_secs(61))
            .unwrap();
        assert_eq!(limiter.len(), 1);

        let mut map = HashMap::new();
        for n in 0..(MAX_BUCKETS as u32 + 10) {
            let updated = start + Duration::from_millis(u64::from(n));
            map.insert(
                ClientKey::Address(IpAddr::from(n.to_be_bytes())),
                Bucket {
                    tokens: 0.0,
                    updated,
                },
            );
        }
        sweep(&mut map, start + Duration::from_secs(1), 6.0, 6.0 / 60.0);
        assert_eq!(map.len(), MAX_BUCKETS * 3 / 4);
        // The newest stay.
        let newest = MAX_BUCKETS as u32 + 9;
        assert!(map.contains_key(&ClientKey::Address(IpAddr::from(newest.to_be_bytes()))));
        assert!(!map.contains_key(&ClientKey::Address(IpAddr::from(0u32.to_be_bytes()))));
    }

    fn parts(peer: &str, forwarded: Option<&str>) -> Parts {
        let mut request = axum::http::Request::get("/download/x").body(()).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        if let Some(value) = forwarded {
            request
                .headers_mut()
                .insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        request.into_parts().0
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let limits = RateLimits::new(1, 1, &["10.0.0.0/8".to_owned(), "::1".to_owned()]).unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // An untrusted peer's header is ignored.
        assert_eq!(
            limits.client_address(&parts("192.0.2.7:5000", Some("198.51.100.1"))),
            ip("192.0.2.7")
        );
        // Through a trusted proxy: the right-most untrusted entry.
        assert_eq!(
            limits.client_address(&parts(
                "10.1.2.3:5000",
                Some("203.0.113.9, 198.51.100.1, 10.9.9.9")
            )),
            ip("198.51.100.1")
        );
        assert_eq!(limits.client_address(&parts("[::1]:5000", None)), ip("::1"));
        assert_eq!(
            limits.client_address(&parts("[::ffff:192.0.2.8]:5000", None)),
            ip("192.0.2.8")
        );
        let no_peer = axum::http::Request::get("/")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(limits.client_address(&no_peer), None);
        assert!(RateLimits::new(1, 1, &["10.0.0.0/33".to_owned()]).is_err());
        assert!(RateLimits::new(1, 1, &["proxy.internal".to_owned()]).is_err());
    }

    #[test]
    fn nets_contain_their_addresses() {
        let net = IpNet::parse("192.168.0.0/16").unwrap();
        assert!(net.contains("192.168.44.1".parse().unwrap()));
        assert!(!net.contains("192.169.0.1".parse().unwrap()));
        assert!(IpNet::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(IpNet::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        assert!(!IpNet::parse("fd00::/8")
            .unwrap()
            .contains("10.0.0.1".parse().unwrap()));
    }
}
