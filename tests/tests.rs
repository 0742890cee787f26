//! ft's integration tests, built into one binary: raw-wire tests against an in-process server
//! (`wire`), the library client (`client`), and the real binaries (`cli`).

mod cli;
mod client;
mod util;
mod wire;
