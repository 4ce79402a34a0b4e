"""The live pipeline: the Redis buffer between collectors and PostgreSQL, and the services around it."""
