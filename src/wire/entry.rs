//! The entries of listings: `list`'s `<size> <mtime> <name>` lines, and the typed entries of
//! `walk` and `stat` (files, folders, symlinks, specials, and what could not be read).

use std::io::{self, Write};

use crate::mtime::Mtime;
use crate::name::Name;

use super::hello::Form;
use super::line::{MAX_TARGET_LEN, ProtocolError};
use super::reply::ErrorCode;
use super::text::{malformed, parse_i64, parse_mode, parse_nanos, parse_u64};

/// One line of a `list` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    pub name: Name,
}

impl ListEntry {
    /// Writes `<size> <mtime> <name>`, the name in `form` (an `InvalidInput` error for a name
    /// version 1 cannot carry: a listing leaves such names out).
    pub fn write(&self, w: &mut impl Write, form: Form) -> io::Result<()> {
        let name = form.write(&self.name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        writeln!(w, "{} {} {name}", self.size, self.mtime)
    }

    /// Parses `<size> <mtime> <name>`; the name is the rest of the line and must be a valid name.
    pub fn parse(line: &[u8], form: Form) -> Result<ListEntry, ProtocolError> {
        let text = std::str::from_utf8(line).map_err(|_| malformed("list entry is not UTF-8", line))?;
        let mut parts = text.splitn(3, ' ');
        let (size, mtime, name) = match (parts.next(), parts.next(), parts.next()) {
            (Some(s), Some(m), Some(n)) => (s, m, n),
            _ => return Err(malformed("expected '<size> <mtime> <name>'", line)),
        };
        let size = parse_u64(size).ok_or_else(|| malformed("bad size in list entry", line))?;
        let mtime = parse_i64(mtime).ok_or_else(|| malformed("bad mtime in list entry", line))?;
        let name = form.read(name).map_err(|e| malformed(&format!("bad name in list entry: {e}"), line))?;
        Ok(ListEntry { size, mtime, name })
    }
}

/// What a listed entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Folder,
    /// A symlink, not followed: the text it holds (any bytes but NUL).
    Symlink(Vec<u8>),
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    /// An entry (or a whole folder) the server could not read: the listing beneath it is
    /// incomplete, and a client must not take its absence as gone.
    Unreadable {
        code: ErrorCode,
        message: String,
    },
}

impl EntryKind {
    fn letter(&self) -> &'static str {
        match self {
            EntryKind::File => "f",
            EntryKind::Folder => "d",
            EntryKind::Symlink(_) => "l",
            EntryKind::Fifo => "p",
            EntryKind::Socket => "s",
            EntryKind::CharDevice => "c",
            EntryKind::BlockDevice => "b",
            EntryKind::Unreadable { .. } => "e",
        }
    }

    /// What it is, for people: "a fifo", "a symlink", ...
    pub fn describe(&self) -> &'static str {
        match self {
            EntryKind::File => "a file",
            EntryKind::Folder => "a folder",
            EntryKind::Symlink(_) => "a symlink",
            EntryKind::Fifo => "a fifo",
            EntryKind::Socket => "a socket",
            EntryKind::CharDevice => "a character device",
            EntryKind::BlockDevice => "a block device",
            EntryKind::Unreadable { .. } => "unreadable",
        }
    }
}

/// One line of a `list` reply with the `list-meta` feature, or of a `walk` reply (version 2): an
/// entry with its kind, mode and exact modification time. On the wire, `key=value` fields, a TAB,
/// then the name (in the connection's [`Form`]; neither form holds a TAB):
///
/// ```text
/// type=f size=<bytes> mtime=<unix seconds> mtime_ns=<0..999999999> mode=<octal>\t<name>
/// type=d mtime=<unix seconds> mtime_ns=<ns> mode=<octal>\t<name>
/// type=l mtime=.. mtime_ns=.. mode=.. target=<token>\t<name>     (walk only: a symlink, not followed)
/// type=p|s|c|b mtime=.. mtime_ns=.. mode=..\t<name>              (walk only: fifo, socket, devices)
/// type=e code=<error code> msg=<token>\t<name>                  (walk only: could not be read)
/// ```
///
/// A `<token>` is written as version 2 writes names (percent-escaped: no space, no control byte).
/// Unknown fields are ignored, so later versions can add some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaEntry {
    pub kind: EntryKind,
    /// 0 but for a file.
    pub size: u64,
    pub mtime: Mtime,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub name: Name,
}

impl MetaEntry {
    pub fn is_folder(&self) -> bool {
        self.kind == EntryKind::Folder
    }

    pub fn is_file(&self) -> bool {
        self.kind == EntryKind::File
    }

    /// The modification time: seconds and nanoseconds.
    pub fn mtime(&self) -> Mtime {
        self.mtime
    }

    /// Writes the answer to `stat`: `OK ` and the entry, its name escaped.
    pub fn write_reply(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(b"OK ")?;
        self.write(w, Form::Escaped)
    }

    /// Writes the entry, its name in `form` (an `InvalidInput` error for a name version 1 cannot
    /// carry).
    pub fn write(&self, w: &mut impl Write, form: Form) -> io::Result<()> {
        let name = form.write(&self.name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        write!(w, "type={}", self.kind.letter())?;
        match &self.kind {
            EntryKind::Unreadable { code, message } => {
                return writeln!(w, " code={code} msg={}\t{name}", crate::escape::token(message.as_bytes()));
            }
            EntryKind::File => write!(w, " size={}", self.size)?,
            _ => {}
        }
        write!(w, " mtime={} mtime_ns={} mode={:o}", self.mtime.secs, self.mtime.nanos, self.mode)?;
        if let EntryKind::Symlink(target) = &self.kind {
            write!(w, " target={}", crate::escape::token(target))?;
        }
        writeln!(w, "\t{name}")
    }

    pub fn parse(line: &[u8], form: Form) -> Result<MetaEntry, ProtocolError> {
        let bad = |what: &str| malformed(what, line);
        let text = std::str::from_utf8(line).map_err(|_| bad("list entry is not UTF-8"))?;
        let (fields, name) = text.split_once('\t').ok_or_else(|| bad("expected fields, a TAB, then the name"))?;
        let name = form.read(name).map_err(|e| bad(&format!("bad name in list entry: {e}")))?;
        let (mut letter, mut size, mut mtime, mut mtime_nsec, mut mode) = (None, None, None, 0, None);
        let (mut target, mut code, mut message) = (None, None, None);
        for field in fields.split(' ') {
            match field.split_once('=') {
                Some(("type", v)) => letter = Some(v),
                Some(("size", v)) => size = Some(parse_u64(v).ok_or_else(|| bad("bad size in list entry"))?),
                Some(("mtime", v)) => mtime = Some(parse_i64(v).ok_or_else(|| bad("bad mtime in list entry"))?),
                Some(("mtime_ns", v)) => {
                    mtime_nsec = parse_nanos(v).ok_or_else(|| bad("bad mtime_ns in list entry"))?
                }
                Some(("mode", v)) => mode = Some(parse_mode(v).ok_or_else(|| bad("bad mode in list entry"))?),
                Some(("target", v)) => {
                    let t = crate::escape::untoken(v).map_err(|e| bad(&format!("bad symlink target: {e}")))?;
                    if t.is_empty() || t.len() > MAX_TARGET_LEN || t.contains(&0) {
                        return Err(bad("bad symlink target"));
                    }
                    target = Some(t);
                }
                Some(("code", v)) => code = Some(v.to_string()),
                Some(("msg", v)) => {
                    let m = crate::escape::untoken(v).map_err(|e| bad(&format!("bad message: {e}")))?;
                    message = Some(String::from_utf8_lossy(&m).into_owned());
                }
                _ => {}
            }
        }
        let kind = match letter.ok_or_else(|| bad("no type in list entry"))? {
            "f" => EntryKind::File,
            "d" => EntryKind::Folder,
            "l" => EntryKind::Symlink(target.ok_or_else(|| bad("a symlink entry without its target"))?),
            "p" => EntryKind::Fifo,
            "s" => EntryKind::Socket,
            "c" => EntryKind::CharDevice,
            "b" => EntryKind::BlockDevice,
            "e" => {
                let code = code.ok_or_else(|| bad("an unreadable entry without its code"))?;
                let code = code.parse().unwrap_or(ErrorCode::Internal);
                let message = message.unwrap_or_default();
                return Ok(MetaEntry {
                    kind: EntryKind::Unreadable { code, message },
                    size: 0,
                    mtime: Mtime::default(),
                    mode: 0,
                    name,
                });
            }
            _ => return Err(bad("bad type in list entry")),
        };
        let size = if kind == EntryKind::File { size.ok_or_else(|| bad("no size in list entry"))? } else { 0 };
        let mtime = mtime.ok_or_else(|| bad("no mtime in list entry"))?;
        let mode = mode.ok_or_else(|| bad("no mode in list entry"))?;
        Ok(MetaEntry { kind, size, mtime: Mtime::new(mtime, mtime_nsec), mode, name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[test]
    fn list_entries_round_trip() {
        let e = ListEntry { size: 7, mtime: -3, name: name("a dir/b c.txt") };
        let mut out = Vec::new();
        e.write(&mut out, Form::Plain).unwrap();
        assert_eq!(out, b"7 -3 a dir/b c.txt\n");
        assert_eq!(ListEntry::parse(&out[..out.len() - 1], Form::Plain).unwrap(), e);
        out.clear();
        e.write(&mut out, Form::Escaped).unwrap();
        assert_eq!(out, b"7 -3 a%20dir/b%20c.txt\n");
        assert_eq!(ListEntry::parse(&out[..out.len() - 1], Form::Escaped).unwrap(), e);
        assert!(ListEntry::parse(b"7 3 ../x", Form::Plain).is_err());
        assert!(ListEntry::parse(b"7 x", Form::Plain).is_err());
    }

    #[test]
    fn meta_entries_round_trip_and_are_checked() {
        let entry =
            |kind, name: Name| MetaEntry { kind, size: 0, mtime: Mtime::new(-3, 999_999_999), mode: 0o755, name };
        let entries = [
            MetaEntry { size: 7, ..entry(EntryKind::File, name("a dir/b c")) },
            MetaEntry { mtime: Mtime::new(1_700_000_000, 0), mode: 0o700, ..entry(EntryKind::Folder, name("empty")) },
            entry(EntryKind::Symlink(b"../a b\n\xff".to_vec()), Name::from_bytes(b"l\tink").unwrap()),
            entry(EntryKind::Fifo, name("p")),
            entry(EntryKind::Socket, name("s")),
            entry(EntryKind::CharDevice, name("c")),
            entry(EntryKind::BlockDevice, name("b")),
            MetaEntry {
                kind: EntryKind::Unreadable {
                    code: ErrorCode::Denied,
                    message: "Permission denied (os error 13)".into(),
                },
                size: 0,
                mtime: Mtime::default(),
                mode: 0,
                name: name("secret"),
            },
        ];
        for e in entries {
            for form in [Form::Plain, Form::Escaped] {
                let mut out = Vec::new();
                if e.write(&mut out, form).is_err() {
                    assert_eq!(form, Form::Plain, "only version 1 cannot write {e:?}");
                    continue;
                }
                assert_eq!(MetaEntry::parse(&out[..out.len() - 1], form).unwrap(), e);
            }
        }
        let line = b"type=f size=5 mtime=1 mtime_ns=2 mode=644 later=x\tf";
        assert_eq!(MetaEntry::parse(line, Form::Plain).unwrap().size, 5, "unknown fields are ignored");
        for bad in [
            &b"type=f mtime=1 mode=644\tf"[..],
            b"type=x size=1 mtime=1 mode=644\tf",
            b"type=f size=1 mtime=1 mode=644 f",
            b"type=d mtime=1 mtime_ns=1000000000 mode=755\td",
            b"type=d mtime=1 mode=9\td",
            b"type=d mtime=1 mode=755\t../up",
            b"type=l mtime=1 mode=777\tl",
            b"type=l mtime=1 mode=777 target=a%00b\tl",
            b"type=e msg=x\te",
        ] {
            assert!(MetaEntry::parse(bad, Form::Escaped).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
