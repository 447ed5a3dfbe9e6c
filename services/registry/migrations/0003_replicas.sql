-- Placeholder on branch i7-gates only: migration 0003 belongs to the gateway
-- replicas work of issue 7 (another branch). Migration numbers must run 1..n
-- without gaps, so this empty file lets 0004_gates.sql apply here; when the
-- branches merge, the replicas branch's 0003 replaces it.
SELECT 1;
