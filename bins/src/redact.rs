//! Keeping secrets out of logs, manifests, alerts and error messages, and
//! upstream text out of terminals and chat formatting.
//!
//! A database connection string is parsed once ([`DatabaseUrl`]): what is
//! shown of it is rebuilt from the parsed configuration (user, hosts,
//! ports, database; never the password), and any text that may carry it is
//! scrubbed of the password the parser found, in every form the string can
//! hold it (as parsed, percent-encoded, backslash-escaped, and the whole
//! string itself). No pattern is matched on the string: a form the parser
//! reads is a form that is redacted.

use std::fmt;

use fact_apply::postgres::config::Host;
use fact_apply::postgres::Config;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::Error;

/// A Postgres connection string (URL `postgres://…` or libpq key/value
/// `host=… password=…`), with what may be shown of it.
///
/// ```
/// use bins::redact::DatabaseUrl;
/// let db = DatabaseUrl::new("postgresql://u@h/db?password=S3cr3t");
/// assert_eq!(db.to_string(), "postgres://u@h:5432/db");
/// assert_eq!(db.scrub("auth failed for S3cr3t"), "auth failed for ***");
/// let kv = DatabaseUrl::new("host=h password = 'a b' dbname=db");
/// assert_eq!(kv.to_string(), "postgres://h:5432/db");
/// assert!(!kv.scrub("password a b rejected").contains("a b"));
/// assert_eq!(DatabaseUrl::new("host=h password").to_string(), "<connection string that does not parse>");
/// ```
#[derive(Clone)]
pub struct DatabaseUrl {
    raw: String,
    parsed: Result<Config, String>,
    secrets: Vec<String>,
}

impl DatabaseUrl {
    /// Parses `raw`; a string that does not parse is kept (and never shown).
    pub fn new(raw: impl Into<String>) -> DatabaseUrl {
        let raw = raw.into();
        let parsed = raw.parse::<Config>().map_err(|e| e.to_string());
        let mut secrets = Vec::new();
        if let Ok(c) = &parsed {
            if let Some(pw) = c.get_password() {
                secrets.extend(forms_of(&String::from_utf8_lossy(pw)));
            }
        }
        if !raw.trim().is_empty() {
            secrets.push(raw.clone());
        }
        // Longest first, so a secret inside another is not cut in half.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        DatabaseUrl {
            raw,
            parsed,
            secrets,
        }
    }

    /// The parsed configuration; a string that does not parse is an error
    /// that quotes nothing of it.
    pub fn config(&self) -> Result<Config, Error> {
        self.parsed.clone().map_err(|reason| Error::DatabaseUrl {
            reason: self.scrub(&reason),
        })
    }

    /// Connects (no TLS), naming the application; errors show only
    /// [`DatabaseUrl`]'s redacted form.
    pub fn connect(&self, application: &str) -> Result<fact_apply::postgres::Client, Error> {
        let mut config = self.config()?;
        if config.get_application_name().is_none() {
            config.application_name(application);
        }
        config
            .connect(fact_apply::postgres::NoTls)
            .map_err(|source| Error::Connect {
                url: self.to_string(),
                source,
            })
    }

    /// The same connection as [`DatabaseUrl::connect`]'s, as the
    /// asynchronous driver's configuration (the reconcile's whole-table
    /// reads).
    pub fn read_config(
        &self,
        application: &str,
    ) -> Result<fact_apply::tokio_postgres::Config, Error> {
        let mut config = self
            .raw
            .parse::<fact_apply::tokio_postgres::Config>()
            .map_err(|e| Error::DatabaseUrl {
                reason: self.scrub(&e.to_string()),
            })?;
        if config.get_application_name().is_none() {
            config.application_name(application);
        }
        Ok(config)
    }

    /// `text` with the password (every form of it) and the whole connection
    /// string replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }

    /// The string as given (for the driver only: never print it).
    pub fn expose(&self) -> &str {
        &self.raw
    }
}

/// The ways a password can be written in a connection string.
fn forms_of(pw: &str) -> Vec<String> {
    if pw.is_empty() {
        return Vec::new();
    }
    let escaped: String = pw
        .chars()
        .flat_map(|c| match c {
            '\\' | '\'' | ' ' | '\t' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    vec![
        pw.to_string(),
        utf8_percent_encode(pw, NON_ALPHANUMERIC).to_string(),
        escaped,
    ]
}

/// The redacted form: `postgres://user@host:port/dbname`, from the parsed
/// configuration (`<connection string that does not parse>` otherwise).
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(c) = &self.parsed else {
            return f.write_str("<connection string that does not parse>");
        };
        f.write_str("postgres://")?;
        if let Some(u) = c.get_user() {
            write!(f, "{}@", self.scrub(u))?;
        }
        let ports = c.get_ports();
        let hosts: Vec<String> = c
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                match h {
                    Host::Tcp(name) => format!("{}:{port}", self.scrub(name)),
                    Host::Unix(p) => format!("[{}]:{port}", self.scrub(&p.display().to_string())),
                }
            })
            .collect();
        f.write_str(&hosts.join(","))?;
        if let Some(db) = c.get_dbname() {
            write!(f, "/{}", self.scrub(db))?;
        }
        Ok(())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DatabaseUrl::new(s))
    }
}

/// Only the scheme and host of a URL (`https://hooks.slack.com/…`): what may
/// be shown of a webhook or push URL, whose path or query can hold a token.
///
/// ```
/// use bins::redact::url_origin;
/// assert_eq!(url_origin("https://hooks.slack.com/services/T0/B0/secret"), "https://hooks.slack.com/…");
/// assert_eq!(url_origin("http://u:pw@127.0.0.1:9091/metrics/job/x"), "http://127.0.0.1:9091/…");
/// assert_eq!(url_origin("http://gateway:9091"), "http://gateway:9091");
/// assert_eq!(url_origin("not a url"), "<url>");
/// ```
pub fn url_origin(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "<url>".into();
    };
    let rest = &url[scheme_end + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let more = if end < rest.len() { "/…" } else { "" };
    format!("{}{host}{more}", &url[..scheme_end + 3])
}

/// `text` safe to print on a terminal: every control character (escape
/// sequences, BEL, CR, a line break that would fake a line) is written as
/// a visible `\u{…}` escape instead.
///
/// ```
/// assert_eq!(bins::redact::terminal_safe("a\x1b[2Jb\r\nc"), "a\\u{1b}[2Jb\\u{d}\\u{a}c");
/// ```
pub fn terminal_safe(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Program output (several lines) safe to print on a terminal: as
/// [`terminal_safe`], but its own line breaks are kept.
///
/// ```
/// assert_eq!(bins::redact::terminal_lines("a\x07\nb"), "a\\u{7}\nb");
/// ```
pub fn terminal_lines(text: &str) -> String {
    text.split('\n')
        .map(terminal_safe)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` (from upstream or a record) as one line of a chat message:
/// control characters as in [`terminal_safe`], and `&`, `<`, `>` escaped
/// the way Slack and Mattermost expect, so `<!channel>` or a disguised
/// link `<https://evil|https://dst.dk>` show as text.
///
/// ```
/// assert_eq!(bins::redact::chat_escape("<!channel>\nfake"), "&lt;!channel&gt;\\u{a}fake");
/// ```
pub fn chat_escape(text: &str) -> String {
    terminal_safe(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way libpq lets a connection string carry a password.
    const FORMS: &[(&str, &str)] = &[
        ("postgres://u:S3cr3t@h:5432/db", "S3cr3t"),
        ("postgresql://u:p%40ss@h/db?sslmode=disable", "p@ss"),
        ("postgresql://u@h/db?password=S3cr3t", "S3cr3t"),
        (
            "postgresql://u@h/db?sslmode=disable&password=S3%2Fcr3t",
            "S3/cr3t",
        ),
        ("postgres://u:pa/ss@h/db", "pa/ss"),
        ("host=h password=S3cr3t dbname=db", "S3cr3t"),
        ("host=h password = S3cr3t dbname=db", "S3cr3t"),
        ("host=h\tpassword=S3cr3t\tdbname=db", "S3cr3t"),
        ("host=h\tpassword\t=\tS3cr3t dbname=db", "S3cr3t"),
        ("host=h password='a b' dbname=db", "a b"),
        ("host=h password='it\\'s' dbname=db", "it's"),
        ("host=h password=a\\ b dbname=db", "a b"),
        ("host=h PASSWORD=S3cr3t dbname=db", ""),
    ];

    #[test]
    fn every_form_is_parsed_shown_without_the_password_and_scrubbed() {
        for (raw, pw) in FORMS {
            let db = DatabaseUrl::new(*raw);
            let shown = db.to_string();
            if pw.is_empty() {
                // libpq keywords are case-sensitive: `PASSWORD` does not parse.
                assert_eq!(shown, "<connection string that does not parse>", "{raw}");
                assert!(!db.scrub(&format!("x {raw} y")).contains("S3cr3t"), "{raw}");
                continue;
            }
            let config = db.config().expect(raw);
            assert_eq!(config.get_password(), Some(pw.as_bytes()), "{raw}");
            // The reconcile's second connection is the same one.
            let read = db.read_config("app").expect(raw);
            assert_eq!(read.get_password(), config.get_password(), "{raw}");
            assert_eq!(read.get_user(), config.get_user(), "{raw}");
            assert_eq!(read.get_dbname(), config.get_dbname(), "{raw}");
            assert_eq!(read.get_hosts(), config.get_hosts(), "{raw}");
            assert_eq!(read.get_ports(), config.get_ports(), "{raw}");
            assert_eq!(
                read.get_application_name(),
                Some(config.get_application_name().unwrap_or("app")),
                "{raw}"
            );
            assert!(!shown.contains(pw), "{raw}: {shown}");
            assert!(shown.starts_with("postgres://"), "{raw}: {shown}");
            for text in [
                format!("auth failed: {pw}"),
                format!("connecting to {raw} failed"),
                format!("encoded {}", utf8_percent_encode(pw, NON_ALPHANUMERIC)),
            ] {
                let clean = db.scrub(&text);
                assert!(!clean.contains(pw), "{raw}: {clean}");
                assert!(clean.contains("***"), "{raw}: {clean}");
            }
            assert!(!format!("{db:?}").contains(pw));
        }
    }

    #[test]
    fn a_string_that_does_not_parse_is_never_shown() {
        let db = DatabaseUrl::new("host=h password='S3cr3t");
        let err = db.config().expect_err("unterminated quote");
        assert!(!err.to_string().contains("S3cr3t"), "{err}");
        let err = db.read_config("app").expect_err("unterminated quote");
        assert!(!err.to_string().contains("S3cr3t"), "{err}");
        assert!(!db.to_string().contains("S3cr3t"));
        assert_eq!(db.scrub("echo host=h password='S3cr3t"), "echo ***");
    }
}
