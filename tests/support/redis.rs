//! Just enough of the Redis protocol to write a key and read it back from a real
//! redis-server.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn command(addr: &str, parts: &[&str]) -> std::io::Result<String> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await??;
    let mut request = format!("*{}\r\n", parts.len());
    for part in parts {
        request.push_str(&format!("${}\r\n{part}\r\n", part.len()));
    }
    stream.write_all(request.as_bytes()).await?;
    let mut reply = vec![0_u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut reply)).await??;
    Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
}

/// `SET key value`; true when the server said OK.
pub async fn set(addr: &str, key: &str, value: &str) -> bool {
    command(addr, &["SET", key, value])
        .await
        .is_ok_and(|r| r.starts_with("+OK"))
}

/// `GET key`: the value, or `None` when absent or unreachable.
pub async fn get(addr: &str, key: &str) -> Option<String> {
    let reply = command(addr, &["GET", key]).await.ok()?;
    // A bulk string: `$<len>\r\n<value>\r\n`; `$-1` when absent.
    let (header, rest) = reply.split_once("\r\n")?;
    let len: usize = header.strip_prefix('$')?.parse().ok()?;
    rest.get(..len).map(str::to_owned)
}
