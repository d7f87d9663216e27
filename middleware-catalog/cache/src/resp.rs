//! Enough of the Redis protocol (RESP2) for a broker's administrative commands.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// One connection to a Redis server.
#[derive(Debug)]
pub struct Connection {
    stream: BufReader<TcpStream>,
}

const TIMEOUT: Duration = Duration::from_secs(5);

fn broken(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

impl Connection {
    pub async fn connect(address: &str) -> std::io::Result<Self> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(address)).await??;
        Ok(Self {
            stream: BufReader::new(stream),
        })
    }

    /// Sends one command and reads its reply.
    pub async fn command(&mut self, parts: &[&str]) -> std::io::Result<Reply> {
        let mut request = format!("*{}\r\n", parts.len()).into_bytes();
        for part in parts {
            request.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
            request.extend_from_slice(part.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        tokio::time::timeout(TIMEOUT, self.stream.get_mut().write_all(&request)).await??;
        tokio::time::timeout(TIMEOUT, self.read()).await?
    }

    /// A command whose reply must not be an error.
    pub async fn ok(&mut self, parts: &[&str]) -> Result<Reply, String> {
        match self.command(parts).await {
            Ok(Reply::Error(e)) => Err(format!(
                "redis refused {}: {e}",
                parts.first().unwrap_or(&"")
            )),
            Ok(reply) => Ok(reply),
            Err(e) => Err(format!(
                "redis did not answer {}: {e}",
                parts.first().unwrap_or(&"")
            )),
        }
    }

    fn read(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Reply>> + Send + '_>>
    {
        Box::pin(async move {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(broken("the connection closed"));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let (kind, rest) = line.split_at(line.len().min(1));
            match kind {
                "+" => Ok(Reply::Simple(rest.to_owned())),
                "-" => Ok(Reply::Error(rest.to_owned())),
                ":" => rest
                    .parse()
                    .map(Reply::Integer)
                    .map_err(|_| broken("bad integer")),
                "$" => {
                    let len: i64 = rest.parse().map_err(|_| broken("bad length"))?;
                    let Ok(len) = usize::try_from(len) else {
                        return Ok(Reply::Bulk(None));
                    };
                    let mut data = vec![0_u8; len + 2];
                    self.stream.read_exact(&mut data).await?;
                    data.truncate(len);
                    Ok(Reply::Bulk(Some(data)))
                }
                "*" => {
                    let count: i64 = rest.parse().map_err(|_| broken("bad count"))?;
                    let Ok(count) = usize::try_from(count) else {
                        return Ok(Reply::Array(None));
                    };
                    let mut items = Vec::with_capacity(count.min(1024));
                    for _ in 0..count {
                        items.push(self.read().await?);
                    }
                    Ok(Reply::Array(Some(items)))
                }
                _ => Err(broken("not a RESP reply")),
            }
        })
    }
}
