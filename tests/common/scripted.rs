//! `ScriptedApp`: an upstream that answers with exact bytes, for testing how sluice reads
//! HTTP/1.1 from the app (framing, interim responses, early answers, closed connections).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as the scripted app read it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Which accepted connection (0, 1, ...) carried it.
    pub conn: usize,
    /// Its position on that connection (0 for the first).
    pub nth: usize,
    /// The request head as text, up to and without the blank line.
    pub head: String,
    /// The body, de-chunked when it was chunked (empty for `Reply::BeforeBody`).
    pub body: Vec<u8>,
}

impl Seen {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// What the app does with a request.
pub enum Reply {
    /// Reads the body, writes these bytes, waits for the next request.
    Bytes(Vec<u8>),
    /// Reads the body, writes these bytes, closes the connection.
    ThenClose(Vec<u8>),
    /// Writes these bytes right after the head, without reading the body, then closes.
    BeforeBody(Vec<u8>),
    /// Reads the request, then closes without answering.
    Close,
}

type Script = dyn Fn(&Seen) -> Reply + Send + Sync;

pub struct ScriptedApp {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl ScriptedApp {
    pub async fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> ScriptedApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut conn = 0;
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, conn, script.clone(), log.clone()));
                conn += 1;
            }
        });
        ScriptedApp { addr, seen, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request read so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Connections that carried at least one request.
    pub fn connections_used(&self) -> usize {
        self.seen().iter().map(|s| s.conn + 1).max().unwrap_or(0)
    }
}

impl Drop for ScriptedApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    conn: usize,
    script: Arc<Script>,
    log: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buf = Vec::new();
    for nth in 0.. {
        let Some(head_len) = read_until_head(&mut stream, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_len - 4]).into_owned();
        buf.drain(..head_len);
        let mut seen = Seen {
            conn,
            nth,
            head,
            body: Vec::new(),
        };
        // The script decides before the body is read, so that it can answer early.
        let probe = seen.clone();
        let reply = script(&probe);
        if !matches!(reply, Reply::BeforeBody(_)) {
            match read_body(&mut stream, &mut buf, &seen).await {
                Some(body) => seen.body = body,
                None => return,
            }
        }
        if let Ok(mut l) = log.lock() {
            l.push(seen);
        }
        match reply {
            Reply::Bytes(b) => {
                if stream.write_all(&b).await.is_err() {
                    return;
                }
            }
            Reply::ThenClose(b) | Reply::BeforeBody(b) => {
                let _ = stream.write_all(&b).await;
                let _ = stream.shutdown().await;
                return;
            }
            Reply::Close => return,
        }
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// The length of the head (with its blank line) at the front of `buf`, reading more
/// as needed; `None` once the peer closed.
async fn read_until_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        if !fill(stream, buf).await {
            return None;
        }
    }
}

async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, seen: &Seen) -> Option<Vec<u8>> {
    let chunked = seen
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if !chunked {
        let len: usize = seen
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            if !fill(stream, buf).await {
                return None;
            }
        }
        return Some(buf.drain(..len).collect());
    }
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if !fill(stream, buf).await {
                return None;
            }
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers (ignored) up to the blank line.
            let end = read_until_blank(stream, buf).await?;
            buf.drain(..end);
            return Some(body);
        }
        while buf.len() < size + 2 {
            if !fill(stream, buf).await {
                return None;
            }
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

async fn read_until_blank(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if buf.starts_with(b"\r\n") {
            return Some(2);
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        if !fill(stream, buf).await {
            return None;
        }
    }
}
