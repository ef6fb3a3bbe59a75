//! RFC 1035 master files (the static part of an existing zone) → `SourceRecord`s → a `Draft`.
//!
//! The file is read here rather than by hickory's `serialize::txt::Parser`, which does not fit
//! an import: it stops at the first type it has no parser for (DNAME, DNSKEY, RRSIG, NSEC, LOC,
//! `TYPEnnn`), where an import has to list the record and go on; its errors carry no line; it
//! merges records into sets, hiding TTLs that differ; and its 0.26.3 lexer refuses `@` in RDATA
//! (`CNAME @`, `MX 10 @`), keeps the quotes of strings inside parentheses (a multi-line DKIM
//! TXT comes out as `"\"v=DKIM1; \""`) and decodes `\DDD` wrongly. From hickory we take
//! `parse_ttl` (TTL units: `1h`, `2d`) and its list of type mnemonics.
//!
//! Reading is two steps, as everywhere: `entries` splits the text into entries (a line, or
//! lines joined by parentheses) of words, with comments dropped, quoted strings kept whole and
//! the line each entry starts on; `Reader` then follows `$ORIGIN`, `$TTL`, `$INCLUDE`, the
//! owner, TTL and class that carry over from the entry before, and reads the RDATA of the nine
//! types steerdns serves (A, AAAA, CNAME, TXT, MX, SRV, CAA, NS, SOA). Other types, other
//! classes and `$GENERATE` become warnings.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hickory_proto::serialize::txt::parse_ttl;

use super::{
    Assembly, At, Draft, ImportError, Imported, Options, Problem, SourceRecord, Warning,
    supported_type,
};
use crate::zone::{Name, RData, RecordType, Soa};

/// How deep `$INCLUDE` may nest.
const MAX_INCLUDE_DEPTH: usize = 8;

/// Reads the master file at `path` as the zone `zone` and converts it.
pub fn load(path: &Path, zone: &str, options: &Options) -> Result<Imported, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        file: path.display().to_string(),
        source,
    })?;
    from_str(&text, path, zone, options)
}

/// Converts master-file text; `path` names it in messages and anchors relative `$INCLUDE`s.
pub fn from_str(
    text: &str,
    path: &Path,
    zone: &str,
    options: &Options,
) -> Result<Imported, ImportError> {
    draft(text, path, zone, options)?.finish()
}

/// The text as a `Draft`, before it is written out and checked.
pub fn draft(text: &str, path: &Path, zone: &str, options: &Options) -> Result<Draft, ImportError> {
    let file = path.display().to_string();
    let apex = match Name::parse(zone) {
        Ok(apex) if !apex.is_root() => apex,
        Ok(_) => return Err(one_problem(&file, "--zone: the root zone cannot be served")),
        Err(e) => return Err(one_problem(&file, &format!("--zone {zone}: {e}"))),
    };
    let mut reader = Reader {
        records: Vec::new(),
        warnings: Vec::new(),
        problems: Vec::new(),
        first_default_ttl: None,
    };
    let state = State {
        origin: apex.clone(),
        owner: None,
        default_ttl: None,
        last_ttl: None,
        class: "IN".to_string(),
    };
    reader.read(text, &file, path, state, 0);
    // A file that does not read is reported alone: what the zone as a whole lacks would only
    // be an echo of the lines that failed.
    if !reader.problems.is_empty() {
        return Err(ImportError::Source(reader.problems));
    }
    super::assemble(
        Assembly {
            apex: &apex,
            from: format!("bind {file}"),
            file: file.clone(),
            preferred_ttl: reader.first_default_ttl,
            options,
            options_at: At::new("--nameserver", None),
        },
        reader.records,
        reader.warnings,
        Vec::new(),
    )
}

fn one_problem(file: &str, message: &str) -> ImportError {
    ImportError::Source(vec![Problem {
        at: At::new(file, None),
        message: message.to_string(),
    }])
}

/// One word of an entry. A quoted string keeps its escapes and loses its quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    quoted: bool,
}

/// A line of the file, or several joined by parentheses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Entry {
    /// Where it starts (1-based).
    line: usize,
    /// It starts with a blank: the owner is the previous entry's.
    blank_owner: bool,
    words: Vec<Word>,
}

/// Splits master-file text into entries: comments (`;` to the end of the line) dropped, quoted
/// strings kept whole (line breaks and `;` included), line breaks inside parentheses ignored.
/// An error is (line, message).
fn entries(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    // Open parentheses, and the line of the outermost.
    let mut depth = 0usize;
    let mut opened_on = 0;
    let mut cur = Entry::default();
    let mut word: Option<String> = None;
    let mut line_start = true;

    fn flush(word: &mut Option<String>, cur: &mut Entry) {
        if let Some(text) = word.take() {
            cur.words.push(Word {
                text,
                quoted: false,
            });
        }
    }

    while let Some(c) = chars.next() {
        if line_start {
            line_start = false;
            if depth == 0 {
                cur.line = line;
                cur.blank_owner = c == ' ' || c == '\t';
            }
        }
        match c {
            '"' if word.is_none() => {
                let start = line;
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err((start, "a quoted string is not closed".to_string())),
                        Some('"') => break,
                        Some('\\') => {
                            s.push('\\');
                            match chars.next() {
                                Some(n) => {
                                    line += usize::from(n == '\n');
                                    s.push(n);
                                }
                                None => {
                                    return Err((start, "a quoted string is not closed".into()));
                                }
                            }
                        }
                        Some(n) => {
                            line += usize::from(n == '\n');
                            s.push(n);
                        }
                    }
                }
                cur.words.push(Word {
                    text: s,
                    quoted: true,
                });
            }
            '\\' => {
                let w = word.get_or_insert_with(String::new);
                w.push('\\');
                if let Some(n) = chars.next() {
                    line += usize::from(n == '\n');
                    w.push(n);
                }
            }
            ';' => {
                flush(&mut word, &mut cur);
                while chars.next_if(|n| *n != '\n').is_some() {}
            }
            '(' => {
                flush(&mut word, &mut cur);
                if depth == 0 {
                    opened_on = line;
                }
                depth += 1;
            }
            ')' => {
                flush(&mut word, &mut cur);
                if depth == 0 {
                    return Err((line, "')' without an opening '('".to_string()));
                }
                depth -= 1;
            }
            '\n' => {
                flush(&mut word, &mut cur);
                line += 1;
                line_start = true;
                if depth == 0 && !cur.words.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c if c.is_whitespace() => flush(&mut word, &mut cur),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    flush(&mut word, &mut cur);
    if depth > 0 {
        return Err((opened_on, "'(' is not closed".to_string()));
    }
    if !cur.words.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// What carries over from one entry to the next within a file.
#[derive(Debug, Clone)]
struct State {
    origin: Name,
    owner: Option<Name>,
    /// From `$TTL`.
    default_ttl: Option<u32>,
    /// The last TTL written on a record (RFC 1035: the default without `$TTL`).
    last_ttl: Option<u32>,
    /// The last class written on a record.
    class: String,
}

struct Reader {
    records: Vec<SourceRecord>,
    warnings: Vec<Warning>,
    problems: Vec<Problem>,
    /// The first `$TTL`: the zone's TTL when it has no apex NS set to take it from.
    first_default_ttl: Option<u32>,
}

impl Reader {
    fn problem(&mut self, file: &str, line: usize, message: impl Into<String>) {
        self.problems.push(Problem {
            at: At::new(file, Some(line)),
            message: message.into(),
        });
    }

    fn warn(&mut self, file: &str, line: usize, subject: String, message: impl Into<String>) {
        self.warnings.push(Warning {
            at: At::new(file, Some(line)),
            subject,
            message: message.into(),
        });
    }

    fn read(&mut self, text: &str, file: &str, path: &Path, mut st: State, depth: usize) {
        let entries = match entries(text) {
            Ok(e) => e,
            Err((line, message)) => {
                self.problem(file, line, message);
                return;
            }
        };
        for entry in entries {
            let line = entry.line;
            // `entries` keeps no entry without words, so the first is there.
            if !entry.blank_owner && entry.words[0].text.starts_with('$') && !entry.words[0].quoted
            {
                self.directive(&entry, file, path, &mut st, depth);
                continue;
            }
            let mut words = entry.words.iter();
            let owner = if entry.blank_owner {
                match &st.owner {
                    Some(o) => o.clone(),
                    None => {
                        self.problem(
                            file,
                            line,
                            "the entry starts with a blank, but no name comes before it to repeat",
                        );
                        continue;
                    }
                }
            } else {
                // An entry has at least one word (`entries` keeps no empty ones).
                let Some(w) = words.next() else { continue };
                match domain(&w.text, &st.origin) {
                    Ok(n) => n,
                    Err(e) => {
                        self.problem(file, line, format!("name {:?}: {e}", w.text));
                        st.owner = None;
                        continue;
                    }
                }
            };
            st.owner = Some(owner.clone());

            // [TTL] [class] type, the first two in either order.
            let mut ttl = None;
            let mut class = None;
            let rtype = loop {
                let Some(w) = words.next() else {
                    self.problem(file, line, format!("{owner}: no record type"));
                    break None;
                };
                if ttl.is_none()
                    && w.text.starts_with(|c: char| c.is_ascii_digit())
                    && let Ok(t) = parse_ttl(&w.text)
                {
                    ttl = Some(t);
                    continue;
                }
                let upper = w.text.to_ascii_uppercase();
                if class.is_none() && matches!(upper.as_str(), "IN" | "CH" | "HS" | "NONE") {
                    class = Some(upper);
                    continue;
                }
                break Some(upper);
            };
            let Some(rtype) = rtype else { continue };
            let data: Vec<&Word> = words.collect();

            let ttl = match ttl {
                Some(t) => {
                    st.last_ttl = Some(t);
                    t
                }
                None => match st.default_ttl.or(st.last_ttl) {
                    Some(t) => t,
                    None => {
                        self.problem(
                            file,
                            line,
                            format!(
                                "{owner} {rtype}: no TTL, and no $TTL line or earlier TTL to take \
                                 it from"
                            ),
                        );
                        continue;
                    }
                },
            };
            if let Some(c) = class {
                st.class = c;
            }
            let subject = super::subject(&owner, &rtype);
            if st.class != "IN" {
                let class = st.class.clone();
                self.warn(
                    file,
                    line,
                    subject,
                    format!("class {class}: steerdns serves class IN only; left out"),
                );
                continue;
            }
            let Some(known) = supported_type(&rtype) else {
                match unsupported_type(&rtype) {
                    Some(why) => self.warn(file, line, subject, why),
                    None => self.problem(
                        file,
                        line,
                        format!("{owner}: {rtype:?} is not a record type"),
                    ),
                }
                continue;
            };
            match rdata(known, &data, &st.origin) {
                Ok(Rdata::Data(data)) => self.records.push(SourceRecord {
                    owner,
                    ttl,
                    data,
                    at: At::new(file, Some(line)),
                }),
                Ok(Rdata::Unsupported(why)) => self.warn(file, line, subject, why),
                Err(e) => self.problem(file, line, format!("{subject}: {e}")),
            }
        }
    }

    fn directive(&mut self, entry: &Entry, file: &str, path: &Path, st: &mut State, depth: usize) {
        let line = entry.line;
        let name = entry.words[0].text.to_ascii_uppercase();
        let args = &entry.words[1..];
        match (name.as_str(), args) {
            ("$ORIGIN", [origin]) => match domain(&origin.text, &st.origin) {
                Ok(n) => st.origin = n,
                Err(e) => self.problem(file, line, format!("$ORIGIN {:?}: {e}", origin.text)),
            },
            ("$TTL", [ttl]) => match parse_ttl(&ttl.text) {
                Ok(t) => {
                    st.default_ttl = Some(t);
                    self.first_default_ttl.get_or_insert(t);
                }
                Err(e) => self.problem(file, line, format!("$TTL {:?}: {e}", ttl.text)),
            },
            ("$INCLUDE", [target, rest @ ..]) if rest.len() <= 1 => {
                if depth >= MAX_INCLUDE_DEPTH {
                    self.problem(
                        file,
                        line,
                        format!("$INCLUDE nested more than {MAX_INCLUDE_DEPTH} deep"),
                    );
                    return;
                }
                let included: PathBuf = match path.parent() {
                    Some(dir) if Path::new(&target.text).is_relative() => dir.join(&target.text),
                    _ => PathBuf::from(&target.text),
                };
                let origin = match rest.first() {
                    Some(o) => match domain(&o.text, &st.origin) {
                        Ok(n) => n,
                        Err(e) => {
                            self.problem(file, line, format!("$INCLUDE origin {:?}: {e}", o.text));
                            return;
                        }
                    },
                    None => st.origin.clone(),
                };
                match std::fs::read_to_string(&included) {
                    Ok(text) => {
                        // RFC 1035 section 5.1: an included file never changes the origin of
                        // the one that includes it.
                        let inner = State {
                            origin,
                            owner: None,
                            ..st.clone()
                        };
                        let name = included.display().to_string();
                        self.read(&text, &name, &included, inner, depth + 1);
                    }
                    Err(e) => self.problem(
                        file,
                        line,
                        format!("$INCLUDE {}: cannot read: {e}", included.display()),
                    ),
                }
            }
            ("$GENERATE", _) => self.warn(
                file,
                line,
                "$GENERATE".to_string(),
                "BIND's $GENERATE is not expanded by the import; left out (`named-compilezone \
                 -o - ZONE FILE` prints the zone with it expanded)",
            ),
            ("$ORIGIN" | "$TTL" | "$INCLUDE", _) => {
                self.problem(file, line, format!("{name}: wrong number of arguments"))
            }
            _ => self.problem(file, line, format!("unknown directive {name}")),
        }
    }
}

/// Why a type steerdns does not serve is left out; `None` for a word that is no type at all.
fn unsupported_type(rtype: &str) -> Option<String> {
    const DNSSEC: [&str; 9] = [
        "DNSKEY",
        "RRSIG",
        "NSEC",
        "NSEC3",
        "NSEC3PARAM",
        "DS",
        "CDS",
        "CDNSKEY",
        "KEY",
    ];
    // Types hickory has no mnemonic for, but zone files carry.
    const OTHER: [&str; 24] = [
        "LOC", "RP", "AFSDB", "SPF", "URI", "DLV", "APL", "DHCID", "IPSECKEY", "KX", "EUI48",
        "EUI64", "TA", "NID", "L32", "L64", "LP", "ZONEMD", "X25", "ISDN", "RT", "WKS", "MINFO",
        "A6",
    ];
    let generic = rtype
        .strip_prefix("TYPE")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let known = hickory_proto::rr::RecordType::from_str(rtype).is_ok() || OTHER.contains(&rtype);
    if DNSSEC.contains(&rtype) {
        Some("DNSSEC: steerdns does not sign zones; left out".to_string())
    } else if rtype == "SPF" {
        Some("type SPF is obsolete (RFC 7208): publish the text as TXT; left out".to_string())
    } else if generic {
        Some("generic (RFC 3597) records are not imported; left out".to_string())
    } else if matches!(rtype, "ANY" | "AXFR" | "IXFR" | "OPT" | "TSIG" | "*") {
        None
    } else if known {
        Some(format!("steerdns serves no {rtype} records; left out"))
    } else {
        None
    }
}

/// A record's data, or why steerdns cannot hold it.
enum Rdata {
    Data(RData),
    Unsupported(String),
}

/// Reads the RDATA of one of the types steerdns serves.
fn rdata(rtype: RecordType, words: &[&Word], origin: &Name) -> Result<Rdata, String> {
    let count = |n: usize, form: &str| -> Result<(), String> {
        if words.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{rtype} takes {form}, but {} word(s) follow",
                words.len()
            ))
        }
    };
    let number = |w: &Word, what: &str| -> Result<u16, String> {
        w.text
            .parse::<u16>()
            .map_err(|_| format!("{what} {:?} is not a number from 0 to 65535", w.text))
    };
    let data = match rtype {
        RecordType::A => {
            count(1, "an IPv4 address")?;
            let ip = Ipv4Addr::from_str(&words[0].text)
                .map_err(|_| format!("{:?} is not an IPv4 address", words[0].text))?;
            RData::A(ip)
        }
        RecordType::Aaaa => {
            count(1, "an IPv6 address")?;
            let ip = Ipv6Addr::from_str(&words[0].text)
                .map_err(|_| format!("{:?} is not an IPv6 address", words[0].text))?;
            RData::Aaaa(ip)
        }
        RecordType::Cname => {
            count(1, "one name")?;
            RData::Cname(domain(&words[0].text, origin)?)
        }
        RecordType::Ns => {
            count(1, "one name")?;
            RData::Ns(domain(&words[0].text, origin)?)
        }
        RecordType::Mx => {
            count(2, "PREFERENCE EXCHANGE")?;
            RData::Mx {
                preference: number(words[0], "preference")?,
                exchange: domain(&words[1].text, origin)?,
            }
        }
        RecordType::Srv => {
            count(4, "PRIORITY WEIGHT PORT TARGET")?;
            RData::Srv {
                priority: number(words[0], "priority")?,
                weight: number(words[1], "weight")?,
                port: number(words[2], "port")?,
                target: domain(&words[3].text, origin)?,
            }
        }
        RecordType::Txt => {
            if words.is_empty() {
                return Err("TXT takes one or more strings, but none follow".to_string());
            }
            let mut strings = Vec::with_capacity(words.len());
            for w in words {
                match String::from_utf8(octets(&w.text)?) {
                    Ok(s) => strings.push(s),
                    Err(_) => {
                        return Ok(Rdata::Unsupported(
                            "the text is not UTF-8, which the zone format cannot hold; left out"
                                .to_string(),
                        ));
                    }
                }
            }
            RData::Txt(strings)
        }
        RecordType::Caa => {
            count(3, "FLAGS TAG VALUE")?;
            let flags = words[0]
                .text
                .parse::<u8>()
                .map_err(|_| format!("flags {:?} is not a number from 0 to 255", words[0].text))?;
            if flags & 0x7f != 0 {
                return Ok(Rdata::Unsupported(format!(
                    "flags {flags}: steerdns keeps only the critical flag (128); left out"
                )));
            }
            let Ok(value) = String::from_utf8(octets(&words[2].text)?) else {
                return Ok(Rdata::Unsupported(
                    "the value is not UTF-8, which the zone format cannot hold; left out"
                        .to_string(),
                ));
            };
            RData::Caa {
                critical: flags & 0x80 != 0,
                tag: words[1].text.clone(),
                value,
            }
        }
        RecordType::Soa => {
            count(7, "MNAME RNAME SERIAL REFRESH RETRY EXPIRE MINIMUM")?;
            let serial = words[2]
                .text
                .parse::<u32>()
                .map_err(|_| format!("serial {:?} is not a number", words[2].text))?;
            let time = |w: &Word, what: &str| {
                parse_ttl(&w.text).map_err(|_| format!("{what} {:?} is not a time", w.text))
            };
            RData::Soa(Soa {
                mname: domain(&words[0].text, origin)?,
                rname: domain(&words[1].text, origin)?,
                serial,
                refresh: time(words[3], "refresh")?,
                retry: time(words[4], "retry")?,
                expire: time(words[5], "expire")?,
                minimum: time(words[6], "minimum")?,
            })
        }
    };
    Ok(Rdata::Data(data))
}

/// A domain name as written: `@` (the origin), absolute with a final dot, or relative to the
/// origin. Escapes (`\X`, `\DDD`) are decoded; what steerdns names cannot hold (a dot inside a
/// label, a space, non-ASCII) is an error.
fn domain(text: &str, origin: &Name) -> Result<Name, String> {
    if text == "@" {
        return Ok(origin.clone());
    }
    let mut decoded = String::with_capacity(text.len());
    let mut chars = text.chars();
    let mut absolute = false;
    while let Some(c) = chars.next() {
        absolute = false;
        match c {
            '\\' => {
                let b = escape(&mut chars)?;
                if b == b'.' {
                    return Err("a dot inside a label cannot be served".to_string());
                }
                decoded.push(char::from(b));
            }
            '.' => {
                absolute = true;
                decoded.push('.');
            }
            c => decoded.push(c),
        }
    }
    let full = if absolute || text == "." {
        decoded
    } else if origin.is_root() {
        format!("{decoded}.")
    } else {
        format!("{decoded}.{}.", origin.as_str())
    };
    Name::parse(&full).map_err(|e| e.to_string())
}

/// The octets of a <character-string> (RFC 1035 section 5.1), its escapes decoded: `\DDD` is
/// the octet DDD (decimal), `\X` is X.
fn octets(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(escape(&mut chars)?);
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    Ok(out)
}

/// The octet an escape stands for, the backslash already read: `\DDD` or `\X`. A non-ASCII
/// `\X` is refused rather than cut to one octet.
fn escape(chars: &mut std::str::Chars<'_>) -> Result<u8, String> {
    let Some(first) = chars.next() else {
        return Err("a backslash at the end".to_string());
    };
    if let Some(d1) = first.to_digit(10) {
        let rest: Vec<u32> = chars
            .clone()
            .take(2)
            .filter_map(|c| c.to_digit(10))
            .collect();
        if rest.len() != 2 {
            return Err(format!(
                "\\{first}: a numeric escape has three digits (\\DDD)"
            ));
        }
        chars.nth(1);
        let value = d1 * 100 + rest[0] * 10 + rest[1];
        return u8::try_from(value).map_err(|_| format!("\\{value}: above 255"));
    }
    u8::try_from(first).map_err(|_| format!("\\{first}: escapes stand for one octet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(e: &Entry) -> Vec<&str> {
        e.words.iter().map(|w| w.text.as_str()).collect()
    }

    #[test]
    fn entries_join_parentheses_drop_comments_and_keep_quoted_strings_whole() {
        let text = "\
$ORIGIN example.com. ; a comment
@ IN SOA ns1 hostmaster (
        1 ; serial
        2 3 4 5 )
\tIN TXT \"a;b (c)\" \"say \\\"hi\\\"\"
; only a comment

www A 192.0.2.1";
        let e = entries(text).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(
            (e[0].line, words(&e[0])),
            (1, vec!["$ORIGIN", "example.com."])
        );
        assert_eq!(
            (e[1].line, e[1].blank_owner, words(&e[1])),
            (
                2,
                false,
                vec![
                    "@",
                    "IN",
                    "SOA",
                    "ns1",
                    "hostmaster",
                    "1",
                    "2",
                    "3",
                    "4",
                    "5"
                ]
            )
        );
        assert_eq!(
            (e[2].line, e[2].blank_owner, words(&e[2])),
            (5, true, vec!["IN", "TXT", "a;b (c)", "say \\\"hi\\\""])
        );
        assert!(e[2].words[2].quoted && !e[2].words[1].quoted);
        assert_eq!(
            (e[3].line, words(&e[3])),
            (8, vec!["www", "A", "192.0.2.1"])
        );
    }

    #[test]
    fn entries_report_unclosed_quotes_and_parentheses_where_they_open() {
        assert_eq!(
            entries("a A 1.2.3.4\nb TXT \"open\n\nmore").unwrap_err(),
            (2, "a quoted string is not closed".to_string())
        );
        assert_eq!(
            entries("a A 1.2.3.4\n\nb SOA ( 1 2\n 3").unwrap_err(),
            (3, "'(' is not closed".to_string())
        );
        assert_eq!(
            entries("a A 1.2.3.4 )").unwrap_err(),
            (1, "')' without an opening '('".to_string())
        );
    }

    #[test]
    fn a_quoted_string_may_span_lines_and_the_count_goes_on() {
        let e = entries("a TXT \"one\ntwo\"\nb A 192.0.2.1\n").unwrap();
        assert_eq!(e[0].words[2].text, "one\ntwo");
        assert_eq!(e[1].line, 3);
    }

    #[test]
    fn names_resolve_against_the_origin_and_decode_escapes() {
        let origin = Name::parse("example.com").unwrap();
        let table: &[(&str, Result<&str, &str>)] = &[
            ("@", Ok("example.com")),
            ("www", Ok("www.example.com")),
            ("mail.example.net.", Ok("mail.example.net")),
            ("_sip._tcp", Ok("_sip._tcp.example.com")),
            ("WWW", Ok("www.example.com")),
            ("ns\\065", Ok("nsa.example.com")),
            ("\\119ww", Ok("www.example.com")),
            (".", Ok("")),
            ("a\\.b", Err("a dot inside a label cannot be served")),
            ("a\\ b", Err("character ' ' not allowed")),
            ("x\\25", Err("three digits")),
            ("x\\300", Err("above 255")),
        ];
        for (text, want) in table {
            match (domain(text, &origin), want) {
                (Ok(n), Ok(w)) => assert_eq!(n.as_str(), *w, "{text}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{text}: {e}"),
                (got, _) => panic!("{text}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn character_strings_decode_decimal_escapes() {
        assert_eq!(octets("a\\059b").unwrap(), b"a;b");
        assert_eq!(octets("say \\\"hi\\\"").unwrap(), b"say \"hi\"");
        assert_eq!(octets("\\255").unwrap(), [255]);
        assert_eq!(octets("é").unwrap(), "é".as_bytes());
    }

    fn import(text: &str) -> Result<Draft, ImportError> {
        draft(
            text,
            Path::new("zone.db"),
            "example.com",
            &Options::default(),
        )
    }

    const HEAD: &str =
        "$TTL 3600\n@ SOA ns1 hostmaster 1 7200 3600 1209600 300\n  NS ns1\nns1 A 192.0.2.53\n";

    fn problems(text: &str) -> Vec<String> {
        match import(text) {
            Ok(_) => panic!("imported: {text}"),
            Err(ImportError::Source(p)) => p.iter().map(Problem::to_string).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn ttl_and_class_come_from_the_record_the_ttl_line_or_the_record_before() {
        let text = "\
@ 600 IN SOA ns1 hostmaster 1 7200 3600 1209600 300
  NS ns1
ns1 A 192.0.2.53
a IN 60 A 192.0.2.1
b A 192.0.2.2
$TTL 1h
c A 192.0.2.3
d 1d IN A 192.0.2.4
";
        let d = import(text).unwrap();
        let ttl = |key: &str| d.yaml.records[key].ttl;
        // The zone takes the apex NS set's TTL (600): `ns1` is glue, so it has no key.
        assert_eq!(d.yaml.ttl, 600);
        assert_eq!(ttl("a"), Some(60));
        assert_eq!(ttl("b"), Some(60), "the last TTL written, without $TTL");
        assert_eq!(ttl("c"), Some(3600), "$TTL");
        assert_eq!(ttl("d"), Some(86400));
    }

    #[test]
    fn bad_lines_are_problems_with_their_line() {
        let p = problems(&format!("{HEAD}www A 300.1.1.1\nmail MX ten mail\n"));
        assert_eq!(
            p,
            [
                "zone.db:5: www.example.com. A: \"300.1.1.1\" is not an IPv4 address",
                "zone.db:6: mail.example.com. MX: preference \"ten\" is not a number from 0 to 65535",
            ]
        );
        let p = problems(&format!("{HEAD}www IN 300.1.1.1\n"));
        assert_eq!(
            p,
            ["zone.db:5: www.example.com.: \"300.1.1.1\" is not a record type"]
        );
        let p = problems(&format!("{HEAD}www.example.org. A 192.0.2.1\n"));
        assert_eq!(
            p,
            ["zone.db:5: www.example.org. A is outside the zone example.com."]
        );
        // Alone: that the zone has no NS records then is beside the point.
        let p = problems("www A 192.0.2.1\n");
        assert_eq!(
            p,
            [
                "zone.db:1: www.example.com. A: no TTL, and no $TTL line or earlier TTL to take it from",
            ]
        );
    }

    #[test]
    fn unsupported_types_classes_and_wildcards_are_warnings() {
        // The class carries over to the entries after it, so CH comes last.
        let text = format!(
            "{HEAD}ptr PTR host.example.com.\nkey DNSKEY 257 3 13 AAAA\n*.dev A 192.0.2.9\n\
             srv TYPE65534 \\# 0\n$GENERATE 1-2 h$ A 192.0.2.$\nchaos CH TXT hello\n"
        );
        let d = import(&text).unwrap();
        let w: Vec<String> = d.warnings.iter().map(Warning::to_string).collect();
        assert_eq!(
            w,
            [
                "zone.db:5: ptr.example.com. PTR: steerdns serves no PTR records; left out",
                "zone.db:6: key.example.com. DNSKEY: DNSSEC: steerdns does not sign zones; left out",
                "zone.db:7: *.dev.example.com. A: wildcard: steerdns does no wildcard synthesis (it would answer only the literal name `*`); left out",
                "zone.db:8: srv.example.com. TYPE65534: generic (RFC 3597) records are not imported; left out",
                "zone.db:9: $GENERATE: BIND's $GENERATE is not expanded by the import; left out (`named-compilezone -o - ZONE FILE` prints the zone with it expanded)",
                "zone.db:10: chaos.example.com. TXT: class CH: steerdns serves class IN only; left out",
            ]
        );
        assert!(d.yaml.records.is_empty(), "{:?}", d.yaml.records);
    }

    #[test]
    fn txt_strings_are_joined_and_the_change_is_listed() {
        let text = format!(
            "{HEAD}dkim TXT ( \"v=DKIM1; k=rsa; \"\n  \"p=MIGf\" )\nspf TXT \"v=spf1 -all\"\n"
        );
        let d = import(&text).unwrap();
        assert_eq!(d.yaml.records["dkim"].txt, ["v=DKIM1; k=rsa; p=MIGf"]);
        assert_eq!(d.yaml.records["spf"].txt, ["v=spf1 -all"]);
        let w: Vec<String> = d.warnings.iter().map(Warning::to_string).collect();
        assert_eq!(
            w,
            [
                "zone.db:5: dkim.example.com. TXT: 2 character string(s) served as 1 (split at 255 octets); clients that join them read the same text"
            ]
        );
    }

    #[test]
    fn ttls_that_differ_at_one_name_become_the_lowest() {
        let text = format!("{HEAD}www 300 A 192.0.2.1\nwww 60 TXT x\nwww 300 A 192.0.2.2\n");
        let d = import(&text).unwrap();
        assert_eq!(d.yaml.records["www"].ttl, Some(60));
        assert_eq!(
            d.warnings[0].to_string(),
            "zone.db:5: www.example.com.: TTLs differ (A 300, TXT 60): all served with 60, the lowest (steerdns has one TTL per name)"
        );
    }

    #[test]
    fn delegations_keep_ns_and_glue_and_list_what_lies_below() {
        let text = format!(
            "{HEAD}sub NS ns.sub\n    NS ns.other.net.\n    TXT occluded\n\
             ns.sub A 192.0.2.77\nhost.sub A 192.0.2.78\nhost.sub MX 10 mail\n"
        );
        let d = import(&text).unwrap();
        assert_eq!(
            d.yaml.records["sub"].ns,
            ["ns.sub.example.com.", "ns.other.net."]
        );
        assert_eq!(d.yaml.records["ns.sub"].a, ["192.0.2.77"]);
        assert_eq!(d.yaml.records["host.sub"].a, ["192.0.2.78"]);
        let w: Vec<String> = d.warnings.iter().map(Warning::to_string).collect();
        assert_eq!(
            w,
            [
                "zone.db:7: sub.example.com. TXT: sub.example.com. is a delegation: steerdns serves only its NS records and glue there; left out",
                "zone.db:10: host.sub.example.com. MX: below the delegation sub.example.com.: the child zone's servers answer for it, so only glue (A/AAAA) is kept; left out",
            ]
        );
    }

    #[test]
    fn cname_beside_other_data_is_a_problem() {
        let p = problems(&format!("{HEAD}www CNAME @\nwww TXT x\n"));
        assert_eq!(
            p,
            [
                "zone.db:5: www.example.com. CNAME: a CNAME cannot stand beside other data (TXT at zone.db:6; RFC 1034 section 3.6.2)"
            ]
        );
    }

    #[test]
    fn include_reads_a_file_beside_it_with_its_own_origin_and_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("hosts.inc"),
            "; hosts of the office\nprinter A 192.0.2.80\nbad A 192.0.2.999\n",
        )
        .unwrap();
        let main = dir.path().join("zone.db");
        let text = format!("{HEAD}$INCLUDE hosts.inc office\nafter A 192.0.2.81\n");
        let e = draft(&text, &main, "example.com", &Options::default()).unwrap_err();
        let inc = dir.path().join("hosts.inc").display().to_string();
        assert_eq!(
            e.to_string(),
            format!("{inc}:3: bad.office.example.com. A: \"192.0.2.999\" is not an IPv4 address")
        );
        std::fs::write(dir.path().join("hosts.inc"), "printer A 192.0.2.80\n").unwrap();
        let d = draft(&text, &main, "example.com", &Options::default()).unwrap();
        assert_eq!(d.yaml.records["printer.office"].a, ["192.0.2.80"]);
        // The including file's origin is untouched.
        assert_eq!(d.yaml.records["after"].a, ["192.0.2.81"]);
        let missing = format!("{HEAD}$INCLUDE nowhere.inc\n");
        let e = draft(&missing, &main, "example.com", &Options::default()).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "{}:5: $INCLUDE {}: cannot read:",
                main.display(),
                dir.path().join("nowhere.inc").display()
            )),
            "{e}"
        );
    }

    #[test]
    fn in_zone_name_servers_take_their_addresses_as_glue_and_nothing_else() {
        let text = "$TTL 3600\n@ NS ns1\n@ NS ns2\nns1 A 192.0.2.53\nns1 300 AAAA 2001:db8::53\n\
                    ns1 TXT hello\n";
        let p = problems(text);
        assert_eq!(
            p,
            [
                "zone.db:3: name server ns2.example.com. is inside the zone but has no A or AAAA record (glue)"
            ]
        );
        let text =
            "$TTL 3600\n@ NS ns1\nns1 A 192.0.2.53\nns1 300 AAAA 2001:db8::53\nns1 TXT hello\n";
        let d = import(text).unwrap();
        assert_eq!(
            d.yaml.nameservers["ns1.example.com."],
            ["192.0.2.53", "2001:db8::53"]
        );
        assert!(!d.yaml.records.contains_key("ns1"));
        let w: Vec<String> = d.warnings.iter().map(Warning::to_string).collect();
        assert_eq!(
            w,
            [
                "zone.db:4: ns1.example.com. AAAA: TTL 300 served as 3600: a name server's addresses (glue) take the zone's TTL",
                "zone.db:5: ns1.example.com. TXT: ns1.example.com. is a name server of the zone: steerdns serves only its addresses (glue) there; left out",
            ]
        );
        // --nameserver replaces the source's set, and says so.
        let options = Options {
            nameservers: vec!["ns.example.net".into()],
        };
        let d = draft(text, Path::new("zone.db"), "example.com", &options).unwrap();
        assert_eq!(
            d.yaml.nameservers.keys().collect::<Vec<_>>(),
            ["ns.example.net."]
        );
        assert_eq!(
            d.yaml.records["ns1"].txt,
            ["hello"],
            "no longer a name server"
        );
        assert_eq!(
            d.warnings[0].to_string(),
            "zone.db:2: example.com. NS: replaced by --nameserver: ns1.example.com. (the source's)"
        );
    }

    #[test]
    fn soa_at_the_wrong_name_or_twice_is_a_problem_and_caa_flags_are_listed() {
        let p = problems(&format!(
            "{HEAD}@ SOA ns1 hostmaster 2 1 1 1 1\nwww SOA ns1 hostmaster 1 1 1 1 1\n"
        ));
        assert_eq!(
            p,
            [
                "zone.db:5: a second SOA (the first is at zone.db:2)",
                "zone.db:6: www.example.com.: the SOA belongs at the apex example.com.",
            ]
        );
        let d = import(&format!(
            "{HEAD}@ CAA 1 issue ca.example\n@ CAA 0 \"is-sue\" ca.example\n"
        ))
        .unwrap();
        let w: Vec<String> = d.warnings.iter().map(Warning::to_string).collect();
        assert_eq!(
            w,
            [
                "zone.db:5: example.com. CAA: flags 1: steerdns keeps only the critical flag (128); left out",
                "zone.db:6: example.com. CAA: tag \"is-sue\" is not 1 to 15 letters and digits (RFC 8659); left out",
            ]
        );
    }

    #[test]
    fn at_in_rdata_is_the_origin() {
        let text = format!("{HEAD}www CNAME @\n$ORIGIN sub.example.com.\nmx MX 10 @\n");
        let d = import(&text).unwrap();
        assert_eq!(d.yaml.records["www"].cname.as_deref(), Some("example.com."));
        assert_eq!(d.yaml.records["mx.sub"].mx, ["10 sub.example.com."]);
    }

    #[test]
    fn the_yaml_loads_and_reads_as_written() {
        let text = "\
$ORIGIN example.com.
$TTL 3600
@       IN SOA  ns1 hostmaster.example.com. ( 2026120101 7200 3600 1209600 300 )
        IN NS   ns1
        IN NS   ns2.example.net.
        IN MX   10 mail
        IN TXT  \"v=spf1 mx -all\"
        IN CAA  0 issue \"letsencrypt.org\"
ns1     IN A    192.0.2.53
mail 300 IN A   192.0.2.25
www     IN CNAME @
_sip._tcp IN SRV 10 60 5060 sip.example.net.
ptr     IN PTR  host.example.net.
";
        let imported = from_str(
            text,
            Path::new("zone.db"),
            "example.com",
            &Options::default(),
        )
        .unwrap();
        assert_eq!(
            imported.yaml,
            r#"# Imported with `steerdns import bind zone.db`.
# Left out or served differently (1):
#   zone.db:13: ptr.example.com. PTR: steerdns serves no PTR records; left out

zone: example.com
ttl: 3600
soa:
  primary: ns1.example.com.
  contact: hostmaster.example.com.
  serial: 2026120101
  refresh: 7200
  retry: 3600
  expire: 1209600
  minimum: 300
  ttl: 3600
nameservers:
  ns1.example.com.:
  - 192.0.2.53
  ns2.example.net.: []
records:
  '@':
    TXT: v=spf1 mx -all
    MX: 10 mail.example.com.
    CAA: 0 issue "letsencrypt.org"
  mail:
    ttl: 300
    A: 192.0.2.25
  www:
    CNAME: example.com.
  _sip._tcp:
    SRV: 10 60 5060 sip.example.net.
"#
        );
        assert_eq!(
            imported.zone.nodes.len(),
            5,
            "apex, ns1, mail, www, _sip._tcp"
        );
    }

    #[test]
    fn what_the_loader_refuses_is_reported_at_the_source_line() {
        let text = "$TTL 60\n@ NS ns.example.net.\n\nbig 4294967295 A 192.0.2.1\n";
        let e = from_str(
            text,
            Path::new("zone.db"),
            "example.com",
            &Options::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "zone.db:4: steerdns cannot load the result: record big, ttl: TTL 4294967295 is out of range (0 to 2147483647, RFC 2181)"
        );
    }
}
