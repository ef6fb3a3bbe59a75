//! Domain names as the zone model keeps them: lower case, fully qualified, cheap to clone.

use std::fmt;
use std::sync::Arc;

/// A lower-case, fully qualified domain name without the trailing dot (`www.api.example.com`).
/// The root is the empty string. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>);

/// Why a string is not a valid domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty label in {0:?}")]
    EmptyLabel(String),
    #[error("label longer than 63 octets in {0:?}")]
    LabelTooLong(String),
    #[error("name longer than 253 characters: {0:?}")]
    TooLong(String),
    #[error("character {1:?} not allowed in name {0:?} (letters, digits, '-', '_' and '*' only)")]
    BadChar(String, char),
}

impl Name {
    /// Parses an absolute name; a trailing dot is optional. Case is folded.
    pub fn parse(s: &str) -> Result<Name, NameError> {
        let s = s.strip_suffix('.').unwrap_or(s);
        if s.is_empty() {
            return Ok(Name(Arc::from("")));
        }
        if s.len() > 253 {
            return Err(NameError::TooLong(s.to_string()));
        }
        for label in s.split('.') {
            if label.is_empty() {
                return Err(NameError::EmptyLabel(s.to_string()));
            }
            if label.len() > 63 {
                return Err(NameError::LabelTooLong(s.to_string()));
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '*'))
            {
                return Err(NameError::BadChar(s.to_string(), c));
            }
        }
        Ok(Name(Arc::from(s.to_ascii_lowercase())))
    }

    /// A name from text the caller guarantees is already lower-case and dot-free at the end
    /// (used on the query path, where the DNS parser has done the checking).
    pub fn from_lower(s: &str) -> Name {
        Name(Arc::from(s.strip_suffix('.').unwrap_or(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text as a shared string (for metric labels and keys that go by its address);
    /// `.clone()` it to keep it, without copying the text.
    pub fn arc(&self) -> &Arc<str> {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `self` equals `ancestor` or lies below it.
    pub fn is_subdomain_of(&self, ancestor: &Name) -> bool {
        is_subdomain(self.as_str(), ancestor.as_str())
    }

    /// The name with its first label removed; `None` for the root.
    pub fn parent(&self) -> Option<Name> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.find('.') {
            Some(i) => Name(Arc::from(&self.0[i + 1..])),
            None => Name(Arc::from("")),
        })
    }

    /// Length of the name in DNS wire format, uncompressed.
    pub fn wire_len(&self) -> usize {
        if self.is_root() { 1 } else { self.0.len() + 2 }
    }
}

/// Lets maps keyed by `Name` be searched with a `&str` (no allocation). Consistent with `Hash`
/// and `Eq`, which both see only the text.
impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.", self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({}.)", self.0)
    }
}

/// Whether the lower-case name `s` is `a` or below it (text without the trailing dot; the
/// root is empty).
pub fn is_subdomain(s: &str, a: &str) -> bool {
    if a.is_empty() || s == a {
        return true;
    }
    s.len() > a.len() && s.ends_with(a) && s.as_bytes()[s.len() - a.len() - 1] == b'.'
}
