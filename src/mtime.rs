//! A file's modification time as ft carries it: whole seconds since the Unix epoch (negative
//! before it) and nanoseconds, the precision Linux keeps and the wire writes (`mtime=` and
//! `mtime_ns=`). The one type for it on both sides, the wire's and the file system's.

/// A modification time: `secs` since the Unix epoch, and `nanos` (below 1,000,000,000) after.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mtime {
    pub secs: i64,
    pub nanos: u32,
}

impl Mtime {
    pub const fn new(secs: i64, nanos: u32) -> Mtime {
        Mtime { secs, nanos }
    }

    /// What the kernel reports (its nanoseconds as a signed number, always in range).
    pub fn of_raw(secs: i64, nanos: i64) -> Mtime {
        Mtime { secs, nanos: u32::try_from(nanos).unwrap_or(0) }
    }

    /// A file's modification time, from what `stat` said of it.
    pub fn of_stat(st: &rustix::fs::Stat) -> Mtime {
        Mtime::of_raw(st.st_mtime, st.st_mtime_nsec as i64)
    }

    /// A file's modification time, from its metadata.
    pub fn of(meta: &std::fs::Metadata) -> Mtime {
        use std::os::unix::fs::MetadataExt;
        Mtime::of_raw(meta.mtime(), meta.mtime_nsec())
    }

    /// As `futimens` takes it.
    pub fn timespec(self) -> rustix::fs::Timespec {
        rustix::fs::Timespec { tv_sec: self.secs, tv_nsec: self.nanos.into() }
    }
}
