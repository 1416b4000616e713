//! What the worker is doing, for `worker status` and the local status page.
//!
//! The running worker rewrites `<state>/status.json` about once a second; `worker status` reads
//! it (and asks the coordinator for the credit). The page on 127.0.0.1 serves the same JSON and
//! takes pause/resume requests, both only with the token in `<state>/page.token`, a file only
//! this user can read (like BOINC's GUI RPC password).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sparecycles_protocol::Millis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use crate::atomic::write_atomic;
use crate::policy::PauseReason;

pub const STATUS_FILE: &str = "status.json";
pub const TOKEN_FILE: &str = "page.token";

/// A snapshot of the worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub coordinator: String,
    pub worker_id: Option<Uuid>,
    pub updated_at: Millis,
    /// `computing`, `paused`, `waiting for work` or `stopped`.
    pub state: String,
    pub pause: Option<PauseReason>,
    /// The pause reason in words.
    pub pause_text: Option<String>,
    pub current: Option<CurrentUnit>,
    /// Leased tasks waiting behind the current one.
    pub buffered: usize,
    /// Results waiting for the coordinator's acknowledgement.
    pub outbox: usize,
    pub checkpoints: usize,
    /// Address of the local status page, when it runs.
    pub page: Option<String>,
}

/// The unit being computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentUnit {
    pub task_id: Uuid,
    pub job_id: Uuid,
    pub app: String,
    pub unit_seq: u64,
    pub unit: Value,
    pub progress: f64,
    /// Progress at which this run resumed the unit from a checkpoint.
    pub resumed_from: Option<f64>,
}

impl Status {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATUS_FILE)
    }

    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(&Status::path(state_dir), &bytes, 0o600)
    }

    pub fn read(state_dir: &Path) -> Option<Status> {
        serde_json::from_slice(&std::fs::read(Status::path(state_dir)).ok()?).ok()
    }

    /// Human-readable lines for `worker status`.
    pub fn describe(&self, now: Millis) -> String {
        let mut out = String::new();
        let age = (now - self.updated_at).max(0) / 1000;
        let running = self.state != "stopped" && age < 10;
        let state = if running {
            self.state.clone()
        } else if self.state == "stopped" {
            "stopped".into()
        } else {
            format!("not running (last seen {age} s ago)")
        };
        out.push_str(&format!("state:       {state}\n"));
        if let Some(reason) = &self.pause_text {
            out.push_str(&format!("paused:      {reason}\n"));
        }
        if let Some(c) = &self.current {
            out.push_str(&format!(
                "computing:   {} unit {} {} of job {} ({:.1}% done{})\n",
                c.app,
                c.unit_seq,
                c.unit,
                c.job_id,
                c.progress * 100.0,
                c.resumed_from
                    .map(|p| format!(", resumed from a checkpoint at {:.1}%", p * 100.0))
                    .unwrap_or_default()
            ));
        }
        out.push_str(&format!("buffered:    {} task(s)\n", self.buffered));
        out.push_str(&format!("outbox:      {} result(s) to send\n", self.outbox));
        out.push_str(&format!("checkpoints: {}\n", self.checkpoints));
        out.push_str(&format!("coordinator: {}\n", self.coordinator));
        if let Some(id) = self.worker_id {
            out.push_str(&format!("worker id:   {id}\n"));
        }
        if let Some(page) = &self.page {
            out.push_str(&format!("status page: {page}\n"));
        }
        out
    }
}

/// The page's token: created (random, mode 0600) on first use.
pub fn page_token(state_dir: &Path) -> std::io::Result<String> {
    let path = state_dir.join(TOKEN_FILE);
    if let Ok(token) = std::fs::read_to_string(&path)
        && token.trim().len() >= 32
    {
        return Ok(token.trim().to_owned());
    }
    let token = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    write_atomic(&path, format!("{token}\n").as_bytes(), 0o600)?;
    Ok(token)
}

/// What the page can read and change.
pub trait PageControl: Send + Sync + 'static {
    fn status(&self) -> Status;
    fn set_manual_pause(&self, paused: bool);
}

/// Serves the status page on `listener` until `stop` is set. Every `/api/` call needs
/// `Authorization: Bearer <token>`; the HTML itself holds no data.
pub async fn serve_page(
    listener: TcpListener,
    token: String,
    control: Arc<dyn PageControl>,
    stop: Arc<AtomicBool>,
) {
    let token = Arc::new(token);
    while !stop.load(Ordering::Relaxed) {
        let accepted =
            tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept()).await;
        let Ok(Ok((stream, _))) = accepted else {
            continue;
        };
        let (token, control) = (token.clone(), control.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                handle(stream, &token, control.as_ref()),
            )
            .await;
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    token: &str,
    control: &dyn PageControl,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 16 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let authorized = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("authorization")
                && v.trim()
                    .strip_prefix("Bearer ")
                    .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), token.as_bytes()))
        })
    });
    let (status, content_type, body) = match (method, path) {
        ("GET", "/") => ("200 OK", "text/html; charset=utf-8", PAGE.to_owned()),
        (_, p) if p.starts_with("/api/") && !authorized => (
            "401 Unauthorized",
            "text/plain",
            "token required (see `worker status`)".to_owned(),
        ),
        ("GET", "/api/status") => (
            "200 OK",
            "application/json",
            serde_json::to_string(&control.status()).unwrap_or_default(),
        ),
        ("POST", "/api/pause" | "/api/resume") => {
            control.set_manual_pause(path == "/api/pause");
            ("204 No Content", "text/plain", String::new())
        }
        _ => ("404 Not Found", "text/plain", "not found".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The page: reads the token from the address's `#token=` fragment (never sent to the server
/// in a URL), then polls the status API.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>SpareCycles worker</title>
<style>body{font:15px system-ui,sans-serif;margin:2em;max-width:50em}pre{background:#f4f4f4;padding:1em}</style>
</head><body><h1>SpareCycles worker</h1>
<p id="msg">Open the address that <code>worker status</code> prints (it carries the token).</p>
<p><button id="pause">Pause</button> <button id="resume">Resume</button></p>
<pre id="out"></pre>
<script>
const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
const auth = {headers: {"Authorization": "Bearer " + token}};
async function refresh() {
  const r = await fetch("/api/status", auth);
  if (!r.ok) { document.getElementById("msg").textContent = "Not authorized: open the address from `worker status`."; return; }
  const s = await r.json();
  document.getElementById("msg").textContent = s.state + (s.pause_text ? ": " + s.pause_text : "");
  document.getElementById("out").textContent = JSON.stringify(s, null, 2);
}
for (const what of ["pause", "resume"]) {
  document.getElementById(what).onclick = async () => {
    await fetch("/api/" + what, {method: "POST", ...auth}); refresh();
  };
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Fake(Mutex<bool>);

    impl PageControl for Fake {
        fn status(&self) -> Status {
            Status {
                state: if *self.0.lock().unwrap() {
                    "paused"
                } else {
                    "computing"
                }
                .into(),
                ..Status::default()
            }
        }
        fn set_manual_pause(&self, paused: bool) {
            *self.0.lock().unwrap() = paused;
        }
    }

    async fn call(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn page_needs_the_token_to_read_or_pause() {
        let dir = tempfile::tempdir().unwrap();
        let token = page_token(dir.path()).unwrap();
        assert_eq!(page_token(dir.path()).unwrap(), token, "the token is kept");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Arc::new(Fake::default());
        let stop = Arc::new(AtomicBool::new(false));
        let server = tokio::spawn(serve_page(
            listener,
            token.clone(),
            fake.clone(),
            stop.clone(),
        ));

        assert!(
            call(addr, "GET / HTTP/1.1\r\n\r\n")
                .await
                .contains("<button id=\"pause\">")
        );
        let refused = call(
            addr,
            "POST /api/pause HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n",
        )
        .await;
        assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
        assert!(!*fake.0.lock().unwrap());
        let auth = format!("Authorization: Bearer {token}\r\n");
        let paused = call(addr, &format!("POST /api/pause HTTP/1.1\r\n{auth}\r\n")).await;
        assert!(paused.starts_with("HTTP/1.1 204"), "{paused}");
        let status = call(addr, &format!("GET /api/status HTTP/1.1\r\n{auth}\r\n")).await;
        assert!(status.contains("\"state\":\"paused\""), "{status}");
        call(addr, &format!("POST /api/resume HTTP/1.1\r\n{auth}\r\n")).await;
        assert!(!*fake.0.lock().unwrap());
        stop.store(true, Ordering::Relaxed);
        server.await.unwrap();
    }
}
