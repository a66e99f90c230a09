"""The job service: an HTTP job API on Ray Serve over a durable SQLite queue, its CLI client and web page.

``store.py`` (jobs in SQLite), ``queue.py`` (which job starts next), ``runner.py`` (jobs into the
engine), ``app.py`` (the FastAPI app), ``deploy.py`` (Ray Serve and ``videogen serve``),
``client.py`` and ``cli.py`` (the job commands), ``web/index.html`` (the page).
"""
