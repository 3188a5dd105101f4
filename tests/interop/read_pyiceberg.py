"""Read a table with pyiceberg (its own venv): `python read_pyiceberg.py request.json`."""

from __future__ import annotations

from protocol import Read, Request, serve

PREDICATES = {
    "==": "EqualTo",
    "!=": "NotEqualTo",
    "<": "LessThan",
    "<=": "LessThanOrEqual",
    ">": "GreaterThan",
    ">=": "GreaterThanOrEqual",
}


def read(request: Request) -> Read:
    """Scan the table from its metadata file; filter through pyiceberg's row_filter."""
    from pyiceberg import expressions
    from pyiceberg.table import StaticTable

    props = request.s3.pyiceberg_properties() if request.s3 else {}
    table = StaticTable.from_metadata(request.metadata_location, properties=props)
    types = {f.name: str(f.field_type) for f in table.schema().fields}
    result = Read(table.scan().to_arrow(), types, table.scan().count())
    if request.filter:
        f = request.filter
        predicate = getattr(expressions, PREDICATES[f.op])
        scan = table.scan(row_filter=predicate(f.column, f.value))
        result.filtered, result.filtered_count = scan.to_arrow(), scan.count()
    return result


if __name__ == "__main__":
    serve("pyiceberg", ("pyiceberg", "pyarrow"), read)
