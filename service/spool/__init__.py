"""The gateway's local write-ahead spool: records the broker could not take in time.

``framing`` (pure: record frames and checksums), ``store`` (segment files, group
commit, reading and acknowledging), ``forwarder`` (drains to Kafka in order),
``metrics`` (Prometheus collector), ``cli`` (``python -m service spool ...``).
"""
