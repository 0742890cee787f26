//! The served folder: stat, open and list files strictly beneath the root, and write one beneath
//! it. It knows names and file versions, nothing of the wire: the server turns what it finds into
//! replies.
//!
//! Every access goes through a `cap_std::fs::Dir` opened once on the root, which resolves each
//! path beneath it (with `openat2(RESOLVE_BENEATH)` where the kernel has it, component by
//! component where it does not). A symlink that leads outside the root is refused by the same open
//! that would follow it, so there is no check-then-open race. Files are opened non-blocking and
//! checked to be regular, so a fifo or device in the tree cannot stall a connection's thread.
//!
//! The files: `root.rs` (the root, and looking files up and opening them), `walk.rs` (walking
//! it), `entry.rs` (what a walk finds),
//! `error.rs` (why a name was refused), `put.rs` (writing a file, verified and atomic),
//! `folder.rs` (the folders on an upload's way, made without following a symlink),
//! `staging.rs` (the staging folder, which nothing serves), `partial.rs` (interrupted uploads,
//! kept for resuming) and `held.rs` (their bookkeeping and caps).

mod entry;
mod error;
mod folder;
mod held;
mod partial;
mod put;
mod root;
mod staging;
mod walk;

pub use crate::files::FileVersion;
pub use entry::{FileEntry, Found, Kind, WalkError, WalkProblem};
pub use error::{OpenError, PutError};
pub use folder::FOLDER_MODE;
pub use held::{Caps, Full};
pub use partial::{Cleaned, PARTIAL_TTL, Partial};
pub use put::{Expected, Stored, Upload};
pub use root::Root;
pub use staging::{RESUMABLE_FROM, STAGING, is_reserved};
