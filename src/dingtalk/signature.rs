//! Callback signature: `sign = base64(HMAC-SHA256(key = app_secret, msg = timestamp + "\n" + app_secret))`.
//!
//! Pure: no I/O, no clock (the caller passes `now_ms`). The comparison is constant-time
//! (`Mac::verify_slice`). The HMAC key schedule is computed once per [`Verifier`] and cloned
//! per request.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a callback's signature headers were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required header is absent (or present more than once).
    #[error("missing or repeated `{0}` header")]
    Missing(&'static str),
    /// A header is present but not in the documented shape.
    #[error("malformed `{0}` header")]
    Malformed(&'static str),
    /// The timestamp is further from our clock than the configured window.
    #[error("timestamp outside the allowed clock skew ({skew_ms} ms)")]
    Stale {
        /// `now - timestamp` in milliseconds (negative: from the future).
        skew_ms: i64,
    },
    /// The signature does not match.
    #[error("signature mismatch")]
    Mismatch,
}

/// A signature check that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The signed timestamp, ms since the epoch.
    pub timestamp_ms: i64,
    /// `now - timestamp` in ms, for the clock-skew metric.
    pub skew_ms: i64,
}

/// Verifies callback signatures for one app secret.
#[derive(Clone)]
pub struct Verifier {
    /// HMAC state keyed with the secret, cloned per check.
    keyed: HmacSha256,
    /// The secret's bytes are part of the signed message, too.
    secret: SecretString,
    /// Allowed |now - timestamp|.
    max_skew_ms: i64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("max_skew_ms", &self.max_skew_ms)
            .finish_non_exhaustive()
    }
}

/// Longest timestamp header accepted: 16 digits is year 2286 in ms.
const MAX_TIMESTAMP_LEN: usize = 16;
/// Base64 of a 32-byte MAC is exactly 44 characters with padding.
const SIGN_LEN: usize = 44;

impl Verifier {
    /// A verifier for `secret` with a clock window of `max_skew_secs`.
    pub fn new(secret: &SecretString, max_skew_secs: u64) -> Verifier {
        let keyed = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable_hmac());
        Verifier {
            keyed,
            secret: secret.clone(),
            max_skew_ms: i64::try_from(max_skew_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        }
    }

    /// The allowed clock window in ms.
    pub fn max_skew_ms(&self) -> i64 {
        self.max_skew_ms
    }

    /// Checks the raw `timestamp` and `sign` header values against `now_ms`.
    pub fn verify(
        &self,
        timestamp: Option<&[u8]>,
        sign: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<Verified, SignatureError> {
        let ts_raw = timestamp.ok_or(SignatureError::Missing("timestamp"))?;
        let sign_raw = sign.ok_or(SignatureError::Missing("sign"))?;
        if ts_raw.is_empty()
            || ts_raw.len() > MAX_TIMESTAMP_LEN
            || !ts_raw.iter().all(u8::is_ascii_digit)
        {
            return Err(SignatureError::Malformed("timestamp"));
        }
        // Digits only and at most 16 of them: always fits in i64.
        let timestamp_ms = ts_raw
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
        if sign_raw.len() != SIGN_LEN {
            return Err(SignatureError::Malformed("sign"));
        }
        let mut mac = [0u8; 33];
        let n = STANDARD
            .decode_slice(sign_raw, &mut mac)
            .map_err(|_| SignatureError::Malformed("sign"))?;
        if n != 32 {
            return Err(SignatureError::Malformed("sign"));
        }
        let skew_ms = now_ms.saturating_sub(timestamp_ms);
        if skew_ms.saturating_abs() > self.max_skew_ms {
            return Err(SignatureError::Stale { skew_ms });
        }
        let mut h = self.keyed.clone();
        h.update(ts_raw);
        h.update(b"\n");
        h.update(self.secret.expose_secret().as_bytes());
        h.verify_slice(&mac[..32])
            .map_err(|_| SignatureError::Mismatch)?;
        Ok(Verified {
            timestamp_ms,
            skew_ms,
        })
    }
}

/// Computes the `sign` header value for `timestamp` (used by `demo`, `simulate` and tests).
pub fn sign(secret: &str, timestamp: &str) -> String {
    let mut h =
        HmacSha256::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable_hmac());
    h.update(timestamp.as_bytes());
    h.update(b"\n");
    h.update(secret.as_bytes());
    STANDARD.encode(h.finalize().into_bytes())
}

/// HMAC accepts keys of any length, so construction cannot fail.
#[cold]
fn unreachable_hmac() -> HmacSha256 {
    unreachable!("HMAC-SHA256 accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> Verifier {
        Verifier::new(&SecretString::from("this is a secret"), 3600)
    }

    #[test]
    fn known_vector_matches_documented_algorithm() {
        // Computed independently with Python:
        // base64.b64encode(hmac.new(b"this is a secret", b"1577262236757\nthis is a secret", sha256).digest())
        assert_eq!(
            sign("this is a secret", "1577262236757"),
            "DJrE6qdyVGCQz9z5r2MDuNcNAhwYnuAkyj13cx169CA="
        );
    }

    #[test]
    fn accepts_fresh_valid_signature() {
        let now = 1_700_000_000_000;
        let ts = (now - 5_000).to_string();
        let s = sign("this is a secret", &ts);
        let v = verifier()
            .verify(Some(ts.as_bytes()), Some(s.as_bytes()), now)
            .unwrap();
        assert_eq!(v.skew_ms, 5_000);
    }

    #[test]
    fn rejects_each_defect() {
        let now = 1_700_000_000_000i64;
        let ts = now.to_string();
        let good = sign("this is a secret", &ts);
        let v = verifier();
        assert_eq!(
            v.verify(None, Some(good.as_bytes()), now),
            Err(SignatureError::Missing("timestamp"))
        );
        assert_eq!(
            v.verify(Some(ts.as_bytes()), None, now),
            Err(SignatureError::Missing("sign"))
        );
        assert_eq!(
            v.verify(Some(b"-1"), Some(good.as_bytes()), now),
            Err(SignatureError::Malformed("timestamp"))
        );
        assert_eq!(
            v.verify(Some(b"99999999999999999999"), Some(good.as_bytes()), now),
            Err(SignatureError::Malformed("timestamp"))
        );
        assert_eq!(
            v.verify(Some(ts.as_bytes()), Some(b"abc"), now),
            Err(SignatureError::Malformed("sign"))
        );
        let wrong = sign("another secret", &ts);
        assert_eq!(
            v.verify(Some(ts.as_bytes()), Some(wrong.as_bytes()), now),
            Err(SignatureError::Mismatch)
        );
        let old = (now - 3_600_001).to_string();
        let old_sign = sign("this is a secret", &old);
        assert!(matches!(
            v.verify(Some(old.as_bytes()), Some(old_sign.as_bytes()), now),
            Err(SignatureError::Stale { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn sign_then_verify_round_trips(secret in ".{1,64}", skew in -3_600_000i64..=3_600_000) {
            let now = 1_700_000_000_000i64;
            let ts = (now - skew).to_string();
            let v = Verifier::new(&SecretString::from(secret.clone()), 3600);
            let s = sign(&secret, &ts);
            proptest::prop_assert!(v.verify(Some(ts.as_bytes()), Some(s.as_bytes()), now).is_ok());
        }

        #[test]
        fn any_other_secret_or_timestamp_fails(secret in "[a-z]{8,32}", other in "[A-Z]{8,32}", delta in 1i64..1000) {
            let now = 1_700_000_000_000i64;
            let ts = now.to_string();
            let v = Verifier::new(&SecretString::from(secret.clone()), 3600);
            let wrong_key = sign(&other, &ts);
            proptest::prop_assert_eq!(v.verify(Some(ts.as_bytes()), Some(wrong_key.as_bytes()), now), Err(SignatureError::Mismatch));
            let other_ts = (now - delta).to_string();
            let for_other_ts = sign(&secret, &other_ts);
            proptest::prop_assert_eq!(v.verify(Some(ts.as_bytes()), Some(for_other_ts.as_bytes()), now), Err(SignatureError::Mismatch));
        }

        #[test]
        fn arbitrary_headers_never_panic(ts in proptest::collection::vec(proptest::num::u8::ANY, 0..40), sg in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let v = Verifier::new(&SecretString::from("k"), 3600);
            let _ = v.verify(Some(&ts), Some(&sg), 1_700_000_000_000);
        }
    }
}
