"""Test helpers that run real processes: Redis, uvicorn servers, headless Chromium."""
