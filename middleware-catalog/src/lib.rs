//! Middleware service brokers for the platform's service catalog. Each broker speaks
//! the Open Service Broker API v2.17 and is released on its own; the core talks to
//! them over HTTP only and never links this crate.
//!
//! This crate holds the API's wire model shared by the brokers: the catalog a broker
//! publishes and the validation the platform applies when it registers one.

pub mod osb;
