//! The policy file as written: serde structs that mirror the TOML exactly.
//!
//! Values with a syntax of their own (durations, cron expressions, time zones) are parsed by
//! their own `Deserialize` impls so that `toml` attaches the exact position of a bad value to
//! the error. Values needed by later cross-field checks (duplicate names, options given for
//! the wrong kind) are wrapped in [`Spanned`] to keep their position.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;
use serde::de::{Deserializer, IgnoredAny};
use serde::Deserialize;
use toml::Spanned;

use super::{
    ConcurrencyPolicy, ConsumptionEndpoint, EndpointType, ExpireMode, Granularity, JobKind,
    MissedPolicy,
};
use crate::scheduler::schedule::CronSchedule;

/// A duration written the `humantime` way: `90s`, `15m`, `12h`, `7d`, `1h 30m`.
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration `{s}` ({e}); expected a number with a unit, e.g. \"90s\", \"15m\", \"12h\", \"7d\""
            ))
        })
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub defaults: RawDefaults,
    #[serde(default)]
    pub jobs: Vec<RawJob>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub base_url: Option<Spanned<String>>,
    pub api_key_file: Option<PathBuf>,
    /// Accepted by the parser only so it can be rejected with a helpful message.
    pub api_key: Option<Spanned<IgnoredAny>>,
    pub timeout: Option<Dur>,
    pub rate_limit_per_minute: Option<Spanned<u32>>,
    pub burst: Option<Spanned<u32>>,
    pub max_retries: Option<u32>,
    pub concurrency: Option<Spanned<usize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub url: Option<String>,
    pub history_retention: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<Spanned<String>>,
    pub admin_token_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub dry_run: Option<bool>,
    pub timezone: Option<TzStr>,
    pub jitter: Option<Dur>,
    pub timeout: Option<Dur>,
    pub concurrency: Option<ConcurrencyPolicy>,
    pub missed: Option<MissedPolicy>,
    pub starting_deadline: Option<Dur>,
    pub max_actions: Option<u32>,
    pub max_actions_percent: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    pub name: Spanned<String>,
    pub kind: Spanned<JobKind>,
    pub schedule: Option<Spanned<CronStr>>,
    pub every: Option<Spanned<Dur>>,
    pub timezone: Option<TzStr>,
    pub jitter: Option<Dur>,
    pub timeout: Option<Dur>,
    pub concurrency: Option<ConcurrencyPolicy>,
    pub missed: Option<MissedPolicy>,
    pub starting_deadline: Option<Dur>,
    pub dry_run: Option<bool>,
    pub enabled: Option<bool>,

    pub projects: Option<RawProjects>,
    pub branches: Option<Spanned<RawBranches>>,
    pub endpoints: Option<Spanned<RawEndpoints>>,

    pub max_actions: Option<u32>,
    pub max_actions_percent: Option<Spanned<f64>>,

    // snapshot_branches
    pub name_template: Option<Spanned<String>>,
    pub expires_in: Option<Spanned<Dur>>,
    pub retention: Option<Spanned<RawRetention>>,

    // expire_branches
    pub ttl: Option<Spanned<Dur>>,
    pub idle_ttl: Option<Spanned<Dur>>,
    pub mode: Option<Spanned<ExpireMode>>,

    // suspend_computes
    pub idle_for: Option<Spanned<Dur>>,
    pub windows: Option<Spanned<Vec<Spanned<String>>>>,
    pub window_timezone: Option<Spanned<TzStr>>,
    pub exclude_until: Option<Spanned<String>>,
    pub resume: Option<Spanned<bool>>,

    // collect_consumption
    pub granularity: Option<Spanned<Granularity>>,
    pub metrics: Option<Spanned<Vec<String>>>,
    pub org_id: Option<Spanned<String>>,
    pub endpoint: Option<Spanned<ConsumptionEndpoint>>,
    pub max_projects_exported: Option<Spanned<usize>>,
    pub prices: Option<Spanned<BTreeMap<String, f64>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProjects {
    #[serde(default)]
    pub ids: Vec<String>,
    pub org_id: Option<String>,
    #[serde(default)]
    pub names: Vec<Spanned<String>>,
    pub name_regex: Option<Spanned<String>>,
    #[serde(default)]
    pub exclude_ids: Vec<String>,
    #[serde(default)]
    pub exclude_names: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBranches {
    #[serde(default)]
    pub names: Vec<Spanned<String>>,
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
    pub older_than: Option<Dur>,
    pub inactive_for: Option<Dur>,
    pub default: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoints {
    #[serde(rename = "type")]
    pub endpoint_type: Option<EndpointType>,
    #[serde(default)]
    pub branches: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
}
