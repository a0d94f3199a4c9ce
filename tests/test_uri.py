"""redact_uri: every password of a tracking URI masked, nothing else changed; and the tracking package's own
texts (Run's repr, run_url) never show one."""

from __future__ import annotations

import pytest

from harness.tracking import Run, redact_uri, run_url


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql://harness:secret@host:5432/db", "postgresql://harness:***@host:5432/db"),
        ("postgresql+psycopg://harness:s3cr%40t@10.0.0.5/mlflow", "postgresql+psycopg://harness:***@10.0.0.5/mlflow"),
        ("mysql://root:pw@localhost:3306/mlflow", "mysql://root:***@localhost:3306/mlflow"),
        ("mysql+pymysql://root:pw@localhost/mlflow?charset=utf8", "mysql+pymysql://root:***@localhost/mlflow?charset=utf8"),
        ("http://ann:pw@127.0.0.1:5000", "http://ann:***@127.0.0.1:5000"),
        ("https://ann:pw@mlflow.example.org/", "https://ann:***@mlflow.example.org/"),
        # a password nobody percent-encoded, holding the characters that end a URI's user info
        ("postgresql://harness:p@ss/w?rd#1@db:5432/mlflow", "postgresql://harness:***@db:5432/mlflow"),
        ("postgresql://harness@db/mlflow?password=secret&sslmode=require",
         "postgresql://harness@db/mlflow?password=***&sslmode=require"),
        ("postgresql://db/mlflow?user=h&PASSWORD=secret", "postgresql://db/mlflow?user=h&PASSWORD=***"),
        ("postgresql://db/mlflow?sslmode=require&password=", "postgresql://db/mlflow?sslmode=require&password="),
        ("host=db user=harness password=secret dbname=mlflow", "host=db user=harness password=*** dbname=mlflow"),
        ("https://host/api?token=abc123", "https://host/api?token=***"),
    ],
)  # fmt: skip
def test_passwords_are_masked(uri, shown):
    assert redact_uri(uri) == shown
    assert "secret" not in redact_uri(uri) and ":pw@" not in redact_uri(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:////tmp/mlflow.db",
        "sqlite:////tmp/a@b:c/mlflow.db",  # an @ and a colon in a path, but no user info
        "sqlite:///:memory:",
        "postgresql://harness@db:5432/mlflow",  # a user, no password
        "postgresql://db/mlflow?sslmode=require",
        "http://127.0.0.1:5000",
        "file:///tmp/mlruns",
        "databricks",
    ],
)
def test_uris_without_a_password_are_unchanged(uri):
    assert redact_uri(uri) == uri


def test_run_repr_and_run_url_mask_the_password():
    uri = "http://ann:topsecret@127.0.0.1:5000"
    run = Run.__new__(Run)
    run.uri, run.run_id = uri, "abc"
    assert "topsecret" not in repr(run) and "ann:***@127.0.0.1:5000" in repr(run)
    assert run_url(uri, "1", "abc") == "http://ann:***@127.0.0.1:5000/#/experiments/1/runs/abc"
