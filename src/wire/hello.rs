//! Agreeing on a protocol version and features: `hello`, the optional first request.
//!
//! ```text
//! hello <version> [<feature> ...]    the highest version the client speaks, and the features it would use
//!   -> OK <version> features=<f>,<f>  the version both speak (the lower of the two), and the
//!                                     features the server grants among those asked (maybe none)
//! ```
//!
//! A client that sends no `hello` gets version 1 with no features: today's behaviour, so every
//! client that predates `hello` is served as before. A server that predates it answers
//! `ERR unknown-command`, which the client reads the same way (version 1, no features) and the
//! connection stays in step. `hello` is only valid as the first request, so what was agreed holds
//! for the whole connection (TLS and tokens will need that). This version of ft speaks up to
//! version 2 and grants the features in [`SERVER_FEATURES`]; coming ones are named here when they
//! land. Version 2 changes how every name is written (escaped, one token: see [`Form`]) and adds
//! the verbs `walk`, `stat` and `mkdir`; a client that asked for it reads the agreed version
//! before it sends a name whose two forms differ. With `list-meta` a `list` line has `key=value`
//! fields, then a TAB, then the name (which holds no TAB in either form), and folders are listed
//! too; without it the line stays `<size> <mtime> <name>`.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};

use crate::name::{Name, NameError};

use super::line::ProtocolError;
use super::text::{malformed, parse_u64};

/// The highest protocol version this build speaks. Version 2 writes every name escaped
/// ([`Form::Escaped`]), so a name may hold any byte but NUL, and adds `walk`, `stat` and `mkdir`
/// and the mode of a `put`.
pub const PROTOCOL_VERSION: u32 = 2;

/// How names are written on a connection: as they are (version 1, which cannot carry a name
/// that is not UTF-8 or holds a control character), or escaped, one token each (version 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Plain,
    Escaped,
}

impl Form {
    /// A name as this form writes it; `Err` if it cannot be (version 1 and an unusual name).
    pub fn write(self, name: &Name) -> Result<Cow<'_, str>, NameError> {
        match self {
            Form::Plain => name.plain().map(Cow::Borrowed),
            Form::Escaped => Ok(name.escaped()),
        }
    }

    /// A name as this form reads it.
    pub fn read(self, s: &str) -> Result<Name, NameError> {
        match self {
            Form::Plain => Name::from_plain(s),
            Form::Escaped => Name::from_escaped(s),
        }
    }
}

/// A feature this build knows, by what it changes. On the wire each is its name (a token); a
/// peer may name features this build does not know, which are carried as text and never granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// A `get` or `resume` reply may leave the digest out of its header and send it after the
    /// body (see `header.rs`), so the first byte never waits for a whole file to be hashed.
    Trailer,
    /// A `list` reply is `OK`, the entries, then a final status line (`OK <count>`, or `ERR` if
    /// the listing could not be finished), so neither side holds a whole listing.
    ListEnd,
    /// A `list` reply names folders too and gives each entry its mode and exact modification
    /// time, as `key=value` fields, a TAB, then the name (see [`super::MetaEntry`]).
    ListMeta,
    /// The server understands `put` (whether it takes uploads is its own business). A client
    /// sends a `put` only where this was agreed: a server without it would read the body as
    /// requests.
    Put,
    /// The server understands `delta`: a download said as what the client's older copy lacks
    /// (see `delta.rs`).
    Delta,
    /// The server understands `signature` and `patch`: an upload said as what the server's copy
    /// lacks, compressed where `zstd` was agreed too (see `delta.rs`).
    Patch,
    /// The server compresses the bytes of a `delta` reply with zstd where that pays (records
    /// `z`, see `delta.rs`).
    Zstd,
}

impl Feature {
    /// Every feature this build knows.
    pub const ALL: [Feature; 7] = [
        Feature::Trailer,
        Feature::ListEnd,
        Feature::ListMeta,
        Feature::Put,
        Feature::Delta,
        Feature::Patch,
        Feature::Zstd,
    ];

    /// Its name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Feature::Trailer => "trailer",
            Feature::ListEnd => "list-end",
            Feature::ListMeta => "list-meta",
            Feature::Put => "put",
            Feature::Delta => "delta",
            Feature::Patch => "patch",
            Feature::Zstd => "zstd",
        }
    }

    /// The feature a name on the wire means, if this build knows it.
    pub fn parse(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl AsRef<str> for Feature {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// [`Feature::Trailer`]'s name.
pub const FEATURE_TRAILER: &str = Feature::Trailer.as_str();
/// [`Feature::ListEnd`]'s name.
pub const FEATURE_LIST_END: &str = Feature::ListEnd.as_str();
/// [`Feature::ListMeta`]'s name.
pub const FEATURE_LIST_META: &str = Feature::ListMeta.as_str();
/// [`Feature::Put`]'s name.
pub const FEATURE_PUT: &str = Feature::Put.as_str();

/// The features this server grants when asked: every one this build knows.
pub const SERVER_FEATURES: &[&str] = &[
    FEATURE_TRAILER,
    FEATURE_LIST_END,
    FEATURE_LIST_META,
    FEATURE_PUT,
    Feature::Delta.as_str(),
    Feature::Patch.as_str(),
    Feature::Zstd.as_str(),
];

/// Most features one `hello` may name.
pub const MAX_FEATURES: usize = 32;
/// Longest feature name, in bytes.
pub const MAX_FEATURE_LEN: usize = 32;

/// The arguments of a `hello` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The highest version the client speaks (at least 1).
    pub version: u32,
    /// Features the client would use, each a lowercase token (`[a-z0-9-]`).
    pub features: Vec<String>,
}

/// Whether `s` can name a feature: 1 to [`MAX_FEATURE_LEN`] of `a-z`, `0-9`, `-`.
pub fn is_feature(s: &str) -> bool {
    (1..=MAX_FEATURE_LEN).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Hello {
    /// Parses the argument of `hello`: a version, then features, separated by single spaces.
    pub fn parse_args(arg: &str) -> Option<Hello> {
        let mut parts = arg.split(' ');
        let version = parts.next().and_then(parse_u64).and_then(|v| u32::try_from(v).ok()).filter(|&v| v >= 1)?;
        let features: Vec<String> = parts.map(str::to_string).collect();
        if features.len() > MAX_FEATURES || !features.iter().all(|f| is_feature(f)) {
            return None;
        }
        Some(Hello { version, features })
    }

    /// What a server speaking up to `version` and offering `offered` agrees to.
    pub fn agree(&self, version: u32, offered: &[&str]) -> Agreed {
        let features = self.features.iter().filter(|f| offered.contains(&f.as_str())).cloned().collect();
        Agreed { version: self.version.min(version), features }
    }
}

impl fmt::Display for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hello {}", self.version)?;
        for feature in &self.features {
            write!(f, " {feature}")?;
        }
        Ok(())
    }
}

/// What both sides agreed to: the reply to `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    pub version: u32,
    pub features: Vec<String>,
}

impl Agreed {
    /// What holds without a `hello`, or with a server that predates it.
    pub fn baseline() -> Agreed {
        Agreed { version: 1, features: Vec::new() }
    }

    /// Whether `feature` (a [`Feature`], or any name) was agreed.
    pub fn has(&self, feature: impl AsRef<str>) -> bool {
        self.features.iter().any(|f| f == feature.as_ref())
    }

    /// How names are written on this connection.
    pub fn form(&self) -> Form {
        if self.version >= 2 { Form::Escaped } else { Form::Plain }
    }

    /// Writes `OK <version> features=<f>,<f>`.
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        writeln!(w, "OK {} features={}", self.version, self.features.join(","))
    }

    /// Parses the fields after `OK `; unknown `key=value` fields are ignored, as on every `OK`.
    pub fn parse(fields: &str) -> Result<Agreed, ProtocolError> {
        let bad = |what: &str| malformed(what, fields.as_bytes());
        let mut parts = fields.split(' ');
        let version = parts
            .next()
            .and_then(parse_u64)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| v >= 1)
            .ok_or_else(|| bad("expected a protocol version"))?;
        let mut features = Vec::new();
        for field in parts {
            if let Some(list) = field.strip_prefix("features=") {
                features = list.split(',').filter(|f| !f.is_empty()).map(str::to_string).collect();
                if features.len() > MAX_FEATURES || !features.iter().all(|f| is_feature(f)) {
                    return Err(bad("bad feature list"));
                }
            }
        }
        Ok(Agreed { version, features })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_is_named_once_and_granted() {
        for feature in Feature::ALL {
            assert_eq!(Feature::parse(feature.as_str()), Some(feature));
            assert!(is_feature(feature.as_str()) && SERVER_FEATURES.contains(&feature.as_str()));
        }
        assert_eq!(SERVER_FEATURES.len(), Feature::ALL.len());
        assert_eq!(Feature::parse("brotli"), None);
        let agreed = Agreed { version: 2, features: vec!["list-end".into()] };
        assert!(agreed.has(Feature::ListEnd) && !agreed.has(Feature::Trailer));
    }

    #[test]
    fn hello_arguments_are_a_version_then_feature_tokens() {
        let hello = Hello::parse_args("3 tls list-meta").unwrap();
        assert_eq!(hello, Hello { version: 3, features: vec!["tls".into(), "list-meta".into()] });
        assert_eq!(hello.to_string(), "hello 3 tls list-meta");
        assert_eq!(Hello::parse_args("1"), Some(Hello { version: 1, features: vec![] }));
        for bad in ["", "0", "-1", "x", "1 TLS", "1  tls", "1 tls,x", "4294967296", &format!("1{}", " f".repeat(33))] {
            assert_eq!(Hello::parse_args(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn agreement_is_the_lower_version_and_the_common_features() {
        let hello = Hello::parse_args("7 tls zstd").unwrap();
        let agreed = hello.agree(1, &["zstd", "tokens"]);
        assert_eq!(agreed.form(), Form::Plain);
        assert_eq!(hello.agree(2, &[]).form(), Form::Escaped);
        assert_eq!(agreed, Agreed { version: 1, features: vec!["zstd".into()] });
        assert!(agreed.has("zstd") && !agreed.has("tls"));
        let mut out = Vec::new();
        agreed.write(&mut out).unwrap();
        assert_eq!(out, b"OK 1 features=zstd\n");
        assert_eq!(Agreed::parse("1 features=zstd").unwrap(), agreed);
        assert_eq!(Agreed::parse("2 features= later=1").unwrap(), Agreed { version: 2, features: vec![] });
        assert_eq!(Agreed::parse("1").unwrap(), Agreed::baseline());
        assert!(Agreed::parse("0 features=").is_err());
        assert!(Agreed::parse("1 features=A").is_err());
    }
}
