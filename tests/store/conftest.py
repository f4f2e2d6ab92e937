"""Every store test runs on SQLite (a temporary file) and on PostgreSQL (its own schema): the
``db_url``, ``open_store`` and ``store`` fixtures of tests/conftest.py."""
