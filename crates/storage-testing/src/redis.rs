//! The throw-away Redis server `scripts/redis.sh` starts (127.0.0.1:17190,
//! with a password), as the Redis tests reach it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::Url;

/// `redis://:<password>@<host>:<port>` of the test server.
pub const ENV_REDIS_URL: &str = "STORAGE_TEST_REDIS_URL";

/// How to start it; part of every panic message.
const HOW_TO_START: &str = "The test Redis server is not running (or STORAGE_TEST_REDIS_URL is \
not exported). `./scripts/test` installs, starts and stops it around the whole suite. \
For a manual `cargo test`, run first: \
scripts/redis.sh install && scripts/redis.sh start && eval \"$(scripts/redis.sh env)\" \
(and `scripts/redis.sh stop` when done).";

/// The test Redis server.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisServer {
    /// `127.0.0.1`.
    pub host: String,
    /// `17190`.
    pub port: u16,
    /// The `requirepass` password.
    pub password: String,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl RedisServer {
    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Sends one command (RESP array of bulk strings) to database `db`
    /// after `AUTH` and `SELECT`, and returns the first line of the answer
    /// (`+OK`, `:3`, `$5`, `-ERR …`). For fixtures that need no client
    /// library.
    ///
    /// # Panics
    /// If the server cannot be reached.
    pub fn command(&self, db: u32, args: &[&[u8]]) -> String {
        let stream = TcpStream::connect(self.address())
            .unwrap_or_else(|e| panic!("Redis at {}: {e}. {HOW_TO_START}", self.address()));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        let mut writer = stream.try_clone().expect("a second handle");
        let mut out = encode(&[b"AUTH", self.password.as_bytes()]);
        out.extend(encode(&[b"SELECT", db.to_string().as_bytes()]));
        out.extend(encode(args));
        writer.write_all(&out).expect("writing to Redis");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        for what in ["AUTH", "SELECT"] {
            reader.read_line(&mut line).expect("an answer");
            assert_eq!(line.trim_end(), "+OK", "{what} refused by the test Redis");
            line.clear();
        }
        reader.read_line(&mut line).expect("an answer");
        line.trim_end().to_string()
    }

    /// The value at `key` of database `db` (`GET`), `None` when missing.
    ///
    /// # Panics
    /// If the server cannot be reached or answers an error.
    pub fn get(&self, db: u32, key: &str) -> Option<Vec<u8>> {
        let stream = TcpStream::connect(self.address())
            .unwrap_or_else(|e| panic!("Redis at {}: {e}. {HOW_TO_START}", self.address()));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        let mut writer = stream.try_clone().expect("a second handle");
        let mut out = encode(&[b"AUTH", self.password.as_bytes()]);
        out.extend(encode(&[b"SELECT", db.to_string().as_bytes()]));
        out.extend(encode(&[b"GET", key.as_bytes()]));
        writer.write_all(&out).expect("writing to Redis");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        for _ in 0..2 {
            line.clear();
            reader.read_line(&mut line).expect("an answer");
        }
        line.clear();
        reader.read_line(&mut line).expect("the GET answer");
        let len: i64 = line
            .trim_end()
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("GET {key} answered {line}"));
        let len = usize::try_from(len).ok()?;
        let mut value = vec![0; len + 2];
        std::io::Read::read_exact(&mut reader, &mut value).expect("the value");
        value.truncate(len);
        Some(value)
    }
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n", arg.len()).into_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The test Redis server, which answers `PING` after `AUTH`.
///
/// # Panics
/// If [`ENV_REDIS_URL`] is missing or malformed, or the server does not
/// answer; the message says how to start it.
#[track_caller]
pub fn redis() -> RedisServer {
    let url = std::env::var(ENV_REDIS_URL)
        .unwrap_or_else(|_| panic!("{ENV_REDIS_URL} is not set. {HOW_TO_START}"));
    let server = parse(&url).unwrap_or_else(|e| panic!("{ENV_REDIS_URL}: {e}. {HOW_TO_START}"));
    if let Err(why) = ping(&server) {
        panic!(
            "Redis at {} ({ENV_REDIS_URL}) does not answer: {why}. {HOW_TO_START}",
            server.address()
        );
    }
    server
}

fn parse(url: &str) -> Result<RedisServer, String> {
    let url = Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    if url.scheme() != "redis" {
        return Err("expected redis://:password@host:port".into());
    }
    Ok(RedisServer {
        host: url.host_str().ok_or("no host")?.to_string(),
        port: url.port().unwrap_or(6379),
        password: percent_encoding::percent_decode_str(url.password().unwrap_or_default())
            .decode_utf8_lossy()
            .to_string(),
    })
}

fn ping(server: &RedisServer) -> Result<(), String> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&server.address())
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("TCP connect to {addr} failed: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut out = encode(&[b"AUTH", server.password.as_bytes()]);
    out.extend(encode(&[b"PING"]));
    writer.write_all(&out).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut lines = [String::new(), String::new()];
    for line in &mut lines {
        reader.read_line(line).map_err(|e| e.to_string())?;
    }
    if lines[0].trim_end() != "+OK" {
        return Err(format!("AUTH answered {}", lines[0].trim_end()));
    }
    if lines[1].trim_end() != "+PONG" {
        return Err(format!("PING answered {}", lines[1].trim_end()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_env_url() {
        let server = parse("redis://:p%40ss@127.0.0.1:17190").unwrap();
        assert_eq!(
            (server.host.as_str(), server.port, server.password.as_str()),
            ("127.0.0.1", 17190, "p@ss")
        );
        assert!(parse("http://h").is_err());
        assert!(!format!("{server:?}").contains("p@ss"));
    }
}
