//! Assembly: streams a job's canonical outputs, in unit order, through the app's assembler.

use sparecycles_protocol::now_millis;

use crate::state::AppState;
use crate::store::JobRow;

/// Why pushing a page of outputs stopped.
enum Halt {
    /// The store returned units out of order.
    Order { expected: u64, found: u64 },
    /// The app refused an output.
    App {
        seq: u64,
        error: sparecycles_apps::AppError,
    },
}

/// Canonical outputs fetched per store round trip; bounds the memory assembly needs.
const PAGE: u32 = 256;

/// Assembles a job whose units are all done, and completes it (or fails it if the app
/// cannot assemble the outputs).
pub async fn assemble_job(state: &AppState, job: &JobRow) -> anyhow::Result<()> {
    let Some(info) = state.runnable_job_of(job).await? else {
        return Ok(());
    };
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
        // Pushing is CPU work too (a module's sc_combine runs in its sandbox): off the async
        // workers, a page at a time.
        let from = next;
        let (back, pushed) = tokio::task::spawn_blocking(move || {
            let mut next = from;
            for (seq, output) in &page {
                if *seq != next {
                    return (
                        assembler,
                        Err(Halt::Order {
                            expected: next,
                            found: *seq,
                        }),
                    );
                }
                if let Err(error) = assembler.push(*seq, output) {
                    return (assembler, Err(Halt::App { seq: *seq, error }));
                }
                next += 1;
            }
            (assembler, Ok(next))
        })
        .await?;
        assembler = back;
        match pushed {
            Ok(n) => next = n,
            Err(Halt::Order { expected, found }) => {
                anyhow::bail!("job {}: expected unit {expected}, found {found}", job.id);
            }
            Err(Halt::App { seq, error }) => {
                store
                    .fail_job(
                        job.id,
                        &format!("assembly failed at unit {seq}: {error}"),
                        now_millis(),
                    )
                    .await?;
                return Ok(());
            }
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
