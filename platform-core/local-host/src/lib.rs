//! The machine `paas up` runs on, seen from the platform: its own PostgreSQL when no
//! `DATABASE_URL` is given ([`postgres`]), the node agents and the router run as
//! supervised processes ([`fleet`]), and stopping all of it in an order that loses
//! nothing ([`stop`]). With `local-node`, the only crate of the platform that starts,
//! signals or inspects OS processes.

pub mod fleet;
pub mod postgres;
pub mod stop;
