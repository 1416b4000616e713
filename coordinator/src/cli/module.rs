//! `coordinator upload-module FILE`: uploads a WebAssembly module for module jobs and prints the
//! SHA-256 that job specs name as `module`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::Connection;
use super::client::ApiClient;

#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// The module: binary (`.wasm`) or text format (`.wat`).
    pub file: PathBuf,
    #[command(flatten)]
    pub conn: Connection,
}

pub async fn run(args: UploadArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let client = ApiClient::new(&args.conn.coordinator, &args.conn.token()?)?;
    let module = client.upload_module(bytes).await?;
    eprintln!(
        "stored {} ({} bytes); jobs name it as module = \"{}\"",
        args.file.display(),
        module.size,
        module.sha256
    );
    println!("{}", module.sha256);
    Ok(ExitCode::SUCCESS)
}
