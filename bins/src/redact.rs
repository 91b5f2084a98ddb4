//! Keeping secrets out of logs, manifests and error messages.

/// Replaces the password of a URL-style connection string
/// (`postgres://user:secret@host/db`) with `***`. Key-value strings
/// (`password=secret`) are redacted too.
///
/// ```
/// assert_eq!(bins::redact_url("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
/// assert_eq!(bins::redact_url("host=h password=pw user=u"), "host=h password=*** user=u");
/// ```
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let auth_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &rest[at..]
                );
            }
        }
        return url.to_string();
    }
    url.split(' ')
        .map(|kv| {
            if kv.to_ascii_lowercase().starts_with("password=") {
                "password=***".to_string()
            } else {
                kv.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Only the scheme and host of a URL (`https://hooks.slack.com/…`): what may
/// be shown of a webhook or push URL, whose path or query can hold a token.
///
/// ```
/// assert_eq!(bins::url_origin("https://hooks.slack.com/services/T0/B0/secret"), "https://hooks.slack.com/…");
/// assert_eq!(bins::url_origin("http://u:pw@127.0.0.1:9091/metrics/job/x"), "http://127.0.0.1:9091/…");
/// assert_eq!(bins::url_origin("http://gateway:9091"), "http://gateway:9091");
/// assert_eq!(bins::url_origin("not a url"), "<url>");
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

/// Removes every occurrence of `secret` from `text`.
pub fn scrub(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => text.replace(s, "***"),
        _ => text.to_string(),
    }
}

/// The password of a connection string, if it has one.
pub fn password_of(url: &str) -> Option<String> {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let auth_end = rest.find('/').unwrap_or(rest.len());
        let at = rest[..auth_end].rfind('@')?;
        let userinfo = &rest[..at];
        return userinfo.split_once(':').map(|(_, p)| p.to_string());
    }
    url.split(' ').find_map(|kv| {
        kv.get(..9)
            .filter(|k| k.eq_ignore_ascii_case("password="))
            .map(|_| kv[9..].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_and_scrubs() {
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgresql://u:p%40ss@h/db?sslmode=require"),
            "postgresql://u:***@h/db?sslmode=require"
        );
        let pw = password_of("postgres://u:s3cr3t@h/db");
        assert_eq!(pw.as_deref(), Some("s3cr3t"));
        assert_eq!(
            scrub("failed: password s3cr3t rejected", pw.as_deref()),
            "failed: password *** rejected"
        );
    }
}
