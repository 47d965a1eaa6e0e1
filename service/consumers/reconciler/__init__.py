"""The reconciler (``python -m service reconciler``): recovers the outcome of tasks whose
callbacks never came by asking the provider's record-info endpoints."""
