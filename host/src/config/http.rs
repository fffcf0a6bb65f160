//! `plugins.NAME.http`: the hosts an operator lets a plugin reach over
//! outbound HTTP, and the pattern both sides of the grant are written in.
//! The enforcement lives in `capabilities/http.rs`; this is only the
//! vocabulary and its parsing, so `botbox check` reports a bad pattern with
//! its key.

use std::fmt;
use std::net::IpAddr;

/// The longest host pattern accepted, in bytes (a DNS name is at most 253).
pub const MAX_PATTERN_BYTES: usize = 260;

/// A host, or all subdomains of a domain, and optionally a port:
/// `api.weather.example:443`, `*.example.org`, `127.0.0.1:8080`,
/// `[::1]:8080`. Without a port it means the scheme's default port
/// (443 for `https`, 80 for loopback `http`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPattern {
    /// Which hosts.
    pub host: HostMatch,
    /// Which port; `None` is the scheme's default.
    pub port: Option<u16>,
}

/// The host part of a [`HostPattern`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostMatch {
    /// One DNS name, lowercase, without a trailing dot.
    Name(String),
    /// `*.domain`: every name under the domain (not the domain itself).
    Subdomains(String),
    /// One address, written as an IP literal. Granting an address by its
    /// literal is the only way to reach a private, loopback or link-local
    /// one: a name that resolves there is refused.
    Ip(IpAddr),
}

impl HostPattern {
    /// Parses a pattern as written in `botbox.toml` or `describe()`.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        if text.is_empty() || text.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "a host pattern is 1 to {MAX_PATTERN_BYTES} bytes long"
            ));
        }
        if text.contains("://") || text.contains('/') {
            return Err("write only the host and port, without a scheme or path".into());
        }
        // `[v6]` or `[v6]:port`.
        if let Some(rest) = text.strip_prefix('[') {
            let (addr, after) = rest
                .split_once(']')
                .ok_or("an IPv6 address needs its closing `]`")?;
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("`{addr}` is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(parse_port(
                    p.strip_prefix(':').ok_or("expected `:port` after `]`")?,
                )?),
            };
            return Ok(HostPattern {
                host: HostMatch::Ip(ip),
                port,
            });
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(parse_port(p)?)),
            None => (text, None),
        };
        if host.contains(':') {
            return Err("write an IPv6 address in brackets: `[::1]:8080`".into());
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(HostPattern {
                host: HostMatch::Ip(ip),
                port,
            });
        }
        let host = host.to_ascii_lowercase();
        let (wild, name) = match host.strip_prefix("*.") {
            Some(domain) => (true, domain.to_string()),
            None => (false, host),
        };
        check_dns_name(&name)?;
        Ok(HostPattern {
            host: if wild {
                HostMatch::Subdomains(name)
            } else {
                HostMatch::Name(name)
            },
            port,
        })
    }

    /// Whether every host and port this pattern names is also named by
    /// `self`: the grant's intersection keeps what the plugin asked for
    /// when one of the operator's patterns covers it.
    pub fn covers(&self, asked: &HostPattern) -> bool {
        if self.port != asked.port {
            return false;
        }
        match (&self.host, &asked.host) {
            (HostMatch::Name(a), HostMatch::Name(b)) => a == b,
            (HostMatch::Ip(a), HostMatch::Ip(b)) => a == b,
            (HostMatch::Subdomains(d), HostMatch::Name(b)) => is_under(b, d),
            (HostMatch::Subdomains(d), HostMatch::Subdomains(e)) => e == d || is_under(e, d),
            _ => false,
        }
    }

    /// Whether a request to `host` (lowercase, without a trailing dot, an IP
    /// literal unbracketed) on `port` matches, `default_port` being the
    /// scheme's.
    pub fn matches(&self, host: &str, port: u16, default_port: u16) -> bool {
        if self.port.unwrap_or(default_port) != port {
            return false;
        }
        match &self.host {
            HostMatch::Name(n) => n == host,
            HostMatch::Subdomains(d) => is_under(host, d),
            HostMatch::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostMatch::Name(n) => f.write_str(n)?,
            HostMatch::Subdomains(d) => write!(f, "*.{d}")?,
            HostMatch::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostMatch::Ip(ip) => write!(f, "{ip}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

fn is_under(name: &str, domain: &str) -> bool {
    name.len() > domain.len() + 1
        && name.ends_with(domain)
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("`{p}` is not a port (1 to 65535)")),
        Ok(port) => Ok(port),
    }
}

fn check_dns_name(name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(
            "not a host name: labels of letters, digits and '-', separated by '.'; `*.` only as \
             the first label"
                .into(),
        );
    }
    Ok(())
}

/// The outbound HTTP limits of one plugin (`plugins.NAME.limits.http_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// `limits.http_request_max_kb`: the largest request body.
    pub request_max_bytes: u64,
    /// `limits.http_response_max_kb`: the largest response body; past it
    /// the body is cut and the guest reads an error.
    pub response_max_bytes: u64,
    /// `limits.http_timeout_ms`: one request from connect to the last
    /// byte; never past the deadline of the event it is made in.
    pub timeout: std::time::Duration,
    /// `limits.http_max_in_flight`: requests at once for the plugin.
    pub max_in_flight: u32,
    /// `limits.http_requests_per_minute`: the plugin's request budget.
    pub requests_per_minute: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            request_max_bytes: 64 << 10,
            response_max_bytes: 1 << 20,
            timeout: std::time::Duration::from_secs(5),
            max_in_flight: 4,
            requests_per_minute: 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    #[test]
    fn parses_names_wildcards_and_addresses() {
        assert_eq!(
            p("API.Weather.example:443").to_string(),
            "api.weather.example:443"
        );
        assert_eq!(
            p("*.example.org").host,
            HostMatch::Subdomains("example.org".into())
        );
        assert_eq!(
            p("127.0.0.1:8080").host,
            HostMatch::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(p("[::1]:8080").to_string(), "[::1]:8080");
        for bad in [
            "",
            "https://x.org",
            "x.org/path",
            "x.org:0",
            "x.org:99999",
            "::1",
            "*.*.org",
            "a..b",
            "-a.org",
            "a_b.org",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn covers_is_the_narrowing_rule() {
        assert!(p("*.example.org").covers(&p("api.example.org")));
        assert!(p("*.example.org").covers(&p("*.eu.example.org")));
        assert!(!p("*.example.org").covers(&p("example.org")));
        assert!(!p("*.example.org").covers(&p("evilexample.org")));
        assert!(!p("api.example.org").covers(&p("*.example.org")));
        assert!(!p("api.example.org:443").covers(&p("api.example.org:8443")));
        assert!(p("api.example.org").covers(&p("api.example.org")));
    }

    #[test]
    fn matches_a_request() {
        assert!(p("api.example.org").matches("api.example.org", 443, 443));
        assert!(!p("api.example.org").matches("api.example.org", 8443, 443));
        assert!(p("*.example.org").matches("a.b.example.org", 443, 443));
        assert!(!p("*.example.org").matches("example.org", 443, 443));
        assert!(p("[::1]:80").matches("::1", 80, 443));
    }
}
