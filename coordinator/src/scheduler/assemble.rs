//! Assembly: streams a job's canonical outputs, in unit order, through the app's assembler.

use sparecycles_protocol::now_millis;

use crate::state::AppState;
use crate::store::JobRow;

/// Canonical outputs fetched per store round trip; bounds the memory assembly needs.
const PAGE: u32 = 256;

/// Assembles a job whose units are all done, and completes it (or fails it if the app
/// cannot assemble the outputs).
pub async fn assemble_job(state: &AppState, job: &JobRow) -> anyhow::Result<()> {
    let info = state.job_info_of(job).await?;
    let store = state.store();
    let started = std::time::Instant::now();
    let mut assembler = match info.app.assembler(&info.params) {
        Ok(a) => a,
        Err(e) => {
            store
                .fail_job(job.id, &format!("assembly failed: {e}"), now_millis())
                .await?;
            return Ok(());
        }
    };
    let mut next = 0u64;
    while next < job.unit_count {
        let page = store.canonical_outputs(job.id, next, PAGE).await?;
        if page.is_empty() {
            anyhow::bail!("job {}: canonical output of unit {next} missing", job.id);
        }
        for (seq, output) in &page {
            if *seq != next {
                anyhow::bail!("job {}: expected unit {next}, found {seq}", job.id);
            }
            if let Err(e) = assembler.push(*seq, output) {
                store
                    .fail_job(
                        job.id,
                        &format!("assembly failed at unit {seq}: {e}"),
                        now_millis(),
                    )
                    .await?;
                return Ok(());
            }
            next += 1;
        }
    }
    // The final step (e.g. PNG encoding) is CPU-bound: keep it off the async workers.
    let assembled = tokio::task::spawn_blocking(move || assembler.finish()).await?;
    match assembled {
        Ok(result) => {
            store
                .complete_job(job.id, result.content_type, &result.body, now_millis())
                .await?;
            tracing::info!(
                job = %job.id,
                name = %job.name,
                units = job.unit_count,
                bytes = result.body.len(),
                ms = started.elapsed().as_millis() as u64,
                "job completed"
            );
        }
        Err(e) => {
            store
                .fail_job(job.id, &format!("assembly failed: {e}"), now_millis())
                .await?;
        }
    }
    state.forget_job(job.id);
    Ok(())
}
