"""Fixtures shared with the e2e tests: the real local hash teacher and a tiny digits set."""

from tests.e2e.conftest import TOKEN, LocalTeacher, digits_data, hash_teacher

__all__ = ["TOKEN", "LocalTeacher", "digits_data", "hash_teacher"]
