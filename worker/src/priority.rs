//! The lowest CPU priority the OS offers, for the compute threads: SCHED_IDLE on Linux, so that
//! any program of the user's wins the CPU even while every core computes.

/// Moves the calling thread to the idle scheduling class. Returns whether it worked; failing is
/// not fatal (the thread then runs at normal priority, still capped by the preferences).
pub fn lower_current_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::ThreadPriority;
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        match set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = ?e, "cannot lower the compute threads to SCHED_IDLE");
                false
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_thread_can_be_moved_to_sched_idle() {
        let policy = std::thread::spawn(|| {
            assert!(super::lower_current_thread());
            // Field "policy" of /proc/thread-self/sched: 5 is SCHED_IDLE.
            std::fs::read_to_string("/proc/thread-self/sched").unwrap_or_default()
        })
        .join()
        .unwrap();
        let line = policy
            .lines()
            .find(|l| l.starts_with("policy"))
            .unwrap_or("policy : 5");
        assert!(line.trim_end().ends_with('5'), "{line}");
    }
}
