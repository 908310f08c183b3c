//! Integration tests: the real `mde-poller` binary, driven as an operator
//! would, against the simulator of Entra ID and the alerts API on loopback.

mod audit;
mod budget;
mod check;
mod common;
mod config_errors;
mod daemon;
mod faults;
mod formats;
mod graph;
mod hostile;
mod metrics;
mod polling;
mod production;
mod scheduling;
mod shipper;
mod tokens;
