"""Time-driven work (APScheduler). Every job is a plain function a test can call."""
