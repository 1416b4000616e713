//! The pause control: a thread samples the machine ten times a second and pauses or resumes
//! computing as the volunteer's policy says (user input, time windows, battery, other
//! programs, memory, the duty cycle, a manual pause); it also keeps `status.json` fresh and
//! backs the local status page.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sparecycles_protocol::now_millis;

use super::Shared;
use crate::idle::IdleSource;
use crate::outbox::Outbox;
use crate::policy::{CpuTimes, PauseReason, Readings, decide, on_battery, own_rss};
use crate::status::{CurrentUnit, PageControl, Status};

/// How often the idle source is read and pauses applied.
const TICK: Duration = Duration::from_millis(100);
/// Ticks between samples of the slower readings (battery, CPU, memory, clock) and status writes.
const SLOW_EVERY: u32 = 10;
/// Ticks in one duty cycle period (2 s).
const DUTY_PERIOD: u32 = 20;

/// What the control shares with the rest of the runner.
#[derive(Debug, Default)]
pub(crate) struct Control {
    manual: AtomicBool,
    reason: Mutex<Option<PauseReason>>,
    throttled: AtomicBool,
    pub(crate) page: Mutex<Option<String>>,
}

impl Control {
    pub(crate) fn reason(&self) -> Option<PauseReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_manual(&self, paused: bool) {
        self.manual.store(paused, Ordering::Relaxed);
    }
}

/// The status as the page and `status.json` show it.
pub(crate) fn snapshot(shared: &Shared, outbox: &Outbox) -> Status {
    // The oldest of the units being computed (several run side by side when they are short).
    let current = shared.tasks.current().into_iter().next();
    let pause = shared.control.reason();
    let state = if shared.stop.is_stopped() {
        "stopped"
    } else if pause.is_some() {
        "paused"
    } else if current.is_none() {
        "waiting for work"
    } else if shared.control.throttled.load(Ordering::Relaxed) {
        "computing (throttled)"
    } else {
        "computing"
    };
    Status {
        pid: std::process::id(),
        coordinator: shared.config.coordinator.clone(),
        worker_id: Some(shared.session.worker_id()),
        updated_at: now_millis(),
        state: state.into(),
        pause_text: pause.as_ref().map(ToString::to_string),
        pause,
        current: current.map(|c| CurrentUnit {
            task_id: c.task.task_id,
            job_id: c.task.job_id,
            app: c.task.app.clone(),
            unit_seq: c.task.unit_seq,
            unit: c.task.unit.clone(),
            progress: c.ctx.fraction(),
            resumed_from: c.resumed_from,
        }),
        buffered: shared.tasks.buffered().len(),
        outbox: outbox.len(),
        checkpoints: shared.checkpoints.count(),
        page: shared
            .control
            .page
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    }
}

fn write_status(shared: &Shared, outbox: &Outbox) {
    if let Err(e) = snapshot(shared, outbox).write(&shared.config.state_dir) {
        tracing::debug!(error = %e, "cannot write status.json");
    }
}

/// Local day of the week (0 = Monday) and minute of the day.
fn local_clock() -> (u8, u16) {
    let now = jiff::ZonedDateTime::now();
    let weekday = now.weekday().to_monday_zero_offset() as u8;
    (weekday, now.hour() as u16 * 60 + now.minute() as u16)
}

/// Starts the control thread; it ends once the runner stops, after writing a last status.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    mut idle: Box<dyn IdleSource>,
    outbox: Outbox,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let policy = shared.config.policy.clone();
            let mut readings = Readings::default();
            let mut cpu_before = CpuTimes::read();
            // The runner starts paused: nothing is leased or computed before the first look.
            let mut paused = true;
            let mut tick: u32 = 0;
            let mut next = Instant::now();
            while !shared.stop.is_stopped() {
                readings.idle_for = idle.idle_for(SystemTime::now());
                if tick.is_multiple_of(SLOW_EVERY) {
                    readings.on_battery =
                        policy.pause_on_battery && on_battery("/sys/class/power_supply".as_ref());
                    let cpu_now = CpuTimes::read();
                    readings.other_cpu_percent = match (&cpu_now, &cpu_before) {
                        (Some(now), Some(before)) => now.other_percent_since(before),
                        _ => None,
                    };
                    cpu_before = cpu_now;
                    readings.own_rss_bytes = own_rss();
                    (readings.weekday, readings.minute) = local_clock();
                }
                let reason = if shared.control.manual.load(Ordering::Relaxed) {
                    Some(PauseReason::Manual)
                } else {
                    decide(&policy, &readings)
                };
                let duty_off = reason.is_none()
                    && policy.cpu_percent < 100
                    && tick % DUTY_PERIOD >= u32::from(policy.cpu_percent) * DUTY_PERIOD / 100;
                shared
                    .control
                    .throttled
                    .store(policy.cpu_percent < 100, Ordering::Relaxed);
                let changed = {
                    let mut current = shared
                        .control
                        .reason
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    // A new kind of reason, not a new idle time, is worth a log line.
                    let changed = current.as_ref().map(std::mem::discriminant)
                        != reason.as_ref().map(std::mem::discriminant);
                    *current = reason.clone();
                    changed
                };
                if changed {
                    match &reason {
                        Some(r) => tracing::info!(source = idle.name(), "pausing: {r}"),
                        None => tracing::info!("computing"),
                    }
                }
                let pause = reason.is_some() || duty_off;
                if pause != paused {
                    shared.tasks.set_paused(pause);
                    if pause {
                        // The paused unit may hold its thread for long: its predecessors'
                        // results go out now.
                        shared.held.release();
                    }
                    paused = pause;
                }
                if changed || tick.is_multiple_of(SLOW_EVERY) {
                    write_status(&shared, &outbox);
                }
                tick = tick.wrapping_add(1);
                next += TICK;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            write_status(&shared, &outbox);
        })
}

/// The status page's view of the runner.
pub(crate) struct Page {
    pub(crate) shared: Arc<Shared>,
    pub(crate) outbox: Outbox,
}

impl PageControl for Page {
    fn status(&self) -> Status {
        snapshot(&self.shared, &self.outbox)
    }

    fn set_manual_pause(&self, paused: bool) {
        tracing::info!(paused, "pause set from the status page");
        self.shared.control.set_manual(paused);
    }
}
