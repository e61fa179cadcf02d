"""Tests of the `storage` package: real files in `tmp_path`, no mocks."""
