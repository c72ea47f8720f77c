"""A session's lifecycle: rename, tags, archive, delete."""
