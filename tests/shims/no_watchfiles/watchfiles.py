# On PYTHONPATH, this makes `import watchfiles` fail as on a machine without it (--reload polls).
raise ImportError("watchfiles is hidden by tests/shims/no_watchfiles")
