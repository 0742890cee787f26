//! ft's integration tests, built into one binary: raw-wire tests against an in-process server
//! (`wire`), hostile input (`attack`), faults and resume (`faults`), the library client
//! (`client`), the core under a second speaker with no socket (`core`), delta downloads (`delta`), compression (`compress`), delta and compressed uploads (`patch`), fetching folders
//! (`sync`), TLS and trust (`tls`), uploads (`upload`), behind a load balancer (`proxy`) and
//! failing over behind HAProxy (`failover`), the real binaries (`cli`), and the layout's rules
//! read from the source (`layout`).

mod attack;
mod cli;
mod client;
mod compress;
mod core;
mod delta;
mod failover;
mod faithful;
mod faults;
mod layout;
mod patch;
mod proxy;
mod soak;
mod sync;
mod tls;
mod trickle;
mod upload;
mod util;
mod wire;
