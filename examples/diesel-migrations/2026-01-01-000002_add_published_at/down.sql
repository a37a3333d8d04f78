ALTER TABLE dlock_example_diesel_post DROP COLUMN published_at;
