"""The fault suite: zero loss through broker, network and gateway failures (issue 9)."""
