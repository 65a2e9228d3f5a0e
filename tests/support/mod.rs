//! What the store tests share: where the servers are, how to start them, and guards that
//! remove a test's data when the test ends, pass or fail (so the suites can be re-run and
//! leave nothing behind).
#![allow(dead_code, reason = "each test crate uses a part of this module")]

pub mod proxy;

/// `host:port` of a server URL (`scheme://[user[:password]@]host[:port][/...]`), with
/// `default_port` when it names none.
fn authority(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let has_port = host.rsplit_once(':').is_some_and(|(_, port)| !port.ends_with(']'));
    if has_port { host.to_owned() } else { format!("{host}:{default_port}") }
}

/// `url` with its `host:port` replaced by `addr` (its scheme, credentials, path and
/// parameters kept): the same server reached through another address, such as a proxy's.
fn url_via(url: &str, addr: std::net::SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let credentials = authority.rsplit_once('@').map_or(String::new(), |(c, _)| format!("{c}@"));
    format!("{scheme}://{credentials}{addr}{tail}")
}

/// PostgreSQL: the URL, the start command, a schema per test.
pub mod postgres {
    use sqlx::{Connection, Executor};

    /// How to start the server when it is down.
    pub const START: &str = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

    /// The server the tests use: `BAE_POSTGRES_URL`, else database `test` on 127.0.0.1:5432.
    pub fn url() -> String {
        std::env::var("BAE_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// `host:port` of [`url`].
    pub fn addr() -> String {
        super::authority(&url(), 5432)
    }

    /// [`url`] through another address (a proxy's).
    pub fn url_via(addr: std::net::SocketAddr) -> String {
        super::url_via(&url(), addr)
    }

    /// A fresh schema name, whose schema is dropped when this is dropped, whatever the
    /// test's outcome.
    pub struct Schema(pub String);

    impl Schema {
        /// `bae_test_<uuid>`.
        pub fn new() -> Self {
            Self(format!("bae_test_{}", uuid::Uuid::now_v7().simple()))
        }
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let (url, name) = (url(), self.0.clone());
            // A thread of its own: `drop` may run inside a runtime, where blocking is not allowed.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(async {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                        let _ = conn.execute(format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE").as_str()).await;
                        let _ = conn.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// Redis: the URL, the start command, a key prefix per test.
pub mod redis {
    use super::resp::{Raw, Reply};

    /// How to start the server when it is down.
    pub const START: &str =
        "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" --appendonly no";

    /// The server the tests use: `BAE_REDIS_URL`, else 127.0.0.1:6379.
    pub fn url() -> String {
        std::env::var("BAE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// `host:port` of [`url`].
    pub fn addr() -> String {
        super::authority(&url(), 6379)
    }

    /// [`url`] through another address (a proxy's).
    pub fn url_via(addr: std::net::SocketAddr) -> String {
        super::url_via(&url(), addr)
    }

    /// A fresh prefix whose keys are deleted when it is dropped, whatever the test's outcome.
    pub struct Prefix(pub String);

    impl Prefix {
        /// `bae_test:<uuid>`.
        pub fn new() -> Self {
            Self(format!("bae_test:{}", uuid::Uuid::now_v7().simple()))
        }

        /// The key `name` under this prefix.
        pub fn key(&self, name: &str) -> String {
            format!("{}:{name}", self.0)
        }
    }

    impl Drop for Prefix {
        /// Deletes every key under the prefix (`SCAN MATCH prefix:*`, then `DEL`).
        fn drop(&mut self) {
            let Ok(mut raw) = Raw::connect(&addr()) else { return };
            let pattern = format!("{}:*", self.0);
            let mut cursor = "0".to_owned();
            loop {
                let Ok(Reply::Array(reply)) = raw.cmd(&["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"]) else {
                    return;
                };
                let [Reply::Bytes(next), Reply::Array(keys)] = &reply[..] else { return };
                let keys: Vec<String> = keys
                    .iter()
                    .filter_map(|k| match k {
                        Reply::Bytes(b) => String::from_utf8(b.clone()).ok(),
                        _ => None,
                    })
                    .collect();
                if !keys.is_empty() {
                    let mut del = vec!["DEL"];
                    del.extend(keys.iter().map(String::as_str));
                    let _ = raw.cmd(&del);
                }
                cursor = String::from_utf8_lossy(next).into_owned();
                if cursor == "0" {
                    return;
                }
            }
        }
    }
}

/// A minimal blocking RESP2 client: the test reads the keys without the crate under test.
pub mod resp {
    use std::io::{self, BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    #[derive(Debug, PartialEq)]
    pub enum Reply {
        Nil,
        Int(i64),
        Bytes(Vec<u8>),
        Array(Vec<Reply>),
        Error(String),
    }

    impl Reply {
        /// The reply as text; panics on anything but a string.
        pub fn text(&self) -> String {
            match self {
                Reply::Bytes(b) => String::from_utf8(b.clone()).expect("UTF-8"),
                other => panic!("not a string: {other:?}"),
            }
        }
    }

    pub struct Raw(BufReader<TcpStream>);

    impl Raw {
        pub fn connect(addr: &str) -> io::Result<Self> {
            let stream = TcpStream::connect(addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            Ok(Self(BufReader::new(stream)))
        }

        pub fn cmd(&mut self, args: &[&str]) -> io::Result<Reply> {
            let mut out = format!("*{}\r\n", args.len()).into_bytes();
            for a in args {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            self.0.get_mut().write_all(&out)?;
            self.read()
        }

        fn line(&mut self) -> io::Result<String> {
            let mut line = String::new();
            self.0.read_line(&mut line)?;
            Ok(line.trim_end_matches("\r\n").to_owned())
        }

        fn read(&mut self) -> io::Result<Reply> {
            let line = self.line()?;
            let bad = || io::Error::other(format!("bad reply line {line:?}"));
            let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
            let n = || rest.parse::<i64>().map_err(|_| bad());
            Ok(match kind {
                "+" => Reply::Bytes(rest.as_bytes().to_vec()),
                "-" => Reply::Error(rest.to_owned()),
                ":" => Reply::Int(n()?),
                "$" if n()? < 0 => Reply::Nil,
                "$" => {
                    let mut buf = vec![0; n()? as usize + 2];
                    self.0.read_exact(&mut buf)?;
                    buf.truncate(buf.len() - 2);
                    Reply::Bytes(buf)
                }
                "*" if n()? < 0 => Reply::Nil,
                "*" => (0..n()?).map(|_| self.read()).collect::<io::Result<Vec<_>>>().map(Reply::Array)?,
                _ => return Err(bad()),
            })
        }
    }
}
