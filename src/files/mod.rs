//! Small file-system helpers both sides use: the process's umask, giving an unnamed (`O_TMPFILE`)
//! file its name, setting a file's modification time, what identifies a version of a file
//! (`version.rs`), and files that hold secrets (`private.rs`).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::mtime::Mtime;
use rustix::fs::AtFlags;
use rustix::io::Errno;

pub(crate) mod private;
mod version;

pub use version::FileVersion;

/// The process's umask. Read from `/proc/self/status` where the kernel shows it: the only other
/// way is to set it and set it back, and in between another thread's new file (or folder) would
/// be created with no mask at all.
pub fn current_umask() -> u32 {
    let shown = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    });
    let umask = shown.unwrap_or_else(|| {
        let umask = rustix::process::umask(rustix::fs::Mode::empty());
        rustix::process::umask(umask);
        umask.bits()
    });
    umask & 0o777
}

/// Gives the unnamed file `tmp` the name `name` in `dir`; fails with `AlreadyExists` if anything
/// holds that name. Linking the descriptor itself (`AT_EMPTY_PATH`) is cheapest but needs
/// `CAP_DAC_READ_SEARCH`; its `/proc/self/fd` path works for anyone. Which one this process may
/// use is remembered.
pub(crate) fn link_unnamed(tmp: &File, dir: impl AsFd, name: impl rustix::path::Arg + Copy) -> io::Result<()> {
    static EMPTY_PATH_WORKS: AtomicBool = AtomicBool::new(true);
    if EMPTY_PATH_WORKS.load(Ordering::Relaxed) {
        match rustix::fs::linkat(tmp, "", &dir, name, AtFlags::EMPTY_PATH) {
            Ok(()) => return Ok(()),
            Err(Errno::NOENT | Errno::PERM | Errno::INVAL) => EMPTY_PATH_WORKS.store(false, Ordering::Relaxed),
            Err(e) => return Err(e.into()),
        }
    }
    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(tmp));
    Ok(rustix::fs::linkat(rustix::fs::CWD, proc_path, &dir, name, AtFlags::SYMLINK_FOLLOW)?)
}

/// Gives an open file a modification time (its access time: now), if there is one to give.
pub(crate) fn set_mtime(file: &impl std::os::fd::AsFd, mtime: Option<Mtime>) -> io::Result<()> {
    let Some(mtime) = mtime else { return Ok(()) };
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW },
        last_modification: mtime.timespec(),
    };
    Ok(rustix::fs::futimens(file, &times)?)
}
