//! # neon-sim: a local emulator of Neon's management API (v2)
//!
//! neon-sim serves an in-memory Neon account under `/api/v2`, following Neon's OpenAPI document
//! (`sim/spec/neon-v2.json`): the same paths, field names, enums, status codes and
//! `GeneralError {code, message, request_id}` error bodies. Any Neon client works against it by
//! changing only the base URL. It is used by the daemon's tests, its benchmarks and `demo`.
//!
//! ## Time
//! All emulator time comes from a [`Clock`] (real, or virtual and moved explicitly). Operation
//! progress, autosuspend and branch/snapshot expiry are evaluated from the clock on every request
//! (see [`state::State::settle`]), plus a background ticker in real-clock mode, so tests advance
//! the virtual clock instead of sleeping.
//!
//! ## Using it from a test
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sim = neon_sim::Sim::start(neon_sim::SimConfig::default().projects(3)).await?;
//! let base = sim.base_url(); // http://127.0.0.1:PORT/api/v2
//! let key = sim.api_key();
//! sim.clock().advance(std::time::Duration::from_secs(600));
//! let changed = sim.mutations();
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Emulated and non-emulated operations
//! [`EMULATED_OPERATIONS`] lists every `(method, path, operationId)` the emulator implements.
//! Every other operation of the document answers **501** with a `GeneralError` naming it.
//! Unknown paths answer 404, known paths with an unknown method 405, both as `GeneralError`.
//!
//! ## Admin routes (outside `/api/v2`, no auth)
//! - `GET /_sim/clock` → `{"now": "...", "virtual": bool}`
//! - `POST /_sim/clock/advance` with `{"seconds": N}` → the new `now`
//! - `POST /_sim/clock/set` with `{"now": "RFC 3339"}` → the new `now`
//! - `GET /_sim/mutations`, `DELETE /_sim/mutations` → the mutation log (the newest
//!   `--mutation-log-limit` entries, default 10,000, with a `dropped` count) / clear it
//!
//! ## Hook points (for the `sim-conf` work)
//! - [`router`] builds the whole app from an [`AppState`]. Middleware layers for fault injection
//!   and rate limiting go in the marked place in `routes::api_router` (inside the request-id
//!   layer, so their errors get a request id; outside auth, like Neon's edge).
//! - Extra `/api/v2` routes (consumption) are merged in the marked place of `routes::api_router`;
//!   they are registered before the 501 catch-all, so adding a route there replaces its 501.
//!   Add their `(method, path, operationId)` to [`EMULATED_OPERATIONS`] (or a sibling list).
//! - Consumption derives its numbers from the plain methods of [`state::State`]
//!   (`project_active_seconds`, `branch_compute_seconds`, `branch_written_bytes`,
//!   `branch_transfer_bytes`, `branch_storage_byte_hours`, `project_branch_ids_between`, ...).
//! - Handlers use the extractors in `routes::extract` (`Principal`, `ApiJson`, `ApiQuery`,
//!   `ApiPath`) so that bad input becomes a 400 `GeneralError`, never axum's plain text.

pub mod clock;
pub mod config;
pub mod error;
pub mod ids;
pub mod mutations;
pub mod routes;
pub mod seed;
pub mod server;
pub mod spec;
pub mod state;
pub mod wire;

pub mod consumption;
pub mod consumption_view;
pub mod faults;
pub mod forge;
pub mod openapi;
pub mod ratelimit;

pub use clock::Clock;
pub use config::{ClockMode, SimConfig};
pub use error::{ApiError, GeneralError};
pub use mutations::Mutation;
pub use routes::{router, AppState, EMULATED_OPERATIONS};
pub use server::Sim;
pub use state::SharedState;
