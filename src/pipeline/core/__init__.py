"""The functional core: what a run wants and what it derives. Pure: pydantic and the standard library;
no torch, no files (import-linter checks it)."""
