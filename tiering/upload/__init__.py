"""Offloading segments: one segment's upload, the pass that schedules them, retries."""
