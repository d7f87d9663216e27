//! Releases as core logic (issue 12, in progress): pure planning steps from what runs
//! to the next desired shape (`rolling`, `canary` with its analysis), the gate that
//! decides who may do what to a release (`gate`), and freeze windows (`freeze`). None
//! of it is wired to the reconciler or the API yet.

pub mod canary;
pub mod freeze;
pub mod gate;
pub mod rolling;
