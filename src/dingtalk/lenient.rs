//! Numbers DingTalk sends sometimes as JSON numbers, sometimes as decimal strings.
//!
//! `topapi/im/chat/scenegroup/get` answers its flags as `"0"`/`"1"` (the official TOP SDK
//! types them `String`), `chat/get` answers the same flags as numbers, and the callback's
//! `createAt` is a String in DingTalk's field table but a number in every example. Every
//! numeric field of every DingTalk model dingbot parses goes through [`number`], so the
//! shape never decides whether an answer is readable.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::{self, Unexpected, Visitor};

/// An integer type [`number`] can produce.
pub trait Integer: Sized + TryFrom<i64> + TryFrom<u64> + std::str::FromStr {}

impl Integer for i64 {}
impl Integer for u64 {}

/// `#[serde(deserialize_with = "lenient::number")]` for an `Option<i64>` or `Option<u64>`
/// field: a JSON integer, an integral float (`1.0`) or a decimal string (`"1"`, `" 7 "`)
/// is a value; `null` and `""` are absent. Anything else (another string, a bool, an
/// object, a value out of range) is an error: an answer that says something else than a
/// number is not read as one.
pub fn number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Integer,
{
    d.deserialize_any(NumberVisitor(PhantomData))
}

struct NumberVisitor<T>(PhantomData<T>);

impl<T: Integer> NumberVisitor<T> {
    fn of_i64<E: de::Error>(&self, v: i64) -> Result<Option<T>, E> {
        T::try_from(v)
            .map(Some)
            .map_err(|_| E::invalid_value(Unexpected::Signed(v), self))
    }

    fn of_u64<E: de::Error>(&self, v: u64) -> Result<Option<T>, E> {
        T::try_from(v)
            .map(Some)
            .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), self))
    }

    fn of_f64<E: de::Error>(&self, v: f64) -> Result<Option<T>, E> {
        // Integral and inside i64 (±2^63 is exactly representable as f64).
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        if v.is_finite() && v.fract() == 0.0 && v.abs() < LIMIT {
            #[allow(clippy::cast_possible_truncation)]
            return self.of_i64(v as i64);
        }
        Err(E::invalid_value(Unexpected::Float(v), self))
    }
}

impl<'de, T: Integer> Visitor<'de> for NumberVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer, as a number or a decimal string")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<T>, E> {
        self.of_i64(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<T>, E> {
        self.of_u64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<T>, E> {
        self.of_f64(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<T>, E> {
        let s = v.trim();
        if s.is_empty() {
            return Ok(None);
        }
        if let Ok(n) = s.parse::<T>() {
            return Ok(Some(n));
        }
        match s.parse::<f64>() {
            // "1.0", "1e3": integral values written as floats.
            Ok(f) if f.is_finite() => self.of_f64(f),
            _ => Err(E::invalid_value(Unexpected::Str(v), &self)),
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Probe {
        #[serde(deserialize_with = "super::number")]
        signed: Option<i64>,
        #[serde(deserialize_with = "super::number")]
        count: Option<u64>,
    }

    fn probe(json: &str) -> Result<Probe, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn numbers_and_decimal_strings_are_the_same_value() {
        for json in [
            r#"{"signed":1,"count":7}"#,
            r#"{"signed":"1","count":"7"}"#,
            r#"{"signed":" 1 ","count":7.0}"#,
            r#"{"signed":1.0,"count":"7"}"#,
        ] {
            let p = probe(json).unwrap();
            assert_eq!((p.signed, p.count), (Some(1), Some(7)), "{json}");
        }
        let p = probe(r#"{"signed":"-1690362101894"}"#).unwrap();
        assert_eq!(p.signed, Some(-1_690_362_101_894));
    }

    #[test]
    fn null_empty_and_missing_are_absent() {
        for json in [
            r#"{}"#,
            r#"{"signed":null,"count":""}"#,
            r#"{"count":"  "}"#,
        ] {
            assert_eq!(probe(json).unwrap(), Probe::default(), "{json}");
        }
    }

    #[test]
    fn anything_else_is_an_error() {
        for json in [
            r#"{"signed":"yes"}"#,
            r#"{"signed":true}"#,
            r#"{"signed":{"v":1}}"#,
            r#"{"signed":[1]}"#,
            r#"{"signed":1.5}"#,
            r#"{"count":-1}"#,
            r#"{"count":"-1"}"#,
            r#"{"signed":1e300}"#,
        ] {
            assert!(probe(json).is_err(), "{json}");
        }
    }
}
