pub mod faults;
pub mod openapi;
pub mod ratelimit;
