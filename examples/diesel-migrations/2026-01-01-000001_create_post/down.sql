DROP TABLE dlock_example_diesel_post;
