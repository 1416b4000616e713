//! The coordinator's HTTP API as the worker sees it; the only code that knows URLs.
//!
//! Every call maps the answer onto [`ClientError`] so the loops in `runner` only decide between
//! "retry later", "enroll again" and "give up on this request".

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sparecycles_protocol::work::{
    PresenceRequest, PresenceResponse, ReleaseRequest, ReleaseResponse,
};
use sparecycles_protocol::{
    EnrollRequest, EnrollResponse, ErrorBody, HeartbeatRequest, HeartbeatResponse, LeaseRequest,
    LeaseResponse, ReportRequest, ReportResponse, WorkerView,
};
use sparecycles_wasm::MAX_MODULE_BYTES;

/// Longest time to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time for a whole request (a report may carry a few megabytes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Most characters of a non-JSON error body kept for the log.
const MAX_DETAIL_CHARS: usize = 300;

/// Why a call to the coordinator did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Network error, timeout, 408, 429 or 5xx, or an unreadable answer: try again later,
    /// after `retry_after` when the coordinator said so.
    #[error("coordinator unavailable: {reason}")]
    Transient {
        retry_after: Option<Duration>,
        reason: String,
    },
    /// 401: the coordinator does not know these credentials (a new database, a revoked token).
    #[error("the coordinator does not recognise this worker's credentials")]
    Unauthorized,
    /// Any other 4xx: the coordinator refused this request; sending it again will not help.
    #[error("coordinator refused the request: {0}")]
    Refused(ErrorBody),
    /// The client cannot be built (bad URL, TLS setup).
    #[error("invalid client configuration: {0}")]
    Config(String),
}

/// How to reach coordinators: extra trust for https, and whether plain http may leave this
/// machine.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// A CA certificate (PEM) to trust besides the system's, for a self-signed coordinator.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Allow `http://` to a host other than this machine.
    pub insecure: bool,
}

/// Whether `url` names this machine (where plain HTTP never crosses a network).
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// A connection to one coordinator, with this worker's token once it has one.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The canonical form of a coordinator URL: trimmed, without trailing slashes.
pub fn normalize_base_url(base_url: &str) -> String {
    base_url.trim().trim_end_matches('/').to_owned()
}

impl Client {
    /// A client for the coordinator at `base_url` (`http://host:port`, with or without a
    /// trailing slash), authenticating with `token` when given.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Client, ClientError> {
        Self::with_transport(base_url, token, &Transport::default())
    }

    /// Like [`Client::new`], with `transport`'s trust and plain-HTTP rules. Refuses `http://`
    /// to another machine unless `transport.insecure`, before any connection is made.
    pub fn with_transport(
        base_url: &str,
        token: Option<String>,
        transport: &Transport,
    ) -> Result<Client, ClientError> {
        let base = normalize_base_url(base_url);
        let url = reqwest::Url::parse(&base)
            .map_err(|e| ClientError::Config(format!("coordinator URL {base:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ClientError::Config(format!(
                "coordinator URL {base:?} must be http(s)://host[:port]"
            )));
        }
        if url.scheme() == "http" && !transport.insecure && !is_loopback(&url) {
            return Err(ClientError::Config(format!(
                "refusing plain http:// to {base}: the worker's token and results would cross the \
                 network unencrypted; use https:// (see --ca-cert), or pass --insecure"
            )));
        }
        // reqwest is built without a default crypto provider; library users (tests) may not have
        // installed one. Installing fails harmlessly when one already is.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = &transport.ca_cert_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| ClientError::Config(format!("CA certificate: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .user_agent(concat!("sparecycles-worker/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A POST silently turned into a GET by a redirect would only confuse; say so instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?;
        Ok(Client { http, base, token })
    }

    /// The coordinator's base URL, normalized.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST /api/v1/workers/enroll`: registers this machine; needs no token.
    pub async fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse, ClientError> {
        self.post("/api/v1/workers/enroll", req, false).await
    }

    /// `POST /api/v1/work/lease`: asks for up to `max_tasks` tasks.
    pub async fn lease(&self, req: &LeaseRequest) -> Result<LeaseResponse, ClientError> {
        self.post("/api/v1/work/lease", req, true).await
    }

    /// `POST /api/v1/work/heartbeat`: reports progress, learns which tasks to abort.
    pub async fn heartbeat(
        &self,
        req: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        self.post("/api/v1/work/heartbeat", req, true).await
    }

    /// `POST /api/v1/work/report`: delivers finished results.
    pub async fn report(&self, req: &ReportRequest) -> Result<ReportResponse, ClientError> {
        self.post("/api/v1/work/report", req, true).await
    }

    /// `POST /api/v1/work/release`: hands back leased tasks this worker will not compute.
    pub async fn release(&self, req: &ReleaseRequest) -> Result<ReleaseResponse, ClientError> {
        self.post("/api/v1/work/release", req, true).await
    }

    /// `POST /api/v1/work/presence`: an open line the coordinator holds for `wait_ms`; if
    /// this process dies, the closed connection tells the coordinator at once.
    pub async fn presence(&self, req: &PresenceRequest) -> Result<PresenceResponse, ClientError> {
        self.post("/api/v1/work/presence", req, true).await
    }

    /// `GET /api/v1/work/me`: this worker as the coordinator sees it (counts, credit).
    pub async fn me(&self) -> Result<WorkerView, ClientError> {
        let url = format!("{}/api/v1/work/me", self.base);
        let token = self.token.as_ref().ok_or(ClientError::Unauthorized)?;
        let response = self
            .http
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(transport)?;
        Self::answer(response, &url).await
    }

    /// `GET /api/v1/modules/{sha256}`: a module's bytes, at most [`MAX_MODULE_BYTES`]. The
    /// caller checks them against the hash: nothing here trusts the answer.
    pub async fn module(&self, sha256: &str) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}/api/v1/modules/{sha256}", self.base);
        let mut response = self.http.get(&url).send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = parse_retry_after(response.headers());
            let text = response.text().await.unwrap_or_default();
            return Err(classify(status, retry_after, &text));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > MAX_MODULE_BYTES {
                return Err(ClientError::Refused(ErrorBody {
                    kind: "about:blank".to_owned(),
                    title: "module too large".to_owned(),
                    status: status.as_u16(),
                    detail: format!("{url} sent more than {MAX_MODULE_BYTES} bytes"),
                }));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        auth: bool,
    ) -> Result<R, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.post(&url).json(body);
        if auth {
            match &self.token {
                Some(token) => request = request.bearer_auth(token),
                None => return Err(ClientError::Unauthorized),
            }
        }
        let response = request.send().await.map_err(transport)?;
        Self::answer(response, &url).await
    }

    async fn answer<R: DeserializeOwned>(
        response: reqwest::Response,
        url: &str,
    ) -> Result<R, ClientError> {
        let status = response.status();
        if status.is_success() {
            return response
                .json::<R>()
                .await
                .map_err(|e| ClientError::Transient {
                    retry_after: None,
                    reason: format!("unreadable answer from {url}: {e}"),
                });
        }
        let retry_after = parse_retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        Err(classify(status, retry_after, &text))
    }
}

/// Maps a non-success answer onto the error the loops act on.
fn classify(status: StatusCode, retry_after: Option<Duration>, body: &str) -> ClientError {
    if status == StatusCode::UNAUTHORIZED {
        return ClientError::Unauthorized;
    }
    let problem = serde_json::from_str::<ErrorBody>(body).unwrap_or_else(|_| ErrorBody {
        kind: "about:blank".to_owned(),
        title: status.canonical_reason().unwrap_or("error").to_owned(),
        status: status.as_u16(),
        detail: body.chars().take(MAX_DETAIL_CHARS).collect(),
    });
    let transient = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT;
    if transient {
        ClientError::Transient {
            retry_after,
            reason: problem.to_string(),
        }
    } else {
        ClientError::Refused(problem)
    }
}

/// A network-level failure (the message names the URL).
fn transport(e: reqwest::Error) -> ClientError {
    ClientError::Transient {
        retry_after: None,
        reason: error_chain(&e),
    }
}

/// reqwest's top-level message ("error sending request") hides the cause; show all of it.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// `Retry-After` in seconds; the HTTP-date form is not used by our coordinator and is ignored.
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn status_classes() {
        let body = r#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"max_tasks must be at least 1"}"#;
        match classify(StatusCode::BAD_REQUEST, None, body) {
            ClientError::Refused(p) => assert_eq!(p.detail, "max_tasks must be at least 1"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, None, ""),
            ClientError::Unauthorized
        ));
        match classify(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            "slow down",
        ) {
            ClientError::Transient {
                retry_after,
                reason,
            } => {
                assert_eq!(retry_after, Some(Duration::from_secs(3)));
                assert!(reason.contains("slow down"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, None, "<html>"),
            ClientError::Transient { .. }
        ));
    }

    #[test]
    fn retry_after_seconds_only() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 12 "));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(12)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&headers), None);
    }

    #[test]
    fn urls_are_checked_and_normalized() {
        let c = Client::new("http://127.0.0.1:8080//", None).unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:8080");
        assert!(matches!(
            Client::new("ftp://x", None),
            Err(ClientError::Config(_))
        ));
        assert!(matches!(
            Client::new("not a url", None),
            Err(ClientError::Config(_))
        ));
        let debug = format!(
            "{:?}",
            Client::new("http://localhost", Some("secret".into())).unwrap()
        );
        assert!(!debug.contains("secret"));
    }

    #[test]
    fn plain_http_stays_on_this_machine_unless_insecure() {
        for ok in [
            "http://127.0.0.1:1",
            "http://[::1]:1",
            "http://LOCALHOST",
            "https://example.invalid",
        ] {
            assert!(Client::new(ok, None).is_ok(), "{ok}");
        }
        for refused in [
            "http://example.invalid",
            "http://10.0.0.1:8080",
            "http://127.0.0.1.example",
        ] {
            match Client::new(refused, None) {
                Err(ClientError::Config(msg)) => assert!(msg.contains("--insecure"), "{msg}"),
                other => panic!("{refused}: {other:?}"),
            }
        }
        let insecure = Transport {
            insecure: true,
            ..Transport::default()
        };
        assert!(Client::with_transport("http://10.0.0.1:8080", None, &insecure).is_ok());
    }
}
