"""Post-deploy verification (``make verify``, ``make preflight``), one room per job:

- ``checks``: the result rows, the target, running the checks, the table and the JSON report;
- ``http``: the service's own endpoints and a write/read/delete round trip;
- ``aws``: the deployed stacks, ECS, targets, the database, rotation, alarms;
- ``preflight``: what a first deploy into an account needs;
- ``cli``: the command line, and ``verify`` (the checks, re-run while a deploy settles).

``scripts/verify_deployment.py`` is the command; everything it offered is importable from it.
"""
