//! Loopback HTTP/1.1 servers written by hand, so a test controls every
//! byte (a trickle, a held connection, a gigabyte streamed in chunks and
//! never held in memory): for tests/outbound_http.rs and the HTTP rows of
//! host/benches/attacks.rs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A listener on a free port of 127.0.0.1:18080-18089, the ports the
/// example bot `status` asks for (`plugins/status`); a port this process
/// already listens on is not free, so two calls give two ports.
pub async fn status_port() -> TcpListener {
    for port in 18080..=18089 {
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
            return listener;
        }
    }
    panic!("no free port in 127.0.0.1:18080-18089 (the ones `status` asks for)");
}

/// How a test server answers one connection.
#[derive(Clone)]
pub enum Reply {
    /// `200 OK` with this body.
    Ok(&'static str),
    /// `302 Found` to this location.
    Redirect(String),
    /// Headers, then one byte at a time, forever (slowloris).
    Trickle,
    /// Headers (chunked), then 1 GB in 64 KB chunks.
    Gigabyte,
    /// Headers saying 1 GB, then nothing.
    DeclaredGigabyte,
    /// Headers, then hold the connection open without a byte more; report
    /// when the client closes it.
    Hold(Arc<tokio::sync::Notify>),
}

/// A loopback HTTP server; counts the connections it accepted.
pub struct Server {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server on a free port of 127.0.0.1.
pub async fn serve(reply: Reply) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_on(listener, reply)
}

/// A server on a listener the caller bound (a port a plugin asks for).
pub fn serve_on(listener: TcpListener, reply: Reply) -> Server {
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(answer(socket, reply.clone()));
        }
    });
    Server {
        port,
        connections,
        task,
    }
}

async fn answer(mut socket: TcpStream, reply: Reply) {
    // Read the request head (the tests send no body past it).
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = match reply {
        Reply::Ok(body) => {
            socket
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await
        }
        Reply::Redirect(to) => {
            socket
                .write_all(
                    format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\n\r\n")
                        .as_bytes(),
                )
                .await
        }
        Reply::Trickle => {
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n")
                .await;
            loop {
                if socket.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        Reply::Gigabyte => {
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let chunk = vec![b'x'; 64 << 10];
            for _ in 0..(1 << 30) / chunk.len() {
                if socket
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await
                    .is_err()
                    || socket.write_all(&chunk).await.is_err()
                    || socket.write_all(b"\r\n").await.is_err()
                {
                    return;
                }
            }
            socket.write_all(b"0\r\n\r\n").await
        }
        Reply::DeclaredGigabyte => {
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n")
                .await
        }
        Reply::Hold(closed) => {
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
                .await;
            // The client sends nothing more: a read returns when it closes.
            let _ = socket.read(&mut buf).await;
            closed.notify_one();
            Ok(())
        }
    };
}
