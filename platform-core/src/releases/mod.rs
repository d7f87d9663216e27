//! Releases as core logic (issue 12, in progress): pure planning steps from what runs
//! to the next desired shape, and the gate that decides who may do what to a release.
//! Neither is wired to the reconciler or the API yet.

pub mod gate;
pub mod rolling;
