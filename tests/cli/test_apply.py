"""deployctl apply and export: agents kept as files, created, updated or left unchanged by name."""

from __future__ import annotations

import json
from pathlib import Path

from flask import Flask

from tests.cli.conftest import Cli
from tests.factories import UserRef, make_secret

SPEC = """
name: summarizer
description: Summarizes text
image: deploy-test/http-agent:${TAG}
port: 8080
env:
  MODE: ${MODE}
  LITERAL: $${NOT_FILLED}
resources:
  memory_mb: 128
health_check:
  path: /health
"""


def _apply(cli: Cli, path: Path, *args: str, **env: str) -> dict[str, dict[str, object]]:
    body = cli.json("apply", "-f", str(path), *args, **env)
    return {row["name"]: row for row in body["agents"]}


def test_apply_creates_then_leaves_unchanged_then_updates_only_what_changed(logged_in: Cli, tmp_path: Path) -> None:
    path = tmp_path / "summarizer.yaml"
    path.write_text(SPEC)
    first = logged_in.ok("apply", "-f", str(path), "--set", "TAG=latest", "-o", "json", MODE="fast")
    created = json.loads(first.stdout)["agents"][0]
    assert created["action"] == "created" and created["id"]
    assert "summarizer: created" in first.stderr
    agent = logged_in.json("agents", "get", "summarizer")
    assert agent["image"] == "deploy-test/http-agent:latest"
    assert agent["env"] == {"MODE": "fast", "LITERAL": "${NOT_FILLED}"}
    assert agent["resources"]["memory_mb"] == 128 and agent["health_check"]["path"] == "/health"

    again = _apply(logged_in, path, "--set", "TAG=latest", MODE="fast")["summarizer"]
    assert again["action"] == "unchanged" and again["changed"] == [] and again["id"] == created["id"]

    result = logged_in.ok("apply", "-f", str(path), "--set", "TAG=v2", "--set", "MODE=slow", "-o", "table")
    assert "summarizer: updated: env, image" in result.stderr
    assert "updated" in result.stdout and "env, image" in result.stdout
    agent = logged_in.json("agents", "get", created["id"])
    assert agent["image"] == "deploy-test/http-agent:v2" and agent["env"]["MODE"] == "slow"
    assert agent["updated_at"] > agent["created_at"]


def test_dry_run_says_what_would_change_and_changes_nothing(logged_in: Cli, tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(SPEC)
    env = {"TAG": "latest", "MODE": "fast"}
    assert _apply(logged_in, path, "--dry-run", **env)["summarizer"]["action"] == "created"
    assert logged_in.json("agents", "ls")["total"] == 0
    _apply(logged_in, path, **env)
    planned = _apply(logged_in, path, "--dry-run", "--set", "TAG=v3", MODE="fast")["summarizer"]
    assert planned["action"] == "updated" and planned["changed"] == ["image"]
    assert logged_in.json("agents", "get", "summarizer")["image"].endswith(":latest")


def test_a_folder_of_yaml_and_json_files_with_several_documents(logged_in: Cli, tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("name: one\nimage: x/y:1\n---\nname: two\nimage: x/y:2\n")
    (tmp_path / "three.json").write_text(json.dumps([{"name": "three", "image": "x/z:1", "port": 9000}]))
    (tmp_path / "notes.txt").write_text("not a spec")
    rows = _apply(logged_in, tmp_path)
    assert {name: row["action"] for name, row in rows.items()} == dict.fromkeys(("one", "two", "three"), "created")
    names = sorted(a["name"] for a in logged_in.json("agents", "ls")["items"])
    assert names == ["one", "three", "two"]
    assert logged_in.json("agents", "get", "three")["port"] == 9000


def test_switching_from_image_to_source_clears_the_image(logged_in: Cli, tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("name: switch\nimage: deploy-test/http-agent:latest\n")
    _apply(logged_in, path)
    path.write_text("name: switch\nsource:\n  git_url: https://github.com/acme/agent.git\n  branch: main\n")
    row = _apply(logged_in, path)["switch"]
    assert row["action"] == "updated" and row["changed"] == ["image", "source"]
    agent = logged_in.json("agents", "get", "switch")
    assert agent["image"] is None and agent["source"]["git_url"] == "https://github.com/acme/agent.git"
    assert _apply(logged_in, path)["switch"]["action"] == "unchanged"  # the service's defaults are not a change


def test_spec_errors_are_exit_1_with_the_reason_and_write_nothing(logged_in: Cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nimage: deploy-test/http-agent:latest\nport: 0\n")
    result = logged_in("apply", "-f", str(path))
    assert result.exit_code == 1 and "validation_error" in result.stderr and "port" in result.stderr
    assert logged_in.json("agents", "ls")["total"] == 0
    path.write_text(SPEC)
    missing = logged_in("apply", "-f", str(path))
    assert missing.exit_code == 1 and "no value for ${TAG}" in missing.stderr
    path.write_text("name: [unclosed\n")
    assert "not valid YAML" in logged_in("apply", "-f", str(path)).stderr
    path.write_text("- image: x/y:1\n")
    assert "string `name`" in logged_in("apply", "-f", str(path)).stderr
    (tmp_path / "twice.yaml").write_text("name: same\nimage: x/y:1\n---\nname: same\nimage: x/y:2\n")
    assert "specified twice" in logged_in("apply", "-f", str(tmp_path / "twice.yaml")).stderr
    assert "No such file" in logged_in("apply", "-f", str(tmp_path / "nope.yaml")).stderr
    assert logged_in.json("agents", "ls")["total"] == 0


def test_export_gives_the_spec_apply_takes_without_ids_and_with_secret_names(
    logged_in: Cli, tmp_path: Path, app: Flask, user: UserRef
) -> None:
    make_secret(app, user, name="openai-key", value="sk-very-secret")
    path = tmp_path / "a.yaml"
    path.write_text("name: exported\nimage: deploy-test/http-agent:latest\nsecrets:\n  OPENAI_KEY: openai-key\n")
    _apply(logged_in, path)
    text = logged_in.ok("export", "exported").stdout
    assert "id:" not in text and "status:" not in text and "created_at" not in text
    assert "openai-key" in text and "sk-very-secret" not in text
    spec = logged_in.json("export", "exported")
    assert spec["name"] == "exported" and spec["secrets"] == {"OPENAI_KEY": "openai-key"}
    exported = tmp_path / "exported.yaml"
    exported.write_text(text)
    assert _apply(logged_in, exported)["exported"]["action"] == "unchanged"
    assert logged_in("export", "no-such-agent").exit_code == 1


def test_agents_ls_get_and_rm(logged_in: Cli, tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("name: gone-soon\nimage: deploy-test/http-agent:latest\n")
    agent_id = _apply(logged_in, path)["gone-soon"]["id"]
    table = logged_in.ok("agents", "ls", "-o", "table").stdout
    assert "gone-soon" in table and "idle" in table
    assert "gone-soon" in logged_in.ok("agents", "get", "gone-soon", "-o", "yaml").stdout
    refused = logged_in("agents", "rm", "gone-soon", input="n\n")
    assert refused.exit_code == 1 and logged_in.json("agents", "get", str(agent_id))["name"] == "gone-soon"
    assert "deleted" in logged_in.ok("agents", "rm", "gone-soon", "--yes").stderr
    assert logged_in("agents", "get", "gone-soon").exit_code == 1
