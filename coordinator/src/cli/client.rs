//! A small typed client of the job API, for the CLI and the demo.

use anyhow::Context;
use reqwest::StatusCode;
use sparecycles_protocol::{
    ErrorBody, JobSpec, JobView, ModuleView, TokenCreated, TokenList, TokenRequest, TokenView,
};
use uuid::Uuid;

/// Talks to one coordinator as admin.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// An assembled result as downloaded.
#[derive(Debug)]
pub struct Download {
    pub content_type: String,
    pub body: Vec<u8>,
}

async fn fail(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    match resp.json::<ErrorBody>().await {
        Ok(body) => {
            anyhow::anyhow!("{}", body.detail).context(format!("coordinator answered {status}"))
        }
        Err(_) => anyhow::anyhow!("coordinator answered {status}"),
    }
}

impl ApiClient {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        Self::with_ca(base, token, None)
    }

    /// Like [`ApiClient::new`], also trusting the CA certificate `ca_pem` (PEM) for HTTPS.
    pub fn with_ca(base: &str, token: &str, ca_pem: Option<&[u8]>) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
        if let Some(pem) = ca_pem {
            builder = builder.add_root_certificate(
                reqwest::Certificate::from_pem(pem)
                    .context("--ca-cert is not a PEM certificate")?,
            );
        }
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: builder.build()?,
        })
    }

    pub async fn submit(&self, spec: &JobSpec) -> anyhow::Result<JobView> {
        let resp = self
            .http
            .post(format!("{}/api/v1/jobs", self.base))
            .bearer_auth(&self.token)
            .json(spec)
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator at {}", self.base))?;
        if resp.status() != StatusCode::CREATED {
            return Err(fail(resp).await.context("the job was refused"));
        }
        Ok(resp.json().await?)
    }

    /// Uploads a WebAssembly module (binary or text format).
    pub async fn upload_module(&self, bytes: Vec<u8>) -> anyhow::Result<ModuleView> {
        let resp = self
            .http
            .post(format!("{}/api/v1/modules", self.base))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/wasm")
            .body(bytes)
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator at {}", self.base))?;
        if !resp.status().is_success() {
            return Err(fail(resp).await.context("the module was refused"));
        }
        Ok(resp.json().await?)
    }

    pub async fn job(&self, id: Uuid) -> anyhow::Result<JobView> {
        self.job_waiting(id, std::time::Duration::ZERO).await
    }

    /// The job once it has ended, or as it is after `wait` (a long poll: the answer comes
    /// as soon as the job ends).
    pub async fn job_waiting(
        &self,
        id: Uuid,
        wait: std::time::Duration,
    ) -> anyhow::Result<JobView> {
        let mut url = format!("{}/api/v1/jobs/{id}", self.base);
        if !wait.is_zero() {
            url.push_str(&format!("?wait_ms={}", wait.as_millis()));
        }
        Ok(self.send(self.http.get(url)).await?.json().await?)
    }

    pub async fn result(&self, id: Uuid) -> anyhow::Result<Download> {
        let req = self
            .http
            .get(format!("{}/api/v1/jobs/{id}/result", self.base));
        let resp = self.send(req).await?;
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        Ok(Download {
            content_type,
            body: resp.bytes().await?.to_vec(),
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator at {}", self.base))?;
        if !resp.status().is_success() {
            return Err(fail(resp).await);
        }
        Ok(resp)
    }

    /// `POST /api/v1/tokens` (admin).
    pub async fn create_token(&self, name: &str) -> anyhow::Result<TokenCreated> {
        let req = self
            .http
            .post(format!("{}/api/v1/tokens", self.base))
            .json(&TokenRequest {
                name: name.to_owned(),
            });
        Ok(self.send(req).await?.json().await?)
    }

    /// `GET /api/v1/tokens` (admin).
    pub async fn tokens(&self) -> anyhow::Result<Vec<TokenView>> {
        let req = self.http.get(format!("{}/api/v1/tokens", self.base));
        Ok(self.send(req).await?.json::<TokenList>().await?.tokens)
    }

    /// `DELETE /api/v1/tokens/{id}` (admin).
    pub async fn revoke_token(&self, id: Uuid) -> anyhow::Result<TokenView> {
        let req = self
            .http
            .delete(format!("{}/api/v1/tokens/{id}", self.base));
        Ok(self.send(req).await?.json().await?)
    }
}
