"""Delivery of what a task produced: output files to object storage, webhooks, warm-up."""
