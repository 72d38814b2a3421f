"""The sample DBOS-style app whose schema lives in ../migrations."""
