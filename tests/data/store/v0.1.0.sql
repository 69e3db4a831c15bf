-- SQLite database written by llm-endpoints 0.1.0 (commit a128025, automation/store.py)
-- with Store.request_create/claim/finish/request_operation: the migration test
-- loads it and upgrades it in place. Regenerate only from that commit.
BEGIN TRANSACTION;
CREATE TABLE endpoints (
	name VARCHAR(40) NOT NULL, 
	owner VARCHAR(128) NOT NULL, 
	spec TEXT NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	url VARCHAR(512), 
	model VARCHAR(200), 
	instance_type VARCHAR(64), 
	cost_per_hour FLOAT, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	expires_at DATETIME, 
	last_operation_id VARCHAR(36), 
	lock_op_id VARCHAR(36), 
	error TEXT, 
	generation INTEGER NOT NULL, 
	PRIMARY KEY (name)
);
INSERT INTO "endpoints" VALUES('alpha','alice','{"cluster": {"mode": "existing", "render_dir": "/tmp/r/alpha"}, "model": "llama3-8b", "name": "alpha", "pool": {"mode": "none"}, "ttl": "8h"}','ready','http://alpha.alpha.svc.cluster.local:8000/v1','NousResearch/Meta-Llama-3-8B-Instruct','g6.xlarge',0.805,'2026-12-01 21:40:19.087672','2026-12-01 21:40:19.087672','2026-12-02 05:40:19.087672','4a6cbd6c-1e11-4be8-9aeb-25983b936fed',NULL,NULL,1);
INSERT INTO "endpoints" VALUES('beta','bob','{"cluster": {"mode": "existing", "render_dir": "/tmp/r/beta"}, "model": "deepseek-r1-llama-8b", "name": "beta", "pool": {"mode": "none"}, "ttl": "1h"}','destroying',NULL,'deepseek-r1-llama-8b',NULL,NULL,'2026-12-01 21:40:19.087672','2026-12-01 21:40:19.087672','2026-12-01 22:40:19.087672','2223c8c6-f175-47ee-bf27-b1e1a752276d',NULL,'boom',1);
CREATE TABLE operation_log (
	id INTEGER NOT NULL, 
	op_id VARCHAR(36) NOT NULL, 
	ts DATETIME NOT NULL, 
	line TEXT NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "operation_log" VALUES(1,'4a6cbd6c-1e11-4be8-9aeb-25983b936fed','2026-12-01 21:40:19.087672','line one');
INSERT INTO "operation_log" VALUES(2,'4a6cbd6c-1e11-4be8-9aeb-25983b936fed','2026-12-01 21:40:19.087672','line two');
CREATE TABLE operations (
	seq INTEGER NOT NULL, 
	id VARCHAR(36) NOT NULL, 
	endpoint VARCHAR(40) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	requested_by VARCHAR(128) NOT NULL, 
	idempotency_key VARCHAR(200), 
	request_hash VARCHAR(64), 
	created_at DATETIME NOT NULL, 
	claimed_at DATETIME, 
	started_at DATETIME, 
	finished_at DATETIME, 
	host VARCHAR(255), 
	boot_id VARCHAR(64), 
	pid INTEGER, 
	pid_start INTEGER, 
	worker BOOLEAN NOT NULL, 
	cancel_reason VARCHAR(16), 
	cancel_requested_at DATETIME, 
	error TEXT, 
	log_lines INTEGER NOT NULL, 
	log_bytes INTEGER NOT NULL, 
	log_truncated BOOLEAN NOT NULL, 
	PRIMARY KEY (seq), 
	CONSTRAINT uq_operation_idempotency UNIQUE (requested_by, idempotency_key), 
	UNIQUE (id)
);
INSERT INTO "operations" VALUES(1,'4a6cbd6c-1e11-4be8-9aeb-25983b936fed','alpha','up','succeeded','alice','k1','h1','2026-12-01 21:40:19.087672','2026-12-01 21:40:19.087672','2026-12-01 21:40:19.087672','2026-12-01 21:40:19.087672','h','b',1,1,1,NULL,NULL,NULL,2,16,0);
INSERT INTO "operations" VALUES(2,'876774c6-2efd-4240-b2fd-16d34f4b5da8','beta','up','failed','bob',NULL,NULL,'2026-12-01 21:40:19.087672','2026-12-01 21:40:19.087672',NULL,'2026-12-01 21:40:19.087672','h','b',1,1,0,NULL,NULL,'boom',0,0,0);
INSERT INTO "operations" VALUES(3,'2223c8c6-f175-47ee-bf27-b1e1a752276d','beta','destroy','queued','bob',NULL,NULL,'2026-12-01 21:40:19.087672',NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,NULL,NULL,NULL,0,0,0);
CREATE INDEX ix_endpoints_expires_at ON endpoints (expires_at);
CREATE INDEX ix_endpoints_owner ON endpoints (owner);
CREATE INDEX ix_endpoints_status ON endpoints (status);
CREATE INDEX ix_operations_endpoint ON operations (endpoint);
CREATE INDEX ix_operations_endpoint_status_seq ON operations (endpoint, status, seq);
CREATE INDEX ix_operations_status ON operations (status);
CREATE INDEX ix_operation_log_op_id ON operation_log (op_id);
COMMIT;
