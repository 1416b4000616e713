-- A unit has a few tasks, so looking them up needs only the unit; with the worker in the key,
-- every lease (which sets the worker) moved its task's entry in this index too (issue 8).
DROP INDEX tasks_by_unit;
CREATE INDEX tasks_by_unit ON tasks (unit_id);
