"""The HTTP API (Litestar). It never imports torch: it enqueues work by task name and reads
results from the store. Build it with :func:`service.app.create_app`."""
