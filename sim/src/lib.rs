pub mod faults;
pub mod openapi;
