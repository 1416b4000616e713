-- A worker's own timed-out tasks, for giving them back when their replacements wait (the lease's
-- revive). Timeouts are rare, so this index stays small and off the hot path.
CREATE INDEX tasks_timed_out ON tasks (worker_id) WHERE state = 'timed_out';
