//! What an emulator is started with: [`SimConfig`] (and its [`ClockMode`]), and the initial
//! model it describes. Kept apart from `server` so the routes can read the configuration
//! without importing the server that builds them.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::clock::Clock;
use crate::seed::{self, SeedParams};
use crate::state::{KeyScope, State};

/// How the emulator keeps time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockMode {
    /// Follow the system clock (a background ticker applies autosuspend and expiry).
    Real,
    /// Start frozen at this instant; move it with `Sim::clock()` or the admin routes.
    Virtual { start: DateTime<Utc> },
}

/// Everything needed to start an emulator. `Default` gives an empty account (one user, one
/// personal key), a virtual clock at 2025-06-02T12:00:00Z, instant operations and port 0.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every generated id and of the seeded data.
    pub seed: u64,
    /// Organizations to generate (the primary user is a member of all).
    pub orgs: usize,
    /// Projects to generate (spread round-robin over the orgs; personal when `orgs` is 0).
    pub projects: usize,
    /// Personal API keys to accept (of the primary user). One is generated when empty.
    pub api_keys: Vec<String>,
    pub clock: ClockMode,
    /// How long each operation stays scheduling/running on the emulator's clock.
    pub operation_duration: Duration,
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// A fixture file (see [`crate::seed::Fixture`]) loaded after generation.
    pub fixture: Option<PathBuf>,
    /// Period of the background ticker in real-clock mode.
    pub tick_interval: Duration,
    /// Neon's rate limits, on by default (see [`crate::ratelimit`]).
    pub rate_limit: crate::ratelimit::RateLimitConfig,
    /// Add [`crate::seed::add_lifecycle_cases`] to the generated projects (off by default).
    pub lifecycle_cases: bool,
    /// Newest mutating requests the mutation log keeps (older ones are dropped and counted).
    pub mutation_log_limit: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            orgs: 0,
            projects: 0,
            api_keys: Vec::new(),
            clock: ClockMode::Virtual {
                start: Utc
                    .with_ymd_and_hms(2025, 6, 2, 12, 0, 0)
                    .single()
                    .expect("a valid fixed date"),
            },
            operation_duration: Duration::ZERO,
            port: 0,
            fixture: None,
            tick_interval: Duration::from_secs(1),
            rate_limit: crate::ratelimit::RateLimitConfig::default(),
            lifecycle_cases: false,
            mutation_log_limit: crate::mutations::DEFAULT_MUTATION_LOG_LIMIT,
        }
    }
}

impl SimConfig {
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    pub fn orgs(mut self, n: usize) -> Self {
        self.orgs = n;
        self
    }
    pub fn projects(mut self, n: usize) -> Self {
        self.projects = n;
        self
    }
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_keys.push(key.into());
        self
    }
    pub fn real_clock(mut self) -> Self {
        self.clock = ClockMode::Real;
        self
    }
    pub fn virtual_clock(mut self, start: DateTime<Utc>) -> Self {
        self.clock = ClockMode::Virtual { start };
        self
    }
    pub fn operation_duration(mut self, d: Duration) -> Self {
        self.operation_duration = d;
        self
    }
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    pub fn fixture(mut self, path: impl Into<PathBuf>) -> Self {
        self.fixture = Some(path.into());
        self
    }
    /// Seed the cleanup cases of [`crate::seed::add_lifecycle_cases`] into every project.
    pub fn lifecycle_cases(mut self, on: bool) -> Self {
        self.lifecycle_cases = on;
        self
    }
    /// How many mutating requests the mutation log keeps (the newest; see [`crate::mutations`]).
    pub fn mutation_log_limit(mut self, n: usize) -> Self {
        self.mutation_log_limit = n;
        self
    }
    pub fn rate_limit(mut self, config: crate::ratelimit::RateLimitConfig) -> Self {
        self.rate_limit = config;
        self
    }

    /// Builds the initial model this configuration describes (no server).
    pub fn build_state(&self) -> anyhow::Result<State> {
        let clock = match &self.clock {
            ClockMode::Real => Clock::real(),
            ClockMode::Virtual { start } => Clock::virtual_at(*start),
        };
        let mut state = State::new(clock, self.seed, self.operation_duration);
        seed::generate(
            &mut state,
            &SeedParams {
                orgs: self.orgs,
                projects: self.projects,
                lifecycle_cases: self.lifecycle_cases,
            },
        );
        if let Some(path) = &self.fixture {
            seed::load_fixture_file(&mut state, path)?;
        }
        let user = state.primary_user_id.clone();
        if self.api_keys.is_empty() {
            state.add_api_key("sim-default", KeyScope::Personal { user_id: user }, None);
        } else {
            for (i, k) in self.api_keys.iter().enumerate() {
                state.add_api_key(
                    &format!("sim-key-{}", i + 1),
                    KeyScope::Personal {
                        user_id: user.clone(),
                    },
                    Some(k.clone()),
                );
            }
        }
        Ok(state)
    }
}
