-- One index of leased tasks instead of three (issue 8). Every task enters and leaves the
-- leased set once, and each partial index made that two more b-tree changes in the writer's
-- serial path. The lease's count of a worker's tasks needs the worker first; the timeout pass
-- (once a second) scans the in-flight tasks' deadlines from this index alone; the few reads by
-- job (job lists, the dashboard's unit map) scan the in-flight tasks, as many table lookups as
-- the by-job index gave them for one large job.
DROP INDEX tasks_leased_deadline;
DROP INDEX tasks_leased_by_job;
DROP INDEX tasks_leased_by_worker;
CREATE INDEX tasks_leased ON tasks (worker_id, deadline) WHERE state = 'leased';
