//! `coordinator submit FILE [--wait]`: sends a job spec, optionally follows it to the end.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sparecycles_protocol::{JobSpec, JobState, JobView};

use super::Connection;
use super::client::{ApiClient, Download};

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// Job spec file: TOML (`.toml`) or JSON (`.json`).
    pub file: PathBuf,
    /// Follow the job with a progress bar until it ends, then print or save its result.
    #[arg(long)]
    pub wait: bool,
    /// Where to save the result (default: printed if JSON, `<job name>.png` if an image).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub conn: Connection,
}

/// Reads a spec file, with errors that name the file and the problem.
pub fn read_spec(path: &Path) -> anyhow::Result<JobSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_spec(
        &text,
        path.extension().and_then(|e| e.to_str()) == Some("json"),
    )
    .with_context(|| format!("{} is not a valid job spec", path.display()))
}

/// Parses a spec from TOML (or JSON).
pub fn parse_spec(text: &str, json: bool) -> anyhow::Result<JobSpec> {
    if json {
        Ok(serde_json::from_str(text)?)
    } else {
        Ok(toml::from_str(text)?)
    }
}

pub async fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let spec = read_spec(&args.file)?;
    let client = args.conn.client()?;
    let job = client.submit(&spec).await?;
    println!(
        "submitted job {} ({}, {} units)",
        job.id, job.name, job.units.total
    );
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let bar = ProgressBar::new(job.units.total);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} units ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(job.name.clone());
    let done = follow(client.clone(), job, bar).await?;
    finish(&client, &done, args.output.as_deref()).await
}

/// Follows a job until it ends, moving `bar` along: each look waits up to a quarter second
/// for the end (a long poll), so the bar moves four times a second and the end shows at once.
pub async fn follow(client: ApiClient, job: JobView, bar: ProgressBar) -> anyhow::Result<JobView> {
    const LOOK: Duration = Duration::from_millis(250);
    loop {
        let asked = tokio::time::Instant::now();
        let now = client.job_waiting(job.id, LOOK).await?;
        bar.set_position(now.units.done);
        bar.set_message(now.state.to_string());
        if now.state.is_final() {
            bar.finish();
            return Ok(now);
        }
        // A coordinator that did not wait (older, or shutting down) is polled, not flooded.
        tokio::time::sleep_until(asked + LOOK).await;
    }
}

/// Prints or saves the result of an ended job; exit code 1 if it did not complete.
pub async fn finish(
    client: &ApiClient,
    job: &JobView,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    if job.state != JobState::Completed {
        eprintln!(
            "job {} {}: {}",
            job.id,
            job.state,
            job.error.as_deref().unwrap_or("no reason given")
        );
        return Ok(ExitCode::FAILURE);
    }
    let result = client.result(job.id).await?;
    match save(&result, &job.name, output)? {
        Some(path) => println!("{}: result saved to {}", job.name, path.display()),
        None => println!("{}: {}", job.name, String::from_utf8_lossy(&result.body)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Saves a result where asked, or next to the caller if it is not JSON; returns the path.
pub fn save(
    result: &Download,
    name: &str,
    output: Option<&Path>,
) -> anyhow::Result<Option<PathBuf>> {
    let path = match output {
        Some(p) => p.to_path_buf(),
        None if result.content_type.starts_with("application/json") => return Ok(None),
        None => PathBuf::from(format!(
            "{}.{}",
            file_stem(name),
            extension(&result.content_type)
        )),
    };
    std::fs::write(&path, &result.body)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(path))
}

fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/png" => "png",
        t if t.starts_with("application/json") => "json",
        _ => "bin",
    }
}

/// A job name made safe as a file name.
fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() { "result".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(file_stem("my job/../x"), "my-job----x");
        assert_eq!(file_stem(""), "result");
    }

    #[test]
    fn toml_spec_parses() {
        let spec = parse_spec(
            "name = \"p\"\napp = \"prime-count\"\n[params]\nstart = 0\nend = 100\nunit_size = 10\n",
            false,
        )
        .unwrap();
        assert_eq!(spec.params["end"], 100);
        assert!(parse_spec("name = \"p\"\napp = \"x\"\nparms = {}\n", false).is_err());
    }
}
