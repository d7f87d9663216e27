//! The local process runtime: what runs applications on one machine with no cluster.
//!
//! A node agent supervises each instance as an OS process ([`supervisor`]): its own
//! process group, its port in `PORT`, a working directory, stdout and stderr captured to
//! size-bounded files ([`logs`]), readiness and liveness probes ([`probe`]), restarts with
//! exponential backoff, graceful stop, and CPU and memory measured from `/proc`
//! ([`usage`]). Each instance runs under its own shim process ([`shim`]), so it
//! outlives the agent, as an unprivileged identity in a sandbox where the node has one
//! ([`sandbox`]). With `local-host` (what `paas up` does to its machine), the only crate of the platform
//! that knows OS processes.

pub mod agent;
pub mod agent_api;
pub mod handover;
pub mod host;
pub mod limits;
pub mod lock;
pub mod logs;
pub mod package;
pub mod probe;
pub mod proto;
pub mod router;
pub mod sandbox;
pub mod shim;
pub mod supervisor;
pub mod tcp;
pub mod traffic;
pub mod usage;
