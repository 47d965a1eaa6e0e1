"""Every test helper lives here (test modules import from here, never from each other).

* real services: ``kafka_broker``, ``s3proxy``, ``tcp_proxy``, their fixtures
  ``kafka_fixtures``, ``s3_fixtures`` (pytest plugins, registered in tests/conftest.py);
* test data: ``factories`` (events, tracks, files, reports, records with the service's
  CloudEvents envelope), ``metrics_stream`` (the metrics consumer's scripted stream),
  ``examples`` and ``paths`` (the committed examples, the repository);
* running and talking to the services: ``environments``, ``processes``, ``kafka_records``,
  ``polling``, ``loopback`` (ports, the network jail, canaries), ``media_server``,
  ``fakes`` (clock, resolver), ``load_generator`` and ``fault_report`` (the fault suite),
  ``deployment`` (rendered manifests, tools).
"""
