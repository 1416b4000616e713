//! The SpareCycles worker agent: enrolls with a coordinator, leases work units, computes them on
//! a rayon pool of the allowed size, reports progress and delivers results through a durable
//! outbox.
//!
//! The binary (`main.rs`) only parses flags and wires signals to [`run`]'s shutdown future.

mod atomic;
pub mod backoff;
pub mod checkpoint;
pub mod client;
pub mod idle;
pub mod install;
pub mod modules;
pub mod outbox;
pub mod policy;
pub mod prefs;
mod priority;
pub mod runner;
pub mod state;
pub mod status;

pub use client::{Client, ClientError, Transport};
pub use outbox::Outbox;
pub use runner::{RunConfig, enroll, run};
pub use state::{Credentials, StateDir};
