//! Redis's `used_memory` (`INFO memory`), read over a plain connection, for the `sessions`
//! preset's Redis figure. No password: the bench's Redis is a local one of its own.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Bound on the whole exchange.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `INFO memory` reply read (it is about 1 KiB).
const MAX_REPLY: usize = 64 * 1024;

/// `used_memory` of the Redis at `addr` (`host:port`), in bytes.
pub async fn used_memory(addr: &str) -> Option<u64> {
    let text = tokio::time::timeout(TIMEOUT, info_memory(addr)).await.ok()??;
    parse_used_memory(&text)
}

async fn info_memory(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nmemory\r\n").await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // A bulk string: `$<len>\r\n<len bytes>\r\n`.
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let len: usize = std::str::from_utf8(buf.get(1..end)?).ok()?.parse().ok()?;
            if buf.len() >= end + 2 + len {
                return String::from_utf8(buf[end + 2..end + 2 + len].to_vec()).ok();
            }
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > MAX_REPLY {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_used_memory(info: &str) -> Option<u64> {
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_used_memory_not_its_lookalikes() {
        let info = "# Memory\r\nused_memory_rss:99\r\nused_memory:1234\r\nused_memory_human:1K\r\n";
        assert_eq!(super::parse_used_memory(info), Some(1234));
        assert_eq!(super::parse_used_memory("# Memory\r\n"), None);
    }
}
