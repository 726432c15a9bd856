"""Import and export of whole conversations (``scripts/conversations_io.py``), one room per job:

- ``records``: a bad record with where it came from, the report, the checks on each value;
- ``sources``: the formats read, each streamed (the service's JSON, SQLite, DynamoDB);
- ``run``: the import in batches with progress, the export, the store they go through;
- ``cli``: the command line.
"""
