//! The policy's scalar values with a syntax of their own (durations, cron expressions, time
//! zones), each parsed by its own `Deserialize` impl so that `toml` attaches the exact
//! position of a bad value to the error, and described by its own `JsonSchema` impl.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::Deserializer;
use serde::Deserialize;

use super::describe::{CRON_PATTERN, DURATION_PATTERN};
use crate::schedule::CronSchedule;

/// A duration written the `humantime` way: `90s`, `15m`, `12h`, `7d`, `1h 30m`.
///
/// At most [`MAX_DURATION`]: every duration of the policy ends up added to an instant
/// somewhere (a tick plus jitter, now minus a deadline, a creation time plus a ttl), and
/// an absurd value such as `1000000000d` would overflow that arithmetic. Refusing it here
/// gives the operator a positioned error instead of a daemon that dies later.
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

/// The longest duration the policy file accepts anywhere (10 years).
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // Fractions (`1.5h`) are refused rather than rounded: the policy says exactly what
        // it means, in whole units (`1h 30m`).
        if s.contains(['.', ',']) {
            return Err(serde::de::Error::custom(format!(
                "invalid duration `{s}`: fractions are not accepted; write whole units, e.g. \"1h 30m\" for an hour and a half"
            )));
        }
        let v = humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration `{s}` ({e}); expected a number with a unit, e.g. \"90s\", \"15m\", \"12h\", \"7d\""
            ))
        })?;
        if v > MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "duration `{s}` is too long: at most 3650d (10 years)"
            )));
        }
        Ok(Dur(v))
    }
}

/// A [`Dur`] that must not be zero: for the durations where `0s` can only be a mistake
/// (a branch `ttl` of zero would expire every branch at once, an API `timeout` of zero fails
/// every request, ...).
#[derive(Debug, Clone, Copy)]
pub struct PositiveDur(pub Duration);

impl<'de> Deserialize<'de> for PositiveDur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Dur::deserialize(d)?.0;
        if v.is_zero() {
            return Err(serde::de::Error::custom(
                "a duration of zero is not allowed here; give a positive duration such as \"1h\" (or leave the key out)",
            ));
        }
        Ok(PositiveDur(v))
    }
}

/// A cron expression, validated while parsing.
#[derive(Clone)]
pub struct CronStr(pub CronSchedule);

impl<'de> Deserialize<'de> for CronStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CronSchedule::parse(&s)
            .map(CronStr)
            .map_err(serde::de::Error::custom)
    }
}

/// An IANA time zone name.
#[derive(Debug, Clone, Copy)]
pub struct TzStr(pub Tz);

impl<'de> Deserialize<'de> for TzStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Tz::from_str(&s).map(TzStr).map_err(|_| {
            serde::de::Error::custom(format!(
                "unknown time zone `{s}`; expected an IANA name such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\""
            ))
        })
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a whole number with a unit, e.g. \"90s\", \"15m\", \"12h\", \"7d\", \"1h 30m\" (units: ms, s, m, h, d, w, and their long forms).",
            "pattern": DURATION_PATTERN,
            "examples": ["30s", "15m", "12h", "7d", "1h 30m"],
        })
    }
}

impl JsonSchema for PositiveDur {
    fn schema_name() -> Cow<'static, str> {
        "PositiveDuration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration that is not zero: a whole number with a unit, e.g. \"90s\", \"15m\", \"12h\", \"7d\", \"1h 30m\" (units: ms, s, m, h, d, w, and their long forms).",
            "pattern": DURATION_PATTERN,
            "not": { "pattern": "^[\\s0a-zA-Zµ]*$" },
            "examples": ["30s", "15m", "12h", "7d", "1h 30m"],
        })
    }
}

impl JsonSchema for CronStr {
    fn schema_name() -> Cow<'static, str> {
        "Cron".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A cron expression with 5 fields (minute hour day-of-month month day-of-week) or 6 (leading seconds), or @hourly, @daily, @weekly, @monthly, @yearly. Evaluated in the job's time zone.",
            "pattern": CRON_PATTERN,
            "examples": ["0 3 * * *", "*/15 * * * *", "0 0 9 * * Mon-Fri", "@daily"],
        })
    }
}

impl JsonSchema for TzStr {
    fn schema_name() -> Cow<'static, str> {
        "TimeZone".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
        json_schema!({
            "type": "string",
            "description": "An IANA time zone name such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\".",
            "enum": names,
        })
    }
}
