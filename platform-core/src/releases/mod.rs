//! Releases as core logic: each strategy is a pure planning step from what runs to the
//! next desired shape. (Issue 12, in progress: the rolling strategy's step.)

pub mod rolling;
