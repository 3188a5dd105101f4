"""Interoperability matrix: does a table read the same in independent Iceberg readers?"""
