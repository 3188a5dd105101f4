"""Incremental load: two CSV batches appended to one Iceberg table, one snapshot per load.

A dlt-iceberg user switches by changing the import line only: the ``iceberg_rest(...)``
call below takes the same parameters. With nothing set it runs on the embedded catalog
(SQLite + local warehouse under ``INGESTER_HOME``, default ``./.ingester``), so
``ingester tables`` lists the result. To load into a REST catalog set ``CATALOG_URI``
(and ``CATALOG_WAREHOUSE``, ``CATALOG_CREDENTIAL``, ``S3_ENDPOINT``, ``S3_ACCESS_KEY_ID``,
``S3_SECRET_ACCESS_KEY``, ``S3_REGION`` as your catalog needs).

    python examples/incremental_load.py
"""

import csv
import os
from pathlib import Path

import dlt

from ingester import iceberg_rest

DATA = Path(__file__).parent / "data"
HOME = Path(os.environ.get("INGESTER_HOME", ".ingester")).resolve()
CATALOG_URI = os.environ.get("CATALOG_URI", f"sqlite:///{HOME / 'catalog.db'}")
NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE", "examples")


def load_csv(file_path):
    """Rows of a CSV file as dicts, numeric fields converted."""
    with open(file_path, newline="") as f:
        for row in csv.DictReader(f):
            row["event_id"] = int(row["event_id"])
            row["user_id"] = int(row["user_id"])
            row["value"] = int(row["value"])
            yield row


def main():
    pipeline = dlt.pipeline(
        pipeline_name="incremental_example",
        destination=iceberg_rest(
            catalog_uri=CATALOG_URI,
            namespace=NAMESPACE,
            warehouse=os.environ.get("CATALOG_WAREHOUSE"),
            credential=os.environ.get("CATALOG_CREDENTIAL"),
            s3_endpoint=os.environ.get("S3_ENDPOINT"),
            s3_access_key_id=os.environ.get("S3_ACCESS_KEY_ID"),
            s3_secret_access_key=os.environ.get("S3_SECRET_ACCESS_KEY"),
            s3_region=os.environ.get("S3_REGION"),
        ),
        dataset_name="example_data",
    )

    print("Loading batch 1...")

    @dlt.resource(name="events", write_disposition="append")
    def batch1():
        yield from load_csv(DATA / "events_batch1.csv")

    load_info = pipeline.run(batch1())
    print(f"Batch 1 loaded: {load_info}")

    print("\nLoading batch 2...")

    @dlt.resource(name="events", write_disposition="append")
    def batch2():
        yield from load_csv(DATA / "events_batch2.csv")

    load_info = pipeline.run(batch2())
    print(f"Batch 2 loaded: {load_info}")

    # read back through the dataset (DuckDB over the Iceberg table)
    events_table = pipeline.dataset().events.arrow()
    print(f"\nTotal rows in table: {events_table.num_rows}")
    print(f"Event IDs: {sorted(events_table['event_id'].to_pylist())}")

    # and the table's history, straight from the catalog: one snapshot per load
    table = pipeline.destination_client().load_table("events")
    print(f"Snapshots: {len(table.metadata.snapshots)} (one per load)")
    print("\nIncremental load complete!")


if __name__ == "__main__":
    main()
