//! Scheduling logic: quorum validation (pure), the transitioner loop, and assembly.

pub mod assemble;
pub mod transition;
pub mod trust;
pub mod validate;
