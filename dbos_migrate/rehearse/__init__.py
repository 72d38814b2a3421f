"""The breaking-change rehearsal behind `plan --rehearse` and `up --fail-on-breaking`.

A deploy runs its migrations while workflows of the previous app version still run, so a
change the new code is fine with can still break the old code. A rehearsal runs the
migrations on a scratch copy of the schema and classifies what changed (docs/rehearsal.md):

- rules     the rule table (ids, severities, hints)
- catalog   snapshot queries
- diff/     the pure differ, by object kind
- copy      pg_dump and catalog copy, migration version tables
- scratch   naming, marking, dropping scratch databases, leftovers
- session   one rehearsal from start to drop
- verbs     plan and gated_up
"""
