//! Where a registry redirected a blob's GET: a registry on object storage answers each
//! request for a blob with a `307` to a presigned URL on another host. The client keeps
//! that URL until it expires and sends the blob's later requests (ranges of a pack) there
//! straight away: one registry round trip per blob, not one per request. A kept URL that
//! answers `403` (expired early, revoked) is forgotten and the registry asked again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Redirects followed at most in one request.
const MAX_REDIRECTS: usize = 10;
/// A target is used no later than this before it expires.
const MARGIN: Duration = Duration::from_secs(30);
/// How long a target that does not say when it expires is kept.
const UNDATED: Duration = Duration::from_secs(60);
/// Targets kept at most; past this the oldest are dropped.
const KEPT: usize = 4096;

#[derive(Clone, Default)]
pub struct Redirects(Arc<Mutex<HashMap<String, (String, Instant)>>>);

impl Redirects {
    /// A redirect policy for the client: follows at most [`MAX_REDIRECTS`], keeping the
    /// final target of a request that left its first URL's origin.
    pub fn policy(&self) -> reqwest::redirect::Policy {
        let kept = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            if let Some(first) = attempt.previous().first() {
                if first.origin() != attempt.url().origin() {
                    if let Some(until) = good_until(attempt.url()) {
                        kept.keep(first.as_str(), attempt.url().as_str(), until);
                    }
                }
            }
            attempt.follow()
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keep(&self, from: &str, to: &str, until: Instant) {
        let mut map = self.map();
        if map.len() >= KEPT {
            let now = Instant::now();
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= KEPT {
                map.clear();
            }
        }
        map.insert(from.to_string(), (to.to_string(), until));
    }

    /// Where to send a request for `url`: its kept target while that is good.
    pub fn target(&self, url: &str) -> Option<String> {
        let map = self.map();
        map.get(url)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(to, _)| to.clone())
    }

    pub fn forget(&self, url: &str) {
        self.map().remove(url);
    }
}

/// When a presigned `url` stops being usable, less [`MARGIN`]: from SigV4's
/// `X-Amz-Date` and `X-Amz-Expires`, or an `Expires` of seconds since the epoch;
/// [`UNDATED`] from now when it says neither; `None` when it is (nearly) expired.
fn good_until(url: &reqwest::Url) -> Option<Instant> {
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    let expires_at = match (query.get("X-Amz-Date"), query.get("X-Amz-Expires")) {
        (Some(date), Some(secs)) => Some(amz_date(date)?.checked_add(secs.parse().ok()?)?),
        _ => match query.get("Expires") {
            Some(epoch) => Some(epoch.parse::<u64>().ok()?),
            None => None,
        },
    };
    let Some(at) = expires_at else {
        return Some(Instant::now() + UNDATED);
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let left = Duration::from_secs(at.checked_sub(now)?).checked_sub(MARGIN)?;
    Some(Instant::now() + left.min(Duration::from_secs(7 * 86_400)))
}

/// Seconds since the epoch of `YYYYMMDDTHHMMSSZ`.
fn amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if y == 0 || !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), March-based years.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_are_seconds_since_the_epoch() {
        assert_eq!(amz_date("19700101T000000Z"), Some(0));
        assert_eq!(amz_date("20000301T000000Z"), Some(951_868_800));
        assert_eq!(amz_date("20261204T131602Z"), Some(1_796_390_162));
        assert_eq!(amz_date("20261304T131602Z"), None);
        assert_eq!(amz_date("2026-12-04"), None);
        assert_eq!(amz_date("00000101T000000Z"), None);
        assert_eq!(amz_date("00010101T000000Z"), None, "before the epoch");
    }

    #[test]
    fn presigned_urls_are_kept_until_shortly_before_they_expire() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let at = |expires: u64| {
            let url = reqwest::Url::parse(&format!("http://s3/b/k?Expires={expires}")).unwrap();
            good_until(&url).map(|i| i.saturating_duration_since(Instant::now()).as_secs())
        };
        let left = at(now + 1200).unwrap();
        assert!((1160..=1170).contains(&left), "{left}");
        assert_eq!(at(now + 10), None, "within the margin");
        assert_eq!(at(now - 10), None, "expired");
        let hostile = reqwest::Url::parse(
            "http://s3/k?X-Amz-Date=20261204T131602Z&X-Amz-Expires=18446744073709551615",
        )
        .unwrap();
        assert_eq!(good_until(&hostile), None);
        let undated = good_until(&reqwest::Url::parse("http://cdn/blob").unwrap()).unwrap();
        assert!(undated > Instant::now() + UNDATED - Duration::from_secs(5));

        let kept = Redirects::default();
        kept.keep(
            "http://reg/b",
            "http://s3/b",
            Instant::now() + Duration::from_secs(5),
        );
        assert_eq!(kept.target("http://reg/b").as_deref(), Some("http://s3/b"));
        kept.forget("http://reg/b");
        assert_eq!(kept.target("http://reg/b"), None);
        kept.keep("http://reg/c", "http://s3/c", Instant::now());
        assert_eq!(kept.target("http://reg/c"), None, "expired");
    }
}
