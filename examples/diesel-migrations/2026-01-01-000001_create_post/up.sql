CREATE TABLE dlock_example_diesel_post (id BIGINT PRIMARY KEY, title TEXT NOT NULL);
