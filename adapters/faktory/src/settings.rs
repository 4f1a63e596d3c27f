//! The adapter URL:
//! `faktory://[:PASSWORD@]HOST:PORT[?insecure=true&max_connections=N&max_line=BYTES&line_timeout=30s]`,
//! where `HOST:PORT` is the address weir listens on for Faktory clients; `faktory+tls://…`
//! with `cert=PATH&key=PATH` (PEM files) for TLS.

use std::net::SocketAddr;
use std::time::Duration;

use weir_core::url_query::QueryParams;
use weir_core::{Error, Result};

/// Faktory's port.
pub const DEFAULT_PORT: u16 = 7419;

/// Connections served at once, by default (Faktory warns past 1,000).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_000;

/// The most connections the setting takes.
pub const MAX_CONNECTIONS: usize = 100_000;

/// The longest command line taken, by default: a PUSHB of 100 jobs of 10 KiB fits (Faktory
/// advises jobs under 64 KiB).
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

/// How long a command line may take to arrive once it started, by default: a client that
/// trickles bytes (slow-loris) is cut off.
pub const DEFAULT_LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// An adapter URL, read.
#[derive(Clone)]
pub struct Settings {
    /// Where weir listens.
    pub listen: SocketAddr,
    /// The password clients must prove (none: anyone may connect).
    pub password: Option<String>,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// The longest command line taken, in bytes.
    pub max_line: usize,
    /// How long a command line may take to arrive once it started.
    pub line_timeout: Duration,
    /// TLS: the certificate chain's and the private key's PEM files.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("max_connections", &self.max_connections)
            .field("max_line", &self.max_line)
            .field("line_timeout", &self.line_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Settings {
    /// Reads `url`. Without a password, weir only listens on a loopback address unless
    /// `insecure=true`: anyone who can reach the port could push and fetch jobs.
    pub fn parse(url: &str) -> Result<Settings> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("faktory://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("faktory+tls://") {
            (true, rest)
        } else {
            return Err(Error::config(
                "the Faktory adapter takes faktory://[:PASSWORD@]HOST:PORT and faktory+tls://… URLs",
            ));
        };
        let rest = rest.split_once('#').map_or(rest, |(rest, _)| rest);
        let (base, _) = rest.split_once('?').unwrap_or((rest, ""));
        let base = base.trim_end_matches('/');
        let (credentials, address) = match base.rsplit_once('@') {
            Some((credentials, address)) => (Some(credentials), address),
            None => (None, base),
        };
        let password = match credentials {
            // Faktory URLs carry the password alone (`:pw@`); a user name is ignored.
            Some(credentials) => {
                let Some((_, password)) = credentials.split_once(':') else {
                    return Err(Error::config(
                        "faktory adapter: the URL's credentials are `:PASSWORD@` (a colon before the password)",
                    ));
                };
                Some(
                    percent_decode(password)
                        .map_err(|e| Error::config(format!("faktory adapter: the password {e}")))?,
                )
            }
            None => None,
        }
        .filter(|p| !p.is_empty());
        let params = QueryParams::parse(
            "faktory adapter",
            url,
            &[
                "insecure",
                "max_connections",
                "max_line",
                "line_timeout",
                "cert",
                "key",
            ],
        );
        let (mut insecure, mut max_connections, mut max_line) =
            (false, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_LINE);
        let mut line_timeout = DEFAULT_LINE_TIMEOUT;
        let (mut cert, mut key) = (None, None);
        for param in &params {
            match param.name() {
                "insecure" => insecure = param.bool()?,
                "max_connections" => {
                    max_connections = param.usize()?;
                    if !(1..=MAX_CONNECTIONS).contains(&max_connections) {
                        return Err(param.invalid(format_args!("must be 1 to {MAX_CONNECTIONS}")));
                    }
                }
                "max_line" => {
                    max_line = param.usize()?;
                    if max_line < 1024 {
                        return Err(param.invalid("must be at least 1024 bytes"));
                    }
                }
                "line_timeout" => {
                    line_timeout = param.duration()?;
                    if line_timeout.is_zero() {
                        return Err(param.invalid("must be more than zero"));
                    }
                }
                "cert" if tls => cert = Some(std::path::PathBuf::from(param.value()?)),
                "key" if tls => key = Some(std::path::PathBuf::from(param.value()?)),
                "cert" | "key" => {
                    return Err(param.invalid("is for faktory+tls:// URLs"));
                }
                _ => return Err(param.unknown()),
            }
        }
        let tls = match (tls, cert, key) {
            (false, _, _) => None,
            (true, Some(cert), Some(key)) => Some((cert, key)),
            (true, _, _) => {
                return Err(params.error(
                    "faktory+tls:// needs cert=PATH and key=PATH (the certificate chain and its private key, PEM)",
                ));
            }
        };
        let listen = listen_address(address).map_err(|e| params.error(e))?;
        if password.is_none() && !insecure && !listen.ip().is_loopback() {
            return Err(params.error(format!(
                "without a password weir listens for Faktory clients on a loopback address only ({listen} is not one): set a password (faktory://:PASSWORD@{listen}) or add insecure=true"
            )));
        }
        Ok(Settings {
            listen,
            password,
            max_connections,
            max_line,
            line_timeout,
            tls,
        })
    }
}

/// `HOST:PORT`, `HOST` (port 7419), `[v6]:PORT`; a host name is looked up now.
fn listen_address(address: &str) -> std::result::Result<SocketAddr, String> {
    if address.is_empty() {
        return Err("the URL names no address to listen on (faktory://127.0.0.1:7419)".into());
    }
    let with_port = if address.ends_with(']') || !address.contains(':') {
        format!("{address}:{DEFAULT_PORT}")
    } else {
        address.to_string()
    };
    use std::net::ToSocketAddrs;
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot listen on {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot listen on {address}: no address"))
}

/// `%XX` escapes decoded (a password may hold `@`, `:` or `/`).
fn percent_decode(text: &str) -> std::result::Result<String, &'static str> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or("has a broken % escape")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "has a broken % escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "has a broken % escape")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once decoded")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_passwords_and_parameters_are_read() {
        let s = Settings::parse("faktory://:p%40ss@127.0.0.1:7500?max_connections=5&max_line=2048")
            .expect("parses");
        assert_eq!(s.listen, "127.0.0.1:7500".parse().unwrap());
        assert_eq!(s.password.as_deref(), Some("p@ss"));
        assert_eq!((s.max_connections, s.max_line), (5, 2048));
        assert!(!format!("{s:?}").contains("p@ss"), "redacted");
        let s = Settings::parse("faktory://127.0.0.1").expect("default port");
        assert_eq!(s.listen.port(), DEFAULT_PORT);
        assert_eq!(s.password, None);
        let s = Settings::parse("faktory://[::1]:7420/").expect("v6");
        assert_eq!(s.listen, "[::1]:7420".parse().unwrap());
    }

    #[test]
    fn an_open_port_without_a_password_is_refused_unless_insecure() {
        let e = Settings::parse("faktory://0.0.0.0:7419").expect_err("open");
        assert!(e.to_string().contains("loopback"), "{e}");
        assert!(Settings::parse("faktory://0.0.0.0:7419?insecure=true").is_ok());
        assert!(Settings::parse("faktory://:pw@0.0.0.0:7419").is_ok());
    }

    #[test]
    fn bad_urls_say_why_without_the_password() {
        let err = |url: &str| format!("{:?}", Settings::parse(url).expect_err(url));
        assert!(err("redis://h").contains("faktory://"));
        assert!(err("faktory://?insecure=true").contains("no address"));
        assert!(err("faktory://127.0.0.1?bogus=1").contains("bogus"));
        assert!(err("faktory://127.0.0.1?max_line=10").contains("1024"));
        let shown = err("faktory://:s3cret@127.0.0.1?max_connections=0");
        assert!(shown.contains("must be 1 to"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(err("faktory://:%zz@127.0.0.1").contains("escape"));
        assert!(err("faktory://s3cret@127.0.0.1").contains(":PASSWORD@"));
        assert!(err("faktory+tls://127.0.0.1?cert=a.pem").contains("key=PATH"));
        assert!(err("faktory://127.0.0.1?cert=a.pem").contains("faktory+tls"));
    }

    #[test]
    fn tls_urls_name_their_files() {
        let s = Settings::parse("faktory+tls://:pw@0.0.0.0:7419?cert=/c.pem&key=/k.pem")
            .expect("parses");
        assert_eq!(s.tls, Some(("/c.pem".into(), "/k.pem".into())), "{s:?}");
    }
}
