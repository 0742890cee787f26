//! Names given on the command line or typed in the shell, as the server knows them.

use std::ffi::{OsStr, OsString};

use ft::name::Name;

use crate::exit::Usage;

/// Names given on the command line.
pub(crate) fn parse_names(names: &[OsString]) -> anyhow::Result<Vec<Name>> {
    names.iter().map(|n| arg_name(n)).collect()
}

/// A name given on the command line (or typed in the shell): any bytes but NUL, a trailing `/`
/// (as tab completion leaves on a folder) ignored.
pub(crate) fn arg_name(arg: &OsStr) -> anyhow::Result<Name> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = arg.as_bytes();
    let trimmed = match bytes.iter().rposition(|&b| b != b'/') {
        Some(end) => &bytes[..=end],
        None => bytes,
    };
    Name::from_bytes(trimmed)
        .map_err(|e| Usage(format!("{}: bad name: {e}", ft::escape::escape_bytes(bytes))))
        .map_err(Into::into)
}

/// A folder given on the command line: [`arg_name`], or the whole server for `.` (or nothing).
pub(crate) fn arg_folder(arg: &OsStr) -> anyhow::Result<Option<Name>> {
    use std::os::unix::ffi::OsStrExt;
    match arg.as_bytes() {
        b"" | b"." | b"./" | b"/" => Ok(None),
        _ => arg_name(arg).map(Some),
    }
}
