//! The service catalog's platform side: brokers speak the Open Service Broker API
//! ([`osb`]) over HTTP ([`client`]), and the operations worker ([`worker`]) carries each
//! requested change of a service instance to its broker, polls it, and cleans up what a
//! failed provisioning may have left there (orphan mitigation).
//!
//! A user's request never waits on a broker: it is stored as the instance's pending
//! operation in the transaction that audits it, and the worker takes it from there. A
//! broker that is down makes its instances wait, not the platform.

pub mod client;
pub mod params;
pub mod worker;

pub use worker::{OperationsWorker, WorkerConfig};
