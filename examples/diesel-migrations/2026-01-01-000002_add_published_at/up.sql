ALTER TABLE dlock_example_diesel_post ADD COLUMN published_at BIGINT;
