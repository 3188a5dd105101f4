"""Parity with dlt-iceberg 0.6.4: the same pipeline code through ``dlt_iceberg.iceberg_rest``
(in a venv of its own) and through ``ingester.iceberg_rest``, compared table by table."""
