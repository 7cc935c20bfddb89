//! neon-sim integration tests (one binary, one module per area).

mod conformance;
