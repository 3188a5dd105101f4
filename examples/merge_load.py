"""Merge load: two CSV files with overlapping ``customer_id`` keys, upserted.

The second file updates customers 2 and 3 and adds 6 and 7. The table is rewritten
copy-on-write (no delete files), so pyiceberg, DuckDB and every other reader see the result.
Same switch as ``incremental_load.py``: only the import line differs from dlt-iceberg; with
nothing set it runs on the embedded catalog under ``INGESTER_HOME``.

    python examples/merge_load.py
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
    """Rows of a CSV file as dicts, the key converted to int."""
    with open(file_path, newline="") as f:
        for row in csv.DictReader(f):
            row["customer_id"] = int(row["customer_id"])
            yield row


def show(pipeline, title):
    rows = sorted(pipeline.dataset().customers.arrow().to_pylist(), key=lambda r: r["customer_id"])
    print(f"\n{title}: {len(rows)} customers")
    for r in rows:
        print(f"  {r['customer_id']:>3}  {r['name']:<12} {r['email']:<24} {r['status']}")


def main():
    pipeline = dlt.pipeline(
        pipeline_name="merge_example",
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

    print("Loading initial customers...")

    @dlt.resource(name="customers", write_disposition="merge", primary_key="customer_id")
    def initial_customers():
        yield from load_csv(DATA / "customers_initial.csv")

    load_info = pipeline.run(initial_customers())
    print(f"Initial load complete: {load_info}")
    show(pipeline, "After initial load")

    print("\nLoading customer updates: 2 and 3 change, 6 and 7 are new...")

    @dlt.resource(name="customers", write_disposition="merge", primary_key="customer_id")
    def updated_customers():
        yield from load_csv(DATA / "customers_updates.csv")

    load_info = pipeline.run(updated_customers())
    print(f"Updates loaded: {load_info}")
    show(pipeline, "After merge")

    table = pipeline.destination_client().load_table("customers")
    print(f"Snapshots: {len(table.metadata.snapshots)} (one per load)")
    print("\nMerge complete!")


if __name__ == "__main__":
    main()
