//! Helpers for the providers' unit tests.

use std::path::Path;

use super::ProviderContext;
use crate::config::{ChannelConfig, Config};
use crate::wit::types::{Content, Message};

/// A channel as the config layer hands it to a provider. Built through the
/// real parser so it has exactly the fields the config layer fills.
pub fn channel(provider: &str, target: Option<toml::Value>, options: toml::Table) -> ChannelConfig {
    let mut provider_table = toml::Table::new();
    provider_table.insert("kind".into(), toml::Value::String("console".into()));
    let mut channel_table = options;
    channel_table.insert("provider".into(), toml::Value::String(provider.into()));
    if let Some(target) = target {
        channel_table.insert("target".into(), target);
    }
    let mut providers = toml::Table::new();
    providers.insert(provider.into(), provider_table.into());
    let mut channels = toml::Table::new();
    channels.insert("c".into(), channel_table.into());
    let mut root = toml::Table::new();
    root.insert("providers".into(), providers.into());
    root.insert("channels".into(), channels.into());
    let text = toml::to_string(&root).expect("test config serialises");
    let config = Config::parse(&text, Path::new("test.toml"), Path::new("."))
        .unwrap_or_else(|e| panic!("test config: {e}"));
    config.channels["c"].clone()
}

pub fn context() -> ProviderContext {
    ProviderContext {
        http: crate::providers::http_client().expect("http client"),
        base_dir: ".".into(),
        // Opened only by a send, which unit tests using this context never make.
        tokens: crate::storage::tokens::TokenStore::sqlite(
            std::env::temp_dir().join("botbox-unit-tokens-unused.sqlite"),
        ),
    }
}

pub fn text(t: &str) -> Content {
    Content::Text(t.to_string())
}

pub fn message(content: Content) -> Message {
    Message {
        channel: "c".into(),
        content,
        sender: None,
        extra: None,
        idempotency_key: None,
        reply_to: None,
        options: None,
    }
}

/// A secret in a file, as `{ file = "…" }` refers to it. Keep the folder
/// alive as long as the secret is read.
pub fn secret_file(value: &str) -> (tempfile::TempDir, toml::Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("secret");
    std::fs::write(&path, value).expect("write secret");
    let mut t = toml::Table::new();
    t.insert(
        "file".into(),
        toml::Value::String(path.display().to_string()),
    );
    (dir, t.into())
}

pub mod test_server {
    //! A tiny HTTP/1.1 server for tests of token single-flight and
    //! retry-once logic. It answers each request from a closure and counts
    //! requests per path. It is not a provider simulator.

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// One request as the test sees it.
    #[derive(Debug, Clone)]
    pub struct Seen {
        pub method: String,
        /// Path and query, as sent.
        pub target: String,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Seen {
        pub fn path(&self) -> &str {
            self.target.split('?').next().unwrap_or("")
        }

        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
        }
    }

    /// An answer: status and JSON or text body.
    pub struct Answer {
        pub status: u16,
        pub body: String,
        /// Milliseconds to wait before answering, to let concurrent
        /// requests pile up.
        pub delay_ms: u64,
    }

    impl Answer {
        pub fn json(status: u16, body: serde_json::Value) -> Answer {
            Answer {
                status,
                body: body.to_string(),
                delay_ms: 0,
            }
        }

        pub fn delayed(mut self, ms: u64) -> Answer {
            self.delay_ms = ms;
            self
        }
    }

    type Handler = dyn Fn(&Seen) -> Answer + Send + Sync;

    pub struct Server {
        pub base: String,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Server {
        pub async fn start(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let handler: Arc<Handler> = Arc::new(handler);
            let log = seen.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let handler = handler.clone();
                    let log = log.clone();
                    tokio::spawn(async move {
                        let _ = serve(stream, handler, log).await;
                    });
                }
            });
            Server { base, seen }
        }

        pub fn requests(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }

        pub fn count(&self, path: &str) -> usize {
            self.requests().iter().filter(|r| r.path() == path).count()
        }

        pub fn counts(&self) -> HashMap<String, usize> {
            let mut counts = HashMap::new();
            for r in self.requests() {
                *counts.entry(r.path().to_string()).or_default() += 1;
            }
            counts
        }
    }

    async fn serve(
        mut stream: tokio::net::TcpStream,
        handler: Arc<Handler>,
        log: Arc<Mutex<Vec<Seen>>>,
    ) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let length = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = buf[head_end..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let seen = Seen {
            method,
            target,
            headers,
            body,
        };
        log.lock().unwrap().push(seen.clone());
        let answer = handler(&seen);
        if answer.delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(answer.delay_ms)).await;
        }
        let response = format!(
            "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
            answer.status,
            answer.body.len(),
            answer.body
        );
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    }
}
