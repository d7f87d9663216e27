//! Releases as core logic: pure planning steps from what runs to the next desired
//! shape (`plan`, over `rolling`; `canary` with its analysis), the gate that decides
//! who may do what to a release (`gate`), freeze windows (`freeze`) and an
//! environment's release policy (`policy`). `platform::releases` records releases and
//! people's actions; the reconciler runs `plan` at every pass.

pub mod canary;
pub mod freeze;
pub mod gate;
pub mod plan;
pub mod policy;
pub mod rolling;
