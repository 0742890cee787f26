//! ft's integration tests, built into one binary: raw-wire tests against an in-process server
//! (`wire`), hostile input (`attack`), faults and resume (`faults`), the library client
//! (`client`), and the real binaries (`cli`).

mod attack;
mod cli;
mod client;
mod faults;
mod soak;
mod util;
mod wire;
