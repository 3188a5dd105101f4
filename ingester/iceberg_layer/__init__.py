"""Our layer under pyiceberg: the ONLY package of ingester that may use pyiceberg's private names.

Modules: ``filestream`` (streaming data-file writer), ``datafiles`` (arrow chunks and parquet
files -> ``DataFile``s of a producer), ``footers`` (parquet footers with the table's field ids,
over ``thrift_compact``), ``joined`` (several parquet files' row groups under one footer),
``producers`` (merge-on-read, compaction, delete manifests),
``deletes`` (position delete files), ``schemas`` (arrow -> Iceberg schemas), ``dictionaries``
(arrow dictionaries through a rewrite), ``markers`` (idempotency markers in snapshot
summaries, shared by commit and maintenance), ``ledger`` (the dedupe ledger table beside each
data table), ``transactions`` (a transaction whose metadata view is built once per change),
``multi_commit`` (one atomic commit of several tables' transactions; its REST request in
``rest_commit``), ``fileio`` (the FileIO
whose small S3 writes are one request), ``sql_catalog`` (the SQL
catalog's commit without reloading or deep-copying the table's history).

Private pyiceberg names used, and why. They force the pin ``pyiceberg>=0.12.0,<0.13`` in
pyproject.toml: each is re-checked by the test suite on an upgrade.

- ``pyiceberg.io.pyarrow._dataframe_to_data_files`` (datafiles): encode an arrow chunk into
  data files of a partitioned table inside OUR producer (public ``append`` makes its own snapshot).
- ``pyiceberg.table.update.snapshot._SnapshotProducer`` (datafiles): the producer type.
- ``pyiceberg.table.update.snapshot._FastAppendFiles`` (producers): base of ``MergeOnReadFiles``;
  its ``_manifests``, ``_added_data_files``, ``_transaction``, ``_snapshot_id``, ``_compression``
  (the same four of ``_OverwriteFiles`` for ``DeleteRewriteFiles``: delete manifests of added
  position deletes, ``_with_delete_manifests``).
- ``pyiceberg.table.update.snapshot._OverwriteFiles`` (producers): base of ``CompactionFiles``;
  overrides ``_refresh_for_retry``, ``_validate_concurrency``, ``_summary``, ``_deleted_entries``,
  ``_existing_manifests``; reads ``_commit_window``, ``_deleted_data_files``, ``_parent_snapshot_id``.
- ``pyiceberg.table.update.validate._validate_data_files_exist``,
  ``_validate_no_new_deletes_for_data_files`` (producers): compaction's conflict checks.
- ``pyiceberg.manifest.ManifestWriterV2._meta`` (producers): a manifest of delete files.
- ``DataFile.from_args(_table_format_version=2)`` and ``DataFile._spec_id`` (deletes): position
  delete files, with the spec of the data file they apply to.
- ``pyiceberg.io.pyarrow._to_requested_schema`` (filestream): field ids onto arrow batches.
- ``ParquetFormatWriter._parquet_writer_kwargs`` (filestream): choose the dictionary columns,
  drop the stored arrow schema.
- ``pyiceberg.io.pyarrow._ConvertToIcebergWithoutIDs`` (schemas): arrow -> Iceberg types the
  way ``add_files`` converts them.
- ``DataFile._data`` (datafiles): the record position of ``sort_order_id`` (found once from a
  ``DataFile.from_args``), to set it on the files pyiceberg's writer makes (it writes None).
- ``Transaction._table``, ``Transaction._updates`` (transactions): the base metadata and the
  staged updates its ``table_metadata`` view is built from, to build it once per change.
- ``Transaction._table``, ``_updates``, ``_requirements``, ``_snapshot_producers`` and
  ``_SnapshotProducer._clean_all_uncommitted`` (multi_commit): what a transaction stages, sent
  in one multi-table commit; the manifests of a commit that did not land removed.
- ``Table._do_commit`` (multi_commit): one table's staged change committed without pyiceberg's
  retry loop (which rebuilds the snapshot without our markers).
- ``RestCatalog._session``, ``_supported_endpoints``, ``pyiceberg.catalog.rest._RETRY_ARGS``,
  ``pyiceberg.catalog.rest.response._handle_non_200_response`` (rest_commit): ``POST
  /v1/{prefix}/transactions/commit`` on the catalog's authenticated session, its errors mapped
  as ``commit_table`` maps them.
- ``Catalog._write_metadata``, ``Catalog._delete_old_metadata`` (multi_commit): the new metadata
  files of a SQL multi-table commit, written before its one database transaction; old ones
  dropped as ``_do_commit`` does.
- ``pyiceberg.table.update._apply_table_update``, ``_TableMetadataUpdateContext``,
  ``_update_table_metadata_log`` (sql_catalog): ``update_table_metadata`` without its deep copy
  of the whole history (the view of ``transactions``, the SQL commit's new metadata).
- ``PyArrowFileIO._initialize_s3_fs`` (fileio): pyiceberg's S3 filesystem, rebuilt from the
  options pyarrow's ``S3FileSystem.__reduce__`` returns with ``allow_delayed_open``.
- ``MetastoreCatalog._parse_metadata_version``, ``_load_file_io`` (sql_catalog): the next
  metadata file's name and its FileIO, as ``_update_and_stage_table`` makes them.

One private pyarrow name (``pyarrow>=18``), with a public fallback when it is gone:
``pyarrow._parquet._reconstruct_filemetadata`` (footers): a footer's thrift bytes parsed the way
unpickling a ``FileMetaData`` does, twice as fast as ``read_metadata``; only for bytes that
``read_metadata`` parsed already (it aborts the process on others: ``Footer.metadata_again``).
"""
